"""Preference stages on the toy task: DPO and the explicit reward head start from a supervised
checkpoint, record it, resume, and refuse a wrong parent."""
import json
import pathlib

import jax
import numpy as np
import pytest

from _tiny import tiny_config
from pam_jax.data import toy_preference as tp
from pam_jax.config import override
from pam_jax.select import SelectConfig, make_selector
from pam_jax.train.checkpoint import CheckpointError
from pam_jax.train.loop import train
from pam_jax.train.restore import load_policy


def _run(cfg):
    return train(cfg, progress_bar=False, log=lambda *a: None)


@pytest.fixture(scope="module")
def sl_run(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("sl") / "run")
    _run(cfg)
    return cfg.train.run_dir


def _pref_cfg(sl_run, run_dir, stage, *extra):
    return override(tiny_config(run_dir), [
        f"train.stage={stage}", f"preference.init_from={sl_run}", "data.source=toy_preference",
        "data.num_states=8", "data.batch_size=4", "preference.num_candidates=3", "optim.ema_decay=0",
        "train.steps=4", "train.checkpoint_every=2", *extra])


def test_dpo_stage_starts_from_the_parent_and_records_it(sl_run, tmp_path):
    cfg = _pref_cfg(sl_run, tmp_path / "dpo", "dpo", "optim.lr=0")
    res = _run(cfg)
    sl_params = load_policy(sl_run).params
    for a, b in zip(jax.tree.leaves(res.state.params), jax.tree.leaves(sl_params)):
        np.testing.assert_allclose(a, b, atol=1e-6)   # lr=0: still the parent's weights
    meta = json.loads(next((pathlib.Path(cfg.train.run_dir) / "checkpoints" / "4" / "meta").glob("*")).read_text())
    assert meta["parent"] == {"run_dir": str(pathlib.Path(sl_run).absolute()), "step": 6}
    rows = [json.loads(l) for l in (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()]
    assert all(-1.0 <= r["loss"] <= 0.0 for r in rows)   # -sigmoid lies in [-1, 0]
    # equal weights: e_theta == e_ref for every pair, so Delta = 0 and the loss is -sigmoid(0)
    assert rows[0]["loss"] == pytest.approx(-0.5, abs=1e-5)


def test_dpo_resume_and_wrong_parent(sl_run, tmp_path):
    cfg = _pref_cfg(sl_run, tmp_path / "dpo", "dpo")
    _run(cfg)
    more = _run(override(cfg, ["train.steps=6"]))
    assert int(more.state.step) == 6
    with pytest.raises(ValueError, match="starts from a supervised run"):
        _run(_pref_cfg(cfg.train.run_dir, tmp_path / "dpo2", "dpo"))
    with pytest.raises(ValueError, match="needs preference.init_from"):
        _run(override(cfg, ["preference.init_from=", "train.run_dir=" + str(tmp_path / "x")]))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        _run(_pref_cfg(tmp_path / "nowhere", tmp_path / "dpo3", "dpo"))
    with pytest.raises(ValueError, match="train_timestep_frac must be in"):
        _run(_pref_cfg(sl_run, tmp_path / "dpo4", "dpo", "preference.train_timestep_frac=0"))


def test_dpo_on_the_least_noisy_timesteps_only(sl_run, tmp_path):
    """train_timestep_frac=0.01 with the tiny T=20 trains on t=0 only; it still starts at -sigmoid(0)."""
    rows = _run(_pref_cfg(sl_run, tmp_path / "dpo", "dpo", "preference.train_timestep_frac=0.01"))
    assert int(rows.state.step) == 4
    first = json.loads((tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["loss"] == pytest.approx(-0.5, abs=1e-5)


def test_reward_stage_and_explicit_selection(sl_run, tmp_path):
    cfg = _pref_cfg(sl_run, tmp_path / "reward", "reward")
    _run(cfg)
    reward = load_policy(cfg.train.run_dir)
    rcfg, rgraph, rparams, norm = reward.cfg, reward.graphdef, reward.params, reward.norm
    assert rcfg.train.stage == "reward" and reward.stage == "reward"
    sl = load_policy(sl_run)
    scfg, sgraph, sparams = sl.cfg, sl.graphdef, sl.params
    sel = make_selector(sgraph, scfg.diffusion, norm, SelectConfig(mode="explicit", num_candidates=3,
                        num_inference_steps=3), score_graphdef=rgraph)
    pts = np.random.default_rng(0).uniform(-0.3, 0.3, (2, 64, 3)).astype(np.float32)
    out = sel(sparams, rparams, pts, jax.random.key(0))
    assert out.scores.shape == (2, 3) and np.isfinite(np.asarray(out.scores)).all()


def test_toy_oracle_codes():
    classes = np.array([[tp.GOOD, tp.OK, tp.BAD, tp.BAD]])
    pairs, codes = tp.comparisons(classes, np.random.default_rng(0))
    table = {tuple(p): c for p, c in zip(pairs[0].tolist(), codes[0].tolist())}
    assert table[(0, 1)] == 0 and table[(1, 2)] == 0 and table[(2, 3)] == 3
    assert table[(4, 0)] == 2 and table[(4, 1)] == 0 and table[(4, 3)] == 0   # the annotator's action
    assert len(table) == 6 + 4
    _, noisy = tp.comparisons(classes, np.random.default_rng(0), label_noise=1.0)
    flipped = {tuple(p): c for p, c in zip(pairs[0].tolist(), noisy[0].tolist())}
    assert flipped[(0, 1)] == 1 and flipped[(2, 3)] == 3 and flipped[(4, 0)] == 2
