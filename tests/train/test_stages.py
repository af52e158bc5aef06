"""Preference stages on the toy task: DPO and the explicit reward head start from a supervised
checkpoint, record it, resume, and refuse a wrong parent."""
import json
import os
import pathlib

import jax
import numpy as np
import pytest
from helpers.tiny import tiny_config

from pam_jax.config import override
from pam_jax.select import SelectConfig, make_selector
from pam_jax.toy import preference_data as tp
from pam_jax.train.checkpoint import CheckpointError
from pam_jax.train.loop import train
from pam_jax.train.restore import REFERENCE, fingerprint, load_policy


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
    cfg = _pref_cfg(sl_run, tmp_path / "dpo", "dpo", "optim.lr=0", "train.eval_every=2", "train.eval_batches=2")
    res = _run(cfg)
    sl_params = load_policy(sl_run).params
    for a, b in zip(jax.tree.leaves(res.state.params), jax.tree.leaves(sl_params)):
        np.testing.assert_allclose(a, b, atol=1e-6)   # lr=0: still the parent's weights
    meta = json.loads(next((pathlib.Path(cfg.train.run_dir) / "checkpoints" / "4" / "meta").glob("*")).read_text())
    # the parent: absolute, relative to the DPO run folder (portable), its step and a fingerprint of
    # its parameters; and the DPO run keeps a copy of exactly those parameters
    sl_abs = pathlib.Path(sl_run).absolute()
    assert meta["parent"] == {"run_dir": str(sl_abs), "path": os.path.relpath(sl_abs, tmp_path / "dpo"), "step": 6,
                              "fingerprint": fingerprint(sl_params)}
    kept = load_policy(tmp_path / "dpo" / REFERENCE)
    assert kept.step == 6 and kept.norm == load_policy(sl_run).norm
    for a, b in zip(jax.tree.leaves(kept.params), jax.tree.leaves(sl_params)):
        np.testing.assert_array_equal(a, b)
    rows = [json.loads(l) for l in (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()]
    assert all(-1.0 <= r["loss"] <= 0.0 for r in rows)   # -sigmoid lies in [-1, 0]
    # equal weights: e_theta == e_ref for every pair, so Delta = 0 and the loss is -sigmoid(0)
    assert rows[0]["loss"] == pytest.approx(-0.5, abs=1e-5)
    # validation on held-out draws: the same closed form, and the pair accuracy of the preference stage
    assert [r["step"] for r in rows if "val_loss" in r] == [2, 4]
    assert all(r["val_loss"] == pytest.approx(-0.5, abs=1e-5) and 0 <= r["val_pair_accuracy"] <= 1
               for r in rows if "val_loss" in r)


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


def test_epoch_budget_sets_the_steps_when_the_data_opens(sl_run, tmp_path):
    cfg = _pref_cfg(sl_run, tmp_path / "dpo", "dpo", "train.epochs=1.5", "train.checkpoint_every=100")
    assert int(_run(cfg).state.step) == 3            # ceil(1.5 epochs x 8 states / batch 4)
    saved = json.loads((tmp_path / "dpo" / "config.json").read_text())
    assert saved["train"]["steps"] == 3 and saved["train"]["epochs"] == 1.5
    assert int(_run(cfg).state.step) == 3            # a rerun resumes at the same budget: nothing left
    with pytest.raises(ValueError, match="finite data set"):
        _run(override(tiny_config(tmp_path / "sl"), ["train.epochs=1"]))   # toy_bimodal: endless


def test_grad_clip_zero_means_no_clipping():
    import dataclasses

    import jax.numpy as jnp
    import optax

    from pam_jax.config import OptimConfig
    from pam_jax.train.state import learning_rate, make_optimizer

    params = {"w": jnp.zeros(3)}
    grads = [{"w": jnp.array([100.0, -50.0, 0.0])}, {"w": jnp.array([1e-3, 2e-3, -1e-3])}]

    def run(tx):   # -> the second update: clipping the large first gradient changes Adam's scale for it
        state, p = tx.init(params), params
        for g in grads:
            u, state = tx.update(g, state, p)
            p = optax.apply_updates(p, u)
        return np.asarray(u["w"])

    cfg = OptimConfig(lr=1e-2, warmup_steps=0, grad_clip=0.0, b1=0.0)   # no momentum: each update shows its gradient
    plain = run(optax.adamw(learning_rate(cfg, 10), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay))
    np.testing.assert_allclose(run(make_optimizer(cfg, 10)), plain, rtol=1e-6)
    assert not np.allclose(run(make_optimizer(dataclasses.replace(cfg, grad_clip=1.0), 10)), plain, rtol=1e-2)
    with pytest.raises(ValueError, match="grad_clip"):
        make_optimizer(dataclasses.replace(cfg, grad_clip=-1.0), 10)


def test_explicit_reward_model_fresh_or_from_sl(sl_run, tmp_path):
    from pam_jax.eval.closed_loop import Agent, Runs
    from pam_jax.train.stages import build_stage

    sl = jax.tree.leaves(load_policy(sl_run).params)
    width = tiny_config().model.width

    def same_backbone(params):
        return all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(params["policy"]), sl))

    def head_shapes(params):
        return sorted(x.shape for x in jax.tree.leaves(params["head"]))

    # the SL-initialised model with an MLP head (built only)
    stage = build_stage(_pref_cfg(sl_run, tmp_path / "r_sl", "reward", "preference.reward_init=sl",
                                  "preference.reward_head=mlp"))
    assert same_backbone(stage.params) and head_shapes(stage.params) != [(1,), (width, 1)]
    # the paper's: fresh network, one linear output (trained, then restored with that head)
    cfg = _pref_cfg(sl_run, tmp_path / "reward", "reward", "preference.reward_init=fresh",
                    "preference.reward_head=linear", "optim.lr=0", "train.steps=2")
    _run(cfg)
    reward = load_policy(cfg.train.run_dir)
    assert not same_backbone(reward.params) and head_shapes(reward.params) == [(1,), (width, 1)]
    # each explicit baseline is a closed-loop method of its own, reading its own run
    pts = np.random.default_rng(0).uniform(-0.3, 0.3, (1, 64, 3)).astype(np.float32)
    agent = Agent("sl_explicit", Runs(sl=str(sl_run), reward=cfg.train.run_dir), data_task="rope", num_candidates=3)
    out = agent.select(pts, jax.random.key(0))
    assert out.scores.shape == (1, 3) and np.isfinite(np.asarray(out.scores)).all()
    agent = Agent("sl_explicit_sl", Runs(sl=str(sl_run), reward_sl=cfg.train.run_dir), data_task="rope")
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(agent.score), jax.tree.leaves(reward.params)))
    for bad, msg in (("preference.reward_head=conv", "reward_head"), ("preference.reward_init=sft", "reward_init")):
        with pytest.raises(ValueError, match=msg):
            build_stage(override(cfg, [bad]))
    with pytest.raises(ValueError, match="pair_noise"):
        build_stage(_pref_cfg(sl_run, tmp_path / "dpo_bad", "dpo", "preference.pair_noise=per_state"))


def test_experiment_stages_paper_settings_and_the_previous_ones():
    from pam_jax.config import load_experiment

    def settings(name):
        c = load_experiment(name)
        p = c.preference
        return (c.train.stage, c.optim.lr, c.optim.warmup_steps, c.optim.grad_clip, c.data.batch_size,
                c.train.epochs, p.pair_noise, p.reward_samples, p.reward_init, p.reward_head)

    assert settings("sim_rope:dpo")[:8] == ("dpo", 1e-5, 0, 0.0, 28, 200.0, "per_pair", 100)
    assert settings("sim_rope:dpo_fast")[:8] == ("dpo", 1e-4, 20, 1.0, 16, 0.0, "per_candidate", 10)
    assert settings("sim_rope:reward") == ("reward", 1e-5, 0, 0.0, 28, 200.0, "per_pair", 100, "fresh", "linear")
    assert settings("sim_rope:reward_sl")[:6] == ("reward", 1e-5, 0, 0.0, 28, 200.0)   # dpo's budget
    assert settings("sim_rope:reward_sl")[8:] == ("sl", "mlp")
    assert settings("deformpam_rope:dpo")[:8] == ("dpo", 1e-5, 0, 0.0, 28, 200.0, "per_pair", 100)
    assert settings("deformpam_rope:dpo_fast")[:8] == ("dpo", 1e-5, 100, 1.0, 16, 0.0, "per_candidate", 10)
    dirs = {load_experiment(f"sim_rope:{s}").train.run_dir for s in ("dpo", "dpo_fast", "reward", "reward_sl")}
    assert len(dirs) == 4
