"""The inference entry point (pam_jax.policy): the README's snippet, world frame in and out; bad
clouds refused with one line through every entry point (the selector, decide, the exported
artefact, the policy); a preference run bound to the SL checkpoint it was trained against."""
import pathlib
import re
import shutil

import jax
import numpy as np
import pytest
from helpers.policy_runs import NORM, policy_run
from helpers.tiny import perturbed_policy, random_clouds

from pam_jax import policy
from pam_jax.config import DiffusionConfig
from pam_jax.select import SelectConfig, make_selector
from pam_jax.serving.exported import ExportedPolicy
from pam_jax.train.restore import REFERENCE, load_policy

REPO = pathlib.Path(__file__).resolve().parents[1]
NP = 64   # tiny_config's data.num_points


def readme_snippet() -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(r"<!-- select-an-action: [^>]*-->\n```python\n(.*?)```", text, re.S)
    assert m, "README.md has no select-an-action block"
    return m.group(1)


def _bound_pair(root: pathlib.Path, sl: str, dpo: str, *sets, keep_copy=True):
    """An SL run with checkpoints 6 and 12 (different weights) and a DPO run trained against step 6."""
    policy_run(root / sl, "supervised", 0, *sets)
    policy_run(root / dpo, "dpo", 1, *sets, parent=(root / sl, 6), keep_copy=keep_copy)
    policy_run(root / sl, "supervised", 5, *sets, step=12)   # the SL run trained on after the DPO run started
    return str(root / sl), str(root / dpo)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("policy")
    sl, dpo = _bound_pair(d, "sl", "dpo")
    return {"dir": d, "sl": sl, "dpo": dpo, "other": policy_run(d / "other", "supervised", 7)}


def test_the_readme_snippet_runs_world_frame_in_and_out(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _bound_pair(tmp_path / "runs", "toy_bimodal", "toy_dpo")
    ns = {}
    exec(compile(readme_snippet(), "README.md", "exec"), ns)   # noqa: S102 - the documented example
    out, pi = ns["out"], ns["pi"]
    assert ns["action"].shape == (2, 3) and ns["candidates"].shape == (4, 2, 3) and ns["scores"].shape == (4,)
    assert np.array_equal(ns["action"], ns["candidates"][ns["index"]])
    assert ns["index"] == int(np.argmax(ns["scores"]))
    # the DPO run's reference, not the SL run's newest checkpoint (12)
    assert pi.metadata["runs"]["sl"]["step"] == 6 and pi.metadata["mode"] == "implicit"
    # the toy task's clouds are used as generated: the task frame is the world frame
    np.testing.assert_array_equal(out["task_frame"]["action"], out["action"])
    again = pi.infer(ns["world_cloud"], seed=0)
    assert all(np.array_equal(again[k], out[k]) for k in ("action", "candidates", "scores", "index"))


def test_world_frame_translation_moves_the_action_with_the_cloud(tmp_path):
    """A task whose data are bounding-box centred (rope): shifting the world cloud by d shifts the
    chosen action by d, because the policy sees the same task-frame cloud; the task-frame action
    maps back through the returned Frame."""
    sl = policy_run(tmp_path / "sl", "supervised", 0, "data.task=rope")
    pi = policy.load(sl, mode="first", num_candidates=3)
    rng = np.random.default_rng(0)
    cloud = np.round(rng.uniform([-0.2, -0.1, 0.0], [0.2, 0.1, 0.03], (500, 3)) * 1024) / 1024   # exact in float32
    shift = np.array([0.75, -1.5, 0.25])
    a, b = pi.infer(cloud, seed=3), pi.infer(cloud + shift, seed=3)
    np.testing.assert_array_equal(a["task_frame"]["points"], b["task_frame"]["points"])
    np.testing.assert_allclose(b["action"], a["action"] + shift, atol=2e-6)
    np.testing.assert_allclose(b["candidates"], a["candidates"] + shift, atol=2e-6)
    np.testing.assert_allclose(a["frame"].to_world(a["task_frame"]["action"]), a["action"])
    assert not np.allclose(a["action"], a["task_frame"]["action"])   # centred and xy-scaled: another frame


# --------------------------------------------------------------------------- bad clouds, every entry point

BAD = [   # (what, the cloud batch, the one line)
    ("unbatched", lambda ok: ok[0], r"got one cloud of shape \(64, 3\).*pass points\[None\]"),
    ("empty batch", lambda ok: ok[:0], r"empty batch or cloud, shape \(0, 64, 3\)"),
    ("NaN", lambda ok: np.where(np.arange(64)[None, :, None] == 5, np.nan, ok), "6 non-finite values"),
    ("inf", lambda ok: np.where(np.arange(3) == 2, np.inf, ok), r"\d+ non-finite values"),
    ("millimetres", lambda ok: ok * 1e3, "normalisation scales from the training data's centre"),
    ("1e9", lambda ok: ok * 1e9, "normalisation scales from the training data's centre"),
]


def _ok():
    return (0.3 * random_clouds(b=2, n=NP)).astype(np.float32)   # inside NORM's range (centre 0, scale 0.5)


@pytest.mark.parametrize("what,make,msg", BAD, ids=[b[0] for b in BAD])
def test_the_selector_and_decide_refuse_bad_clouds(what, make, msg):
    g, params = perturbed_policy(0)
    sel = make_selector(g, DiffusionConfig(num_train_timesteps=20, num_inference_steps=2), NORM,
                        SelectConfig(mode="first", num_candidates=2, num_inference_steps=2))
    bad = make(_ok())
    with pytest.raises(ValueError, match=msg):
        sel(params, None, bad, jax.random.key(0))
    with pytest.raises(ValueError, match=msg):
        sel.decide(object(), bad, jax.random.key(0))   # refused before the Prepared is even read


def test_checked_false_is_the_explicit_opt_out():
    g, params = perturbed_policy(0)
    sel = make_selector(g, DiffusionConfig(num_train_timesteps=20, num_inference_steps=2), NORM,
                        SelectConfig(mode="first", num_candidates=2, num_inference_steps=2), checked=False)
    bad = _ok()
    bad[0, 3, 1] = np.nan
    out = sel(params, None, bad, jax.random.key(0))   # the caller's business: it runs
    assert out.candidates.shape == (2, 2, 2, 3)


def _exported(checked=True) -> ExportedPolicy:
    meta = {"batch": 2, "num_points": NP, "norm": NORM.to_dict(), "platforms": ["cpu"]}
    return ExportedPolicy(None, [], [], meta, checked)   # refused before the graph runs: no graph needed


@pytest.mark.parametrize("what,make,msg", BAD, ids=[b[0] for b in BAD])
def test_the_exported_artefact_refuses_bad_clouds(what, make, msg):
    bad = make(_ok())
    with pytest.raises(ValueError, match=msg):
        _exported().select_batch(bad, [0] * max(len(bad), 1))
    if what not in ("unbatched", "empty batch"):   # one cloud through select
        with pytest.raises(ValueError, match=msg.replace("6 non-finite", "3 non-finite")):
            _exported()(bad[0], seed=0)
    with pytest.raises(ValueError, match=r"got a batch of shape \(2, 64, 3\); select takes one cloud"):
        _exported()(_ok(), seed=0)
    with pytest.raises(ValueError, match=r"expected clouds of 64 points"):
        _exported(checked=False).select_batch(_ok()[:, :10], [0, 0])


@pytest.mark.parametrize("what,make,msg", BAD, ids=[b[0] for b in BAD])
def test_the_policy_refuses_bad_task_frame_clouds(runs, what, make, msg):
    pi = policy.load(runs["sl"], mode="first", num_candidates=2)
    with pytest.raises(ValueError, match=msg):
        pi.decide_task_frame(make(_ok()), jax.random.key(0))


def test_the_policy_world_frame_drops_non_finite_rows_and_refuses_the_rest(runs):
    pi = policy.load(runs["sl"], mode="first", num_candidates=2)
    world = np.random.default_rng(1).uniform(-0.3, 0.3, (100, 3))
    holes = world.copy()
    holes[[3, 50, 99]] = [np.nan, 0.0, 0.0]
    holes[7, 2] = np.inf
    pts, _ = pi.to_task_frame(holes, np.random.default_rng(0))   # 96 finite rows left: enough
    assert pts.shape == (NP, 3) and np.isfinite(pts).all()
    assert {tuple(p) for p in pts} <= {tuple(p) for p in world.astype(np.float32)}
    few = world[:70].copy()
    few[:10] = np.nan
    with pytest.raises(ValueError, match=r"60 of 70 points are finite \(NaN/inf points dropped\); at least 64 needed"):
        pi.infer(few)
    for bad, msg in ((world[None], r"got a batch of shape \(1, 100, 3\); infer takes one cloud"),
                     (world[:, :2], r"expected shape \(N, 3\)"), (world[:0], "empty"),
                     (world * 1e3, "normalisation scales"), (world * 1e9, "normalisation scales"),
                     (np.full((100, 3), "a"), "expected a real numeric array")):
        with pytest.raises(ValueError, match=msg):
            pi.infer(bad)
    with pytest.raises(ValueError, match="seed"):
        pi.infer(world, seed=-1)


def test_the_server_loader_checks_what_the_policy_checks(runs):
    from pam_jax.serving.graph import load_served

    served = load_served(runs["sl"], mode="first", num_candidates=2)
    assert served.policy.metadata["runs"]["sl"]["step"] == 12   # no preference run: the newest
    with pytest.raises(ValueError, match="normalisation scales"):
        served.check(_ok()[0] * 1e3)
    with pytest.raises(ValueError, match="non-finite"):
        served.check(np.full((NP, 3), np.nan, np.float32))


# --------------------------------------------------------------------------- the reference of a preference run


def _params_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_a_dpo_run_loads_the_sl_step_it_was_trained_against(runs):
    step6, step12 = load_policy(runs["sl"], step=6).params, load_policy(runs["sl"], step=12).params
    assert not _params_equal(step6, step12)
    pi = policy.load(runs["sl"], dpo=runs["dpo"])
    assert pi.sl.step == 6 and _params_equal(pi.ref_params, step6)
    alone = policy.load(dpo=runs["dpo"])                      # no --sl: the copy the DPO run keeps
    assert alone.sl.step == 6 and _params_equal(alone.ref_params, step6)
    assert pathlib.Path(alone.sl.run_dir) == pathlib.Path(runs["dpo"]) / REFERENCE
    named = policy.load(runs["sl"], dpo=runs["dpo"], sl_step=12)   # an explicit override names its step
    assert named.sl.step == 12 and "named explicitly" in named.metadata["runs"]["sl"]["note"]
    # another SL run that happens to have a step 6: its parameters are not the reference
    with pytest.raises(ValueError, match=r"--sl .*other step 6 is not the SL model .* fingerprint"):
        policy.load(runs["other"], dpo=runs["dpo"])


def test_a_pruned_reference_comes_from_the_copy_or_is_refused(runs, tmp_path):
    root = tmp_path / "moved"                  # the runs moved to another folder: the relative path holds
    shutil.copytree(runs["dir"], root)
    shutil.rmtree(root / "sl" / "checkpoints" / "6")   # the SL run pruned its step 6
    pi = policy.load(root / "sl", dpo=root / "dpo")
    assert pi.sl.step == 6 and "copy" in pi.metadata["runs"]["sl"]["note"]
    assert _params_equal(pi.ref_params, load_policy(runs["sl"], step=6).params)
    shutil.rmtree(root / "dpo" / REFERENCE)     # a run without the copy (made before it was kept)
    with pytest.raises(ValueError, match=r"--dpo .* was trained against SL step 6 of .*; --sl .* has no step 6 "
                                         r"\(newest 12\).*--sl-step 12"):
        policy.load(root / "sl", dpo=root / "dpo")
    assert policy.load(root / "sl", dpo=root / "dpo", sl_step=12).sl.step == 12


@pytest.mark.slow
def test_a_trained_dpo_run_stays_bound_when_its_sl_run_trains_on(tmp_path, capsys):
    """DPO from SL step 6; the SL run then trains on to step 9 and prunes step 6 (keeps one). The
    policy, the toy evaluation, the server's and the export's loader and a DPO resume all use
    SL step 6 (kept in the DPO run), or refuse with one line naming both steps."""
    from helpers.tiny import tiny_config

    from pam_jax.cli import app as cli
    from pam_jax.config import override
    from pam_jax.serving.graph import load_served
    from pam_jax.train.loop import train

    quiet = dict(progress_bar=False, log=lambda *a: None)
    sl_cfg = tiny_config(tmp_path / "sl", keep_checkpoints=1)
    train(sl_cfg, **quiet)
    sl = sl_cfg.train.run_dir
    step6 = load_policy(sl).params
    dpo_cfg = override(tiny_config(tmp_path / "dpo"), [
        "train.stage=dpo", f"preference.init_from={sl}", "data.source=toy_preference", "data.num_states=4",
        "data.batch_size=4", "preference.num_candidates=2", "preference.reward_samples=2", "optim.ema_decay=0",
        "train.steps=1"])
    train(dpo_cfg, **quiet)
    dpo = dpo_cfg.train.run_dir
    train(override(sl_cfg, ["train.steps=9"]), **quiet)
    assert sorted(p.name for p in (tmp_path / "sl" / "checkpoints").iterdir() if p.name.isdigit()) == ["9"]

    pi = policy.load(sl, dpo=dpo)
    assert pi.sl.step == 6 and _params_equal(pi.ref_params, step6)
    assert load_served(sl, dpo).metadata["runs"]["sl"]["step"] == 6     # serve and export load through this
    assert int(train(override(dpo_cfg, ["train.steps=2"]), **quiet).state.step) == 2   # resumes from the copy
    assert cli.main(["eval", "--run", dpo, "--scenes", "2", "--json"]) == 0
    capsys.readouterr()

    other = tmp_path / "other_sl"   # an SL run without step 6 that is not the one the DPO run started from
    shutil.copytree(sl, other)

    def one_line_error(argv) -> str:
        assert cli.main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    for argv in (["eval", "--run", dpo, "--sl", str(other)],
                 ["serve", "--sl", str(other), "--dpo", dpo],
                 ["export", "--sl", str(other), "--dpo", dpo, "--out", str(tmp_path / "x.pamx")]):
        msg = one_line_error(argv)
        assert "was trained against SL step 6" in msg and "has no step 6 (newest 9)" in msg, msg
    assert "evaluated alone" in one_line_error(["eval", "--run", sl, "--sl", sl])
    assert policy.load(other, dpo=dpo, sl_step=9).sl.step == 9   # the explicit override
