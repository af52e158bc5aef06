"""`pam-jax demo`: the study at its demo scale (one pipeline), end to end at a tiny size; its
command line, its seed sets and its closing verdict."""
import json

import pytest

from pam_jax.cli import app as cli
from pam_jax.workflows import demo as sim_demo
from pam_jax.workflows import study

TINY = ["model.num_tokens=16", "model.knn=8", "model.encoder_layers=1", "model.width=48", "model.layers=1",
        "model.heads=2", "model.mlp_ratio=2", "diffusion.num_inference_steps=3", "data.num_points=128",
        "data.batch_size=4", "train.log_every=1", "train.checkpoint_every=2", "train.num_devices=1",
        "preference.num_candidates=3", "preference.reward_samples=2"]


@pytest.mark.slow
def test_rope_demo_runs_the_study_end_to_end(tmp_path, capsys):
    lines = []
    summary = sim_demo.run("rope", root=tmp_path, expert_episodes=2, states=3, steps_per_episode=2,
                           tune_episodes=1, report_episodes=2, sl_steps=2, pref_steps=2, max_steps=2,
                           overrides=tuple(TINY), progress=False, log=lines.append,
                           methods=("sl", "sl_explicit", "deformpam"))
    assert summary["settings"]["train_seeds"] == 1 and tuple(summary["settings"]["estimator_samples"]) == ()
    rep = summary["closed_loop"]["report"]
    assert set(rep["methods"]) == {"sl", "sl_explicit", "deformpam"}
    assert rep["start_seeds"] == [4000, 4001] and summary["closed_loop"]["tune"]["start_seeds"] == [1000]
    # the study's stages, each with its wall time, printed in the table; no estimators stage
    for name in ("expert", "sl_s0", "preferences", "dpo_s0", "reward", "offline"):
        assert summary["stage_wall_s"][name] >= 0.0, name
    assert "estimators" not in summary["stage_wall_s"] and not (tmp_path / "stages" / "estimators.json").exists()
    md = (tmp_path / "study.md").read_text()
    assert "Wall time per stage" in md and "| dpo_s0 |" in md and "DeformPAM" in md and "explicit RAS" in md
    assert "--estimator-samples" in summary["command"] and "--methods sl sl_explicit deformpam" in summary["command"]
    d = rep["vs_sl"]["deformpam"]
    assert lines[-1] == sim_demo.verdict(summary) and f"{d['mean']:+.3f}" in lines[-1]
    assert set(summary["offline"]["pair_accuracy"]) == {"implicit_s0", "reward"}

    ds = tmp_path / "tfds" / "deformpam" / "rope_finetune" / "1.0.0"

    # pam-jax eval --pairs: the same held-out measurement from the command line
    capsys.readouterr()
    assert cli.main(["eval", "--pairs", str(ds), "--sl", str(tmp_path / "sl_s0"), "--dpo", str(tmp_path / "dpo_s0"),
                     "--reward", str(tmp_path / "reward"), "--json"]) == 0
    acc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(acc) == {"implicit", "explicit", "regret"} and acc["implicit"]["states"] == acc["explicit"]["states"]
    assert acc["regret"]["states"] == acc["implicit"]["states"] and acc["regret"]["skipped"] == 0
    assert set(acc["regret"]["scorers"]) == {"first", "random", "implicit", "explicit"}

    # pam-jax collect: the same SL policy's candidates, ranked, written as finetune samples
    out = tmp_path / "collected"
    assert cli.main(["collect", "--task", "rope", "--sl", str(tmp_path / "sl_s0"), "--out", str(out),
                     "--states", "2", "--candidates", "2", "--steps-per-episode", "2"]) == 0
    assert "2 preference states written" in capsys.readouterr().out
    assert len([p for p in out.iterdir() if (p / "annotation.yaml").exists()]) == 2


def test_the_demo_command_runs_the_study_at_demo_scale(monkeypatch):
    calls = []
    monkeypatch.setattr(study, "run", lambda task, **kw: calls.append((task, kw)) or {})
    monkeypatch.setattr(sim_demo, "verdict", lambda summary: "")
    assert cli.main(["demo", "--no-progress"]) == 0
    task, kw = calls[-1]
    assert task == sim_demo.TASK == "granular" and kw["scale"] == "demo"
    assert str(kw["root"]) == "runs/demo_granular" and kw["progress"] is False
    assert all(kw[k] is None for k in ("expert_episodes", "report_episodes", "report_seed", "methods"))
    assert cli.main(["demo", "--task", "rope", "--eval-episodes", "5", "--report-seed", "3000",
                     "--episodes", "7", "--methods", "sl", "deformpam", "--run-dir", "x"]) == 0
    task, kw = calls[-1]
    assert (task, str(kw["root"]), kw["report_episodes"], kw["report_seed"], kw["expert_episodes"],
            kw["methods"]) == ("rope", "x", 5, 3000, 7, ("sl", "deformpam"))


def test_the_demo_scale_keeps_its_seed_sets_disjoint(tmp_path):
    s = study.Settings.from_scale("granular", tmp_path, "demo")
    st = study.Study(s, log=lambda *a: None)
    sets = st.start_sets()
    assert sets["report"] == list(range(4000, 4000 + s.report_episodes))          # its own, pre-registered set
    assert sets["tune"] == list(range(1000, 1000 + s.tune_episodes))
    study.check_disjoint({"preference (at most)": range(study.PREFERENCE_START, study.TUNE_START), **st.seed_sets()})
    # a report set moved onto the tuning seeds is refused, as in every study
    bad = study.Study(study.Settings.from_scale("granular", tmp_path, "demo", report_seed=1001), log=lambda *a: None)
    with pytest.raises(ValueError, match="share"):
        study.check_disjoint(bad.seed_sets())


def _summary(mean, lo, hi, interval="t", seeds=1):
    return {"settings": {"task": "granular", "train_seeds": seeds, "report_seed": 2000},
            "closed_loop": {"report": {"start_seeds": list(range(2000, 2016)),
                                       "vs_sl": {"deformpam": {"mean": mean, "lo": lo, "hi": hi, "interval": interval}}}}}


def test_the_verdict_says_where_the_interval_lies():
    above = sim_demo.verdict(_summary(0.04, 0.01, 0.07))
    assert "+0.040 [+0.010, +0.070]" in above and "above 0" in above and "16 start states from 2000" in above
    assert "one training seed" in above
    none = sim_demo.verdict(_summary(0.02, -0.01, 0.05, interval="hierarchical bootstrap, seeds paired", seeds=2))
    assert "includes 0" in none and "no gain" in none and "training seeds paired" in none
    assert "below 0" in sim_demo.verdict(_summary(-0.03, -0.05, -0.01))
    assert "pam-jax study --task granular --scale full" in none
    missing = sim_demo.verdict({"settings": {"task": "rope", "train_seeds": 1, "report_seed": 2000},
                                "closed_loop": {"tune": {}}})
    assert "No report-set comparison" in missing
