"""The training loop: data -> jitted step on the mesh -> metrics, progress, checkpoints.

A run folder holds `config.json`, `metrics.jsonl`, `checkpoints/` and `loss.png`. Starting a run
whose folder already has checkpoints resumes from the newest one and continues the same step
count; Ctrl-C or SIGTERM saves a checkpoint at the current step first.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import signal
import threading
import time

import jax
import numpy as np

from pam_jax import config as config_lib
from pam_jax import diffusion
from pam_jax.models.policy import init_policy, num_params
from pam_jax.normalize import NormStats
from pam_jax.train import sharding
from pam_jax.train.checkpoint import Checkpointer, abstract_like
from pam_jax.train.logging import MetricsWriter, plot_curve, progress
from pam_jax.train.state import TrainState, make_optimizer
from pam_jax.train.steps import make_supervised_step


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    graphdef: object
    norm: NormStats
    run_dir: pathlib.Path
    steps_per_sec: float | None


def make_train_data(cfg: config_lib.Config):
    """The data source named by `cfg.data.source`, giving this process's slice of every batch."""
    d = cfg.data
    if d.source == "toy_bimodal":
        from pam_jax.toy import ToyBimodalData

        return ToyBimodalData(batch_size=d.batch_size, num_points=d.num_points, seed=d.seed,
                              process_index=jax.process_index(), process_count=jax.process_count())
    if d.source == "tfds":
        from pam_jax.data import pipeline

        return pipeline.from_config(cfg, process_index=jax.process_index(),
                                    process_count=jax.process_count())
    raise ValueError(f"unknown data.source {d.source!r}: expected 'toy_bimodal' or 'tfds'")


def make_schedule(cfg: config_lib.DiffusionConfig) -> diffusion.Schedule:
    return diffusion.make_schedule(cfg.num_train_timesteps, cfg.beta_schedule,
                                   set_alpha_to_one=cfg.set_alpha_to_one)


def checkpoint_meta(cfg: config_lib.Config, norm: NormStats, data_state: dict, **extra) -> dict:
    return {"config": config_lib.to_dict(cfg), "model": config_lib.to_dict(cfg.model),
            "diffusion": config_lib.to_dict(cfg.diffusion), "norm": norm.to_dict(),
            "data_state": data_state, **extra}


def init_train_state(cfg: config_lib.Config, mesh):
    """-> (graphdef, tx, state) with the state replicated over `mesh`."""
    sharding.check_batch_size(cfg.data.batch_size, mesh)
    graphdef, params = init_policy(cfg.model, cfg.train.seed)
    tx = make_optimizer(cfg.optim, cfg.train.steps)
    state = TrainState.create(params, tx, ema=cfg.optim.ema_decay > 0)
    return graphdef, tx, jax.device_put(state, sharding.replicated(mesh))


def supervised_step_for(cfg: config_lib.Config, graphdef, tx, mesh, norm: NormStats):
    return make_supervised_step(
        graphdef, tx, make_schedule(cfg.diffusion), mesh, replicas=cfg.train.noise_replicas,
        norm=norm, seed=cfg.train.seed, ema_decay=cfg.optim.ema_decay)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Turn SIGTERM into KeyboardInterrupt (main thread only) so a killed job saves first."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def train(cfg: config_lib.Config, *, data=None, progress_bar: bool = True, log=print) -> TrainResult:
    if cfg.train.stage != "supervised":
        raise ValueError(f"train.stage {cfg.train.stage!r} is not available; this version trains 'supervised'")
    run_dir = pathlib.Path(cfg.train.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    is_chief = jax.process_index() == 0

    mesh = sharding.make_mesh(cfg.train.num_devices)
    data = data if data is not None else make_train_data(cfg)
    graphdef, tx, state = init_train_state(cfg, mesh)
    params = state.params
    repl = sharding.replicated(mesh)

    ckpt = Checkpointer(run_dir / "checkpoints", keep=cfg.train.keep_checkpoints)
    if ckpt.latest_step() is not None:
        state, meta = ckpt.restore(abstract_like(state, repl),
                                   expect={"model": config_lib.to_dict(cfg.model),
                                           "diffusion": config_lib.to_dict(cfg.diffusion)})
        norm = NormStats.from_dict(meta["norm"])
        data.set_state(meta.get("data_state", {}))
        log(f"resuming from {ckpt.directory} at step {int(state.step)}")
    else:
        norm = data.norm_stats()
    if is_chief:
        (run_dir / "config.json").write_text(json.dumps(config_lib.to_dict(cfg), indent=2))
        log(f"{cfg.name}: {num_params(params) / 1e6:.2f}M parameters, {mesh.devices.size} device(s), "
            f"{jax.process_count()} process(es), run folder {run_dir}")

    step_fn = supervised_step_for(cfg, graphdef, tx, mesh, norm)
    writer = MetricsWriter(run_dir / "metrics.jsonl") if is_chief else None

    start, total = int(state.step), cfg.train.steps
    bar = progress(total, start, cfg.name, enabled=progress_bar and is_chief)
    t_first, t_last, n_timed = None, None, 0
    try:
        with _sigterm_as_interrupt():
            for step in range(start, total):
                batch = sharding.to_global(data.batch(step), mesh)
                state, metrics = step_fn(state, batch)
                done = step + 1
                if done % cfg.train.log_every == 0 or done == total:
                    host = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    if not np.isfinite(host["loss"]):
                        raise FloatingPointError(f"loss is {host['loss']} at step {done}: lower optim.lr "
                                                 "or check the data for outliers")
                    if writer:
                        writer.write(done, host)
                    bar.set_postfix(loss=f"{host['loss']:.4f}")
                if t_first is None:
                    jax.block_until_ready(state.step)
                    t_first = time.perf_counter()
                else:
                    n_timed += 1
                bar.update(1)
                t_last = time.perf_counter()
                if done % cfg.train.checkpoint_every == 0 or done == total:
                    ckpt.save(done, state, checkpoint_meta(cfg, norm, data.get_state()))
    except KeyboardInterrupt:
        saved = int(state.step)
        ckpt.save(saved, state, checkpoint_meta(cfg, norm, data.get_state()), force=True)
        raise KeyboardInterrupt(f"interrupted at step {saved}; checkpoint saved in {ckpt.directory}; "
                                "run the same command again to resume") from None
    finally:
        bar.close()
        ckpt.close()  # waits for pending asynchronous saves, also when the run crashed
    rate = n_timed / (t_last - t_first) if n_timed else None  # the last step logs, so it has synced
    if is_chief:
        png = plot_curve(run_dir / "metrics.jsonl", run_dir / "loss.png")
        if png:
            log(f"loss curve: {png}")
    return TrainResult(state, graphdef, norm, run_dir, rate)


def load_policy(run_dir: str | pathlib.Path, *, step: int | None = None, use_ema: bool = True):
    """Load a trained policy for inference -> (cfg, graphdef, params, norm). Single device."""
    run_dir = pathlib.Path(run_dir)
    ckpt = Checkpointer(run_dir / "checkpoints", create=False)
    meta = ckpt.restore_meta(step)
    cfg = config_lib.from_dict(meta["config"])
    graphdef, params = init_policy(cfg.model, cfg.train.seed)
    tx = make_optimizer(cfg.optim, cfg.train.steps)
    target = TrainState.create(params, tx, ema=cfg.optim.ema_decay > 0)
    state, meta = ckpt.restore(abstract_like(target, jax.sharding.SingleDeviceSharding(jax.devices()[0])), step)
    ckpt.close()
    params = state.ema_params if (use_ema and state.ema_params is not None) else state.params
    return cfg, graphdef, params, NormStats.from_dict(meta["norm"])
