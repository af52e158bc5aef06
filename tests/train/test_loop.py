"""Supervised training: loss, sharding, checkpoints, resume and failure paths."""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.tiny import run_steps, tiny_config

from pam_jax.config import override
from pam_jax.toy.data import ToyBimodalData
from pam_jax.train import sharding
from pam_jax.train.checkpoint import CheckpointError
from pam_jax.train.loop import init_train_state, step_for, train
from pam_jax.train.restore import load_policy
from pam_jax.train.steps import draw_pose, supervised_loss


def _quiet(*a, **k):
    pass


def _run(cfg, **kw):
    return train(cfg, progress_bar=False, log=_quiet, **kw)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


class FailingData(ToyBimodalData):
    """Toy data that raises `exc` when asked for step `fail_at` (a crash or a Ctrl-C mid-run)."""

    def __init__(self, fail_at, exc, **kw):
        super().__init__(**kw)
        self.fail_at, self.exc = fail_at, exc

    def batch(self, step):
        if step == self.fail_at:
            raise self.exc
        return super().batch(step)


def _data(cfg, cls=ToyBimodalData, **kw):
    return cls(batch_size=cfg.data.batch_size, num_points=cfg.data.num_points, seed=cfg.data.seed, **kw)


def test_draw_pose_only_takes_valid_poses():
    actions = jnp.arange(3 * 4 * 2 * 3, dtype=jnp.float32).reshape(3, 4, 2, 3)
    valid = jnp.array([[False, True, False, False], [True, False, False, False], [False, False, False, True]])
    for seed in range(5):
        got = draw_pose(jax.random.key(seed), actions, valid)
        np.testing.assert_array_equal(got, actions[jnp.arange(3), jnp.array([1, 0, 3])])
    both = jnp.array([[True, True, False, False]] * 3)
    picks = [int(draw_pose(jax.random.key(s), actions, both)[0, 0, 0] == actions[0, 1, 0, 0]) for s in range(200)]
    assert 0.35 < np.mean(picks) < 0.65


def test_fresh_model_loss_is_the_noise_variance(tmp_path):
    """The network starts at eps_hat = 0, so the MSE is E[eps^2] = 1, masked or not."""
    cfg = override(tiny_config(tmp_path), ["train.noise_replicas=64"])
    mesh = sharding.make_mesh(1)
    graphdef, _, state = init_train_state(cfg, mesh)
    data = _data(cfg)
    from pam_jax.diffusion import schedule_from_config as make_schedule

    batch = {k: jnp.asarray(v) for k, v in data.batch(0).items()}
    kw = dict(replicas=64, norm=data.norm_stats())
    loss = supervised_loss(state.params, graphdef, make_schedule(cfg.diffusion), batch, jax.random.key(0), **kw)
    assert float(loss) == pytest.approx(1.0, abs=0.08)
    batch["action_mask"] = batch["action_mask"].at[:, 1].set(0.0)
    loss = supervised_loss(state.params, graphdef, make_schedule(cfg.diffusion), batch, jax.random.key(0), **kw)
    assert float(loss) == pytest.approx(1.0, abs=0.1)


def test_training_lowers_the_loss_on_a_fixed_batch(tmp_path):
    cfg = override(tiny_config(tmp_path), ["optim.lr=3e-3", "train.noise_replicas=8", "train.steps=60"])
    mesh = sharding.make_mesh(1)
    graphdef, tx, state = init_train_state(cfg, mesh)
    data = _data(cfg)
    step = step_for(cfg, tx, mesh, data.norm_stats())
    batch = sharding.to_global(data.batch(0), mesh)
    losses = []
    for _ in range(60):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])


def test_eight_devices_agree_with_one(tmp_path):
    assert jax.device_count() == 8, "tests run with 8 forced CPU devices (tests/conftest.py)"
    cfg = tiny_config(tmp_path)
    out = {}
    for n in (1, 8):
        losses, state = run_steps(cfg, n)
        out[n] = (losses, _leaves(state.params))
    np.testing.assert_allclose(out[1][0], out[8][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(out[1][1], out[8][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_batch_not_divisible_by_devices(tmp_path):
    cfg = override(tiny_config(tmp_path), ["data.batch_size=12", "train.num_devices=8"])
    with pytest.raises(ValueError, match="not divisible"):
        _run(cfg)


def test_run_folder_and_checkpoint_round_trip(tmp_path):
    cfg = tiny_config(tmp_path / "run", keep_checkpoints=2, checkpoint_every=2)
    res = _run(cfg)
    run = pathlib.Path(cfg.train.run_dir)
    assert (run / "loss.png").is_file() and (run / "config.json").is_file()
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6] and all(np.isfinite(r["loss"]) for r in rows)
    steps = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [4, 6]                      # keeps the last 2
    policy = load_policy(run)
    cfg2, params, norm = policy.cfg, policy.params, policy.norm
    assert cfg2 == cfg and norm == res.norm
    for a, b in zip(_leaves(params), _leaves(res.state.ema_params)):
        np.testing.assert_array_equal(a, b)


def test_crash_then_resume_equals_an_uninterrupted_run(tmp_path):
    ref = _run(tiny_config(tmp_path / "ref"))
    cfg = tiny_config(tmp_path / "crash")
    with pytest.raises(RuntimeError, match="boom"):
        _run(cfg, data=_data(cfg, FailingData, fail_at=4, exc=RuntimeError("boom")))
    assert load_policy(cfg.train.run_dir)  # the checkpoint of step 3 is there
    resumed = _run(cfg)
    assert int(resumed.state.step) == 6
    for a, b in zip(_leaves(resumed.state), _leaves(ref.state)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    rows = [json.loads(l)["step"] for l in (tmp_path / "crash" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1] == 6


def test_interrupt_saves_the_current_step(tmp_path):
    cfg = tiny_config(tmp_path, checkpoint_every=100)
    with pytest.raises(KeyboardInterrupt, match="interrupted at step 5"):
        _run(cfg, data=_data(cfg, FailingData, fail_at=5, exc=KeyboardInterrupt()))
    resumed = _run(cfg)
    assert int(resumed.state.step) == 6


def test_saved_on_eight_devices_restores_on_one(tmp_path):
    cfg = tiny_config(tmp_path, num_devices=8)
    res = _run(cfg)
    params = load_policy(cfg.train.run_dir).params
    leaf = jax.tree.leaves(params)[0]
    assert len(leaf.sharding.device_set) == 1
    for a, b in zip(_leaves(params), _leaves(res.state.ema_params)):
        np.testing.assert_array_equal(a, b)
    # and the reverse: resume the 8-device run on 1 device, with a longer schedule (stated)
    said = []
    more = train(override(cfg, ["train.num_devices=1", "train.steps=8"]), progress_bar=False, log=said.append)
    assert int(more.state.step) == 8
    assert any(l.startswith("note: train.steps is 8 now, 6 when this run started: the cosine learning-rate "
                            "schedule now decays over 8 steps from step 6 on") for l in said), said


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_policy(tmp_path / "nothing")


def test_mismatched_checkpoint_names_the_field(tmp_path):
    cfg = tiny_config(tmp_path)
    _run(cfg)
    wider = override(cfg, ["model.width=60", "train.steps=9"])
    with pytest.raises(CheckpointError, match="width"):
        _run(wider)


def test_corrupt_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path)
    _run(cfg)
    state_dir = pathlib.Path(cfg.train.run_dir) / "checkpoints" / "6" / "state"
    for f in state_dir.rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match=r"step 6 .* is corrupt .*; to fall back to step 3, delete \S+/checkpoints/6$"):
        load_policy(cfg.train.run_dir)
    said = []
    train(cfg, progress_bar=False, log=said.append)  # the resume takes that way out by itself
    assert [line for line in said if line.startswith("skipped checkpoint step 6: ")], said
    aside = [d.name for d in state_dir.parent.parent.iterdir() if d.name.startswith("6.corrupt-")]
    assert len(aside) == 1
    assert load_policy(cfg.train.run_dir).step == 6  # trained again from step 3


def test_wrong_format_version(tmp_path):
    cfg = tiny_config(tmp_path)
    _run(cfg)
    meta = next((pathlib.Path(cfg.train.run_dir) / "checkpoints" / "6" / "meta").rglob("*.json"), None) \
        or next((pathlib.Path(cfg.train.run_dir) / "checkpoints" / "6" / "meta").iterdir())
    record = json.loads(meta.read_text())
    record["format_version"] = 999
    meta.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="format version"):
        load_policy(cfg.train.run_dir)


def test_nan_input_stops_with_a_clear_error(tmp_path):
    class NaNData(ToyBimodalData):
        def batch(self, step):
            b = super().batch(step)
            b["points"][0, 0, 0] = np.nan
            return b

    cfg = tiny_config(tmp_path)
    with pytest.raises(FloatingPointError, match="loss is nan"):
        _run(cfg, data=_data(cfg, NaNData))


def test_unknown_stage(tmp_path):
    with pytest.raises(ValueError, match="stage"):
        _run(override(tiny_config(tmp_path), ["train.stage=rl"]))


def test_garbage_in_metrics_does_not_break_the_loss_plot(tmp_path):
    from pam_jax.train.logging import MetricsWriter, plot_curve, read_metrics

    path = tmp_path / "metrics.jsonl"
    w = MetricsWriter(path)
    w.write(1, {"loss": 0.5})
    with path.open("ab") as f:
        f.write(b'{"step": 2, "loss": 0.4\n\xff\xfe binary\n[1, 2]\n"text"\n{"step": "3", "loss": 1}\n'
                b'{"step": 4, "loss": "high"}\n{"step": 5, "loss": NaN}\n{"loss": 9}\n')
    w.write(6, {"loss": 0.25})
    assert [r["step"] for r in read_metrics(path)] == [1, 4, 5, 6]
    png = plot_curve(path, tmp_path / "loss.png")
    assert png and png.read_bytes()[:4] == b"\x89PNG"


def test_runs_differing_in_seed_or_normalisation_share_one_program(tmp_path):
    """The seed's key and the normalisation are arguments of the compiled step, not constants: a
    study's second training seed, or a data set with other statistics, reuses the first one's
    executable (the same lowered program, so the same compilation-cache key), and still steps
    with its own key and its own normalisation."""
    from pam_jax.normalize import NormStats

    mesh = sharding.make_mesh(1)
    cfg = tiny_config(tmp_path)
    graphdef, tx, state = init_train_state(cfg, mesh)
    batch = sharding.to_global(_data(cfg).batch(0), mesh)
    norms = (NormStats((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), NormStats((0.1, -0.2, 0.3), (2.0, 2.0, 2.0)))
    variants = [(0, norms[0]), (1, norms[0]), (0, norms[1])]
    steps = [step_for(override(cfg, [f"train.seed={seed}"]), tx, mesh, norm) for seed, norm in variants]
    texts = {s.lower(state, batch).as_text() for s in steps}
    assert len(texts) == 1
    losses, grad_norms = [], []
    for s in steps:
        fresh = jax.tree.map(jnp.copy, state)            # the step donates its state
        m = s(fresh, batch)[1]
        losses.append(float(m["loss"]))
        grad_norms.append(float(m["grad_norm"]))
    # each run's own key (a fresh network predicts 0, so its loss depends on the noise only) and
    # normalisation (the gradients depend on the network's inputs)
    assert losses[0] == losses[2] != losses[1] and len(set(grad_norms)) == 3, (losses, grad_norms)
    # and the seed's key is fold_in(key(seed), step), as if it were a constant of the program
    from pam_jax.diffusion import schedule_from_config

    want = jax.jit(lambda p, b: supervised_loss(
        p, graphdef, schedule_from_config(cfg.diffusion), b, jax.random.fold_in(jax.random.key(1), 0),
        replicas=cfg.train.noise_replicas, norm=norms[0]))(state.params, batch)
    np.testing.assert_allclose(losses[1], float(want), rtol=1e-5)
