"""Provenance: git blob shas computed without git equal git's, a preregistration must be
committed unchanged in a clean checkout, another package stack is named in one line, and a
study stamps every episode with the commit and the preregistration's blob sha and refuses to
resume on another package stack."""
import json
import shutil
import subprocess

import pytest

from pam_jax import provenance
from pam_jax.workflows import study

git = shutil.which("git")
needs_git = pytest.mark.skipif(git is None, reason="git is not installed")


def _git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "repo"
    (r / "docs").mkdir(parents=True)
    _git(r, "init", "-q")
    _git(r, "config", "user.email", "t@example.org")
    _git(r, "config", "user.name", "t")
    (r / "docs" / "preregistration.md").write_text("# Protocol\n\nprimary outcome: DeformPAM - SL\n")
    (r / "code.py").write_text("x = 1\n")
    _git(r, "add", ".")
    _git(r, "commit", "-qm", "protocol")
    return r


@needs_git
def test_blob_sha_equals_git_hash_object(tmp_path):
    for data in (b"", b"abc\n", bytes(range(256)) * 40):
        f = tmp_path / "f"
        f.write_bytes(data)
        assert provenance.blob_sha(f) == _git(tmp_path, "hash-object", str(f))


def test_another_package_stack_is_named_in_one_line():
    a = {"python": "3.11.9", "lock_sha256": "a" * 64, "packages": {"jax": "0.10.2", "flax": "0.12.8"}}
    provenance.check_stack(a, json.loads(json.dumps(a)), "run folder r")
    b = {**a, "lock_sha256": "b" * 64, "packages": {"jax": "0.11.2", "flax": "0.12.8"}}
    with pytest.raises(ValueError, match=r"another package stack \(uv.lock sha256 aaaaaaaaaaaa -> bbbbbbbbbbbb; "
                                         r"jax 0.10.2 -> 0.11.2\)") as e:
        provenance.check_stack(a, b, "run folder r")
    assert "\n" not in str(e.value)
    cur = provenance.package_stack()
    assert cur["packages"]["jax"] and cur["python"].count(".") == 2


@needs_git
def test_preregistration_must_be_committed_unchanged_in_a_clean_checkout(repo):
    f = repo / "docs" / "preregistration.md"
    got = provenance.preregistration(f, repo=repo)
    assert got == {"path": "docs/preregistration.md", "blob": _git(repo, "rev-parse", "HEAD:docs/preregistration.md")}
    (repo / "code.py").write_text("x = 2\n")                      # a tracked file changed
    with pytest.raises(ValueError, match="clean checkout"):
        provenance.preregistration(f, repo=repo)
    _git(repo, "checkout", "-q", "code.py")
    # a study's own results folder, committed and then rewritten, does not count as a change
    (repo / "results").mkdir()
    (repo / "results" / "study.md").write_text("partial\n")
    _git(repo, "add", "results")
    _git(repo, "commit", "-qm", "partial results")
    (repo / "results" / "study.md").write_text("more\n")
    assert provenance.preregistration(f, repo=repo, ignore=[repo / "results"])["blob"] == got["blob"]
    with pytest.raises(ValueError, match="clean checkout"):
        provenance.preregistration(f, repo=repo)
    f.write_text(f.read_text() + "changed after the commit\n")
    with pytest.raises(ValueError, match="not committed as it is now"):
        provenance.preregistration(f, repo=repo)
    with pytest.raises(ValueError, match="no such file"):
        provenance.preregistration(repo / "docs" / "missing.md", repo=repo)


def _fake_closed_loop(monkeypatch):
    class FakeAgent:
        def __init__(self, method, runs, **kw):
            self.method = method

    def fake_episodes(tasks, agent, seeds, *, max_steps=None):
        return [{"seed": s, "scores": [0.1, 0.2], "final": 0.2, "success": False, "steps_to_success": None,
                 "metrics": {}, "frames": []} for s in seeds]

    monkeypatch.setattr(study.closed_loop, "Agent", FakeAgent)
    monkeypatch.setattr(study.closed_loop, "run_episodes", fake_episodes)
    monkeypatch.setattr(study, "make_task", lambda name: None)


@needs_git
def test_every_episode_names_the_commit_and_the_preregistration(repo, tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "REPO", repo)
    _fake_closed_loop(monkeypatch)
    prereg = repo / "docs" / "preregistration.md"
    s = study.Settings.from_scale("rope", tmp_path / "run", "small", report_seed=3000, report_episodes=2,
                                  tune_episodes=1, train_seeds=1, preregistration=str(prereg))
    st = study.Study(s, progress=False, log=lambda *_: None)
    st.check_provenance()
    st.evaluate(["sl"], [], st.start_sets())
    eps = sorted((tmp_path / "run" / "eval").rglob("*.json"))
    assert len(eps) == 3
    want = {"commit": _git(repo, "rev-parse", "HEAD"), "dirty": False,
            "preregistration": _git(repo, "hash-object", str(prereg)), "machine": provenance.machine()}
    assert all(json.loads(p.read_text())["origin"] == want for p in eps)
    st.stage("probe", {"a": 1}, lambda: {"x": 1})          # a stage record names both too
    rec = json.loads((tmp_path / "run" / "stages" / "probe.json").read_text())
    assert {k: rec[k] for k in want} == want
    assert "--preregistration" in st.command()
    # the same run folder under another protocol is refused
    prereg.write_text("# Another protocol\n")
    _git(repo, "commit", "-qam", "another")
    again = study.Study(s, progress=False, log=lambda *_: None)
    with pytest.raises(ValueError, match="started under preregistration blob"):
        again.check_provenance()


def test_a_resume_on_another_package_stack_is_refused(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    stack = provenance.package_stack()
    other = {**stack, "packages": {**stack["packages"], "flax": "0.0.1"}}
    (root / "provenance.json").write_text(json.dumps({"stack": other, "preregistration": None}))
    with pytest.raises(ValueError, match=r"another package stack \(flax 0.0.1 -> ") as e:
        study.run("rope", root=root, progress=False, log=lambda *_: None)
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in root.iterdir()) == ["provenance.json"]      # nothing else was started


def test_the_tables_name_the_commits_of_the_records_not_of_the_call(tmp_path):
    # a later call that only rebuilds a finished study's tables must write the same files (a
    # pre-registered run of the next study refuses a checkout whose tracked results changed)
    s = study.Settings.from_scale("rope", tmp_path / "run", "small", train_seeds=1)
    st = study.Study(s, progress=False, log=lambda *_: None)
    st.origin = {"commit": "c" * 40, "dirty": False, "preregistration": "blob"}     # this call's
    stages = tmp_path / "run" / "stages"
    stages.mkdir(parents=True)
    (stages / "sl_s0.json").write_text(json.dumps({"params": {}, "commit": "a" * 40, "dirty": False}))
    (stages / "dpo_s0.json").write_text(json.dumps({"params": {}, "commit": "b" * 40, "dirty": True}))
    ep = {"seed": 1, "scores": [0.1, 0.2], "final": 0.2, "success": False, "steps_to_success": None,
          "metrics": {}, "origin": {"commit": "b" * 40, "dirty": False, "preregistration": "blob"}}
    results = {"report": {"methods": {"sl": {"episodes": [ep]}, "deformpam": {"episodes": [dict(ep, final=0.3)]}}}}
    origin = st.recorded_origin(results)
    assert origin == {"commits": ["a" * 40, "b" * 40], "dirty": True, "preregistration": "blob"}
    st.origin = {"commit": "c" * 40, "dirty": False, "preregistration": None}       # --report-only names none
    assert st.recorded_origin(results)["preregistration"] == "blob"
    out = {"primary": {"deformpam - sl": None}, "secondary": {}}
    heading = st.outcome_lines(out, origin)[0]
    assert f"commits {'a' * 40}, {'b' * 40})" in heading and "c" * 40 not in heading
    one = st.outcome_lines(out, {**origin, "commits": ["b" * 40]})[0]
    assert one.endswith(f"blob blob, commit {'b' * 40})")
    assert not any("made on" in line for line in st.outcome_lines(out, origin))   # older records name no CPU
    # records made on two CPUs (a study resumed on another machine): both are named
    ep2 = dict(ep, origin={**ep["origin"], "machine": "x86_64, CPU B, avx512f"})
    (stages / "sl_s0.json").write_text(json.dumps({"params": {}, "commit": "a" * 40, "machine": "x86_64, CPU A, avx2"}))
    both = st.recorded_origin({"report": {"methods": {"sl": {"episodes": [ep, ep2]}}}})
    assert both["machines"] == {"not recorded": 2, "x86_64, CPU A, avx2": 1, "x86_64, CPU B, avx512f": 1}
    assert ("Stage and episode records made on: not recorded (2); x86_64, CPU A, avx2 (1); x86_64, CPU B, avx512f (1)."
            in st.outcome_lines(out, both))


def test_the_machine_names_the_cpu_and_its_widest_vector_extension(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance.platform, "machine", lambda: "x86_64")
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx fma avx2 sse4a\n\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx fma avx2 sse4a\n")
    assert provenance.machine(info) == "x86_64, AMD EPYC, avx2"
    info.write_text("model name\t: Intel Xeon\nflags\t: sse2 avx avx2 avx512f avx512bw\n")
    assert provenance.machine(info) == "x86_64, Intel Xeon, avx512f"
    assert provenance.machine(tmp_path / "none") == "x86_64"                  # no /proc/cpuinfo (macOS)


def test_the_tables_do_not_hang_on_which_run_folder_holds_the_episodes(tmp_path):
    # the run folder that ran a study keeps the first tuning episode's filmstrip frames, its kept
    # results do not: the study's tables (which list a filmstrip only where there are frames) must
    # read the same rebuilt from either, so only the report set's seed-0 group carries frames
    s = study.Settings.from_scale("rope", tmp_path / "run", "small", train_seeds=1)
    st = study.Study(s, progress=False, log=lambda *_: None, report_only=True)
    settings = st.episode_settings()
    frame = {"cloud": [[0.0, 0.0, 0.0]], "candidates": [[[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]]], "chosen": 0}
    for name, seed in (("tune", 1000), ("report", 3000)):
        folder = tmp_path / "run" / "eval" / name / "sl" / "s0"
        folder.mkdir(parents=True)
        (folder / f"{seed}.json").write_text(json.dumps(
            {"seed": seed, "scores": [0.1, 0.2], "final": 0.2, "success": False, "steps_to_success": None,
             "metrics": {}, "settings": settings, "frames": [frame]}))
    out = st.evaluate(["sl"], [], {"report": [3000], "tune": [1000]})
    assert "frames" not in out["tune"]["methods"]["sl"]["episodes"][0]
    assert len(out["report"]["methods"]["sl"]["episodes"][0]["frames"]) == 1
