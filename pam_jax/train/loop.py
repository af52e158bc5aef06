"""The training loop: data -> jitted step on the mesh -> metrics, progress, checkpoints.

A run folder holds `config.json`, `metrics.jsonl`, `checkpoints/` and `loss.png` (and
`tracker.json`, plus `tensorboard/` or `wandb/` with another `train.tracker`). Each metrics record
holds the means over the steps since the previous one, the learning rate, steps/s, samples/s and
the mean wait for data per step; with `train.eval_every` it also holds the validation metrics
(``val_*``: the stage's loss on the validation split, and pair accuracy in the preference stages).

Starting a run whose folder already has checkpoints resumes from the newest one and continues the
same step count; Ctrl-C or SIGTERM stops at the next step boundary and saves a checkpoint there first
(`interrupts.DeferredSignals`). One trainer at a time holds the folder (`runlock.RunLock`). With train.epochs > 0
the step budget is computed from the data's size when the data opens (`resolve_steps`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time

import jax
import numpy as np

from pam_jax import config as config_lib
from pam_jax.batches import batch_type
from pam_jax.data.train_data import make_train_data, make_validation_data
from pam_jax.models.build import build_model
from pam_jax.models.policy import num_params
from pam_jax.normalize import NormStats
from pam_jax.train import sharding
from pam_jax.train.checkpoint import Checkpointer, CheckpointError, abstract_like
from pam_jax.train.interrupts import DeferredSignals, Interrupted, signal_name
from pam_jax.train.logging import plot_curve, progress
from pam_jax.train.restore import REFERENCE, save_reference
from pam_jax.train.runlock import RunLock
from pam_jax.train.stages import build_stage
from pam_jax.train.state import TrainState, learning_rate, make_optimizer
from pam_jax.train.tracking import IntervalMeans, Tracker


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    graphdef: object
    norm: NormStats
    run_dir: pathlib.Path
    steps_per_sec: float | None


def create_state(cfg: config_lib.Config, mesh, params):
    """-> (tx, state): the optimiser and a train state around `params`, replicated over `mesh`."""
    sharding.check_batch_size(cfg.data.batch_size, mesh)
    tx = make_optimizer(cfg.optim, cfg.train.steps)
    state = TrainState.create(params, tx, ema=cfg.optim.ema_decay > 0)
    return tx, jax.device_put(state, sharding.replicated(mesh))


def resolve_steps(cfg: config_lib.Config, data) -> config_lib.Config:
    """`cfg` with train.steps = ceil(epochs * records / batch_size) when train.epochs > 0 (an
    epoch-based budget; the same on every resume of the same data), else `cfg` unchanged."""
    epochs = cfg.train.epochs
    if not epochs > 0:
        if epochs < 0:
            raise ValueError(f"train.epochs must be >= 0 (0 = use train.steps), got {epochs}")
        return cfg
    records = getattr(data, "num_records", None)
    if not records:
        raise ValueError(f"train.epochs={epochs:g} needs a finite data set; data.source={cfg.data.source!r} "
                         "has no fixed number of records: set train.steps (and train.epochs=0)")
    steps = max(1, math.ceil(epochs * records / cfg.data.batch_size))
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))


def init_train_state(cfg: config_lib.Config, mesh):
    """-> (graphdef, tx, state) of a freshly initialised network of `cfg` (tests, benchmarks)."""
    graphdef, params = build_model(cfg)
    return (graphdef, *create_state(cfg, mesh, params))


def step_for(cfg: config_lib.Config, tx, mesh, norm: NormStats):
    """The jitted step of `cfg`'s stage (for tests and benchmarks that drive steps by hand)."""
    return build_stage(cfg).make_step(tx, norm, mesh)


def _validator(cfg: config_lib.Config, stage, norm: NormStats, mesh):
    """-> validate(state) -> {"val_<metric>": mean over cfg.train.eval_batches batches of the
    validation data}, with the EMA parameters when the run keeps them (what inference uses) and
    the same noise key on every pass, so the curve compares like with like."""
    data = make_validation_data(cfg, stage.parent)
    evaluate = stage.make_eval(norm, mesh)
    batches = [sharding.to_global(batch_type(cfg.train.stage).from_dict(data.batch(i)), mesh)
               for i in range(cfg.train.eval_batches)]
    key = jax.random.key(cfg.train.seed)

    def validate(state: TrainState) -> dict:
        params = state.ema_params if state.ema_params is not None else state.params
        means = IntervalMeans()
        means.add(jax.device_get([evaluate(params, b, jax.random.fold_in(key, i)) for i, b in enumerate(batches)]))
        return {f"val_{k}": v for k, v in means.means().items()}

    return validate


class EarlyStop:
    """Counts validation passes without a new lowest val_loss; on resume the passes logged in
    metrics.jsonl up to the resumed step are replayed, so a resumed run stops where an
    uninterrupted one would."""

    def __init__(self, patience: int, metrics_path: pathlib.Path, start: int):
        self.patience, self.best, self.best_step, self.bad = patience, float("inf"), 0, 0
        if patience and start and metrics_path.exists():
            for line in metrics_path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if "val_loss" in rec and rec.get("step", 0) <= start:
                    self.update(rec["val_loss"], rec.get("step", 0))

    def update(self, val_loss, step: int = 0) -> bool:
        """One validation pass (at `step`) -> whether to stop."""
        if not self.patience or val_loss is None:
            return False
        if val_loss < self.best:
            self.best, self.best_step, self.bad = float(val_loss), int(step), 0
        else:
            self.bad += 1
        return self.bad >= self.patience


def checkpoint_meta(cfg: config_lib.Config, norm: NormStats, data_state: dict, **extra) -> dict:
    return {"config": config_lib.to_dict(cfg), "model": config_lib.to_dict(cfg.model),
            "diffusion": config_lib.to_dict(cfg.diffusion), "stage": cfg.train.stage,
            "norm": norm.to_dict(), "data_state": data_state, **extra}


def check_parent(saved: dict | None, now: dict, where) -> None:
    """On resume: the SL checkpoint the run was started from is the one it is trained against now."""
    if not saved:
        return
    same = saved.get("step") == now["step"] and saved.get("fingerprint", now["fingerprint"]) == now["fingerprint"]
    if not same:
        raise CheckpointError(f"{where} was trained against SL step {saved.get('step')} of {saved.get('run_dir')}; "
                              f"preference.init_from now gives step {now['step']} of {now['run_dir']}: set "
                              f"preference.init_step={saved.get('step')}")


def train(cfg: config_lib.Config, *, data=None, progress_bar: bool = True, log=print) -> TrainResult:
    """Train `cfg`'s stage in its run folder (resuming from the newest checkpoint there). The
    config is validated first; then the folder is locked (one writer per run folder) before
    anything is written. SIGINT/SIGTERM stop the run at the next step boundary with a saved
    checkpoint and raise :class:`Interrupted`; a second signal aborts at once."""
    config_lib.validate(cfg)
    run_dir = pathlib.Path(cfg.train.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir, log=log)
    if jax.process_index() == 0:
        lock.acquire()
    try:
        with DeferredSignals(before_abort=lock.release) as signals:
            return _train(cfg, data=data, progress_bar=progress_bar, log=log, signals=signals)
    finally:
        lock.release()


def agreed_signal(local: int | None) -> int:
    """The largest signal number any process has received (0: none), the same on every process:
    an all-gather of one integer per process."""
    from jax.experimental import multihost_utils

    return int(np.max(multihost_utils.process_allgather(np.int32(local or 0))))


def _train(cfg: config_lib.Config, *, data, progress_bar: bool, log, signals: DeferredSignals) -> TrainResult:
    run_dir = pathlib.Path(cfg.train.run_dir)
    is_chief = jax.process_index() == 0

    single = jax.process_count() == 1

    def setup_check(when):
        # one process stops alone only in a one-process run; several agree at the first step boundary
        if single and signals.received:
            raise Interrupted(f"interrupted {when} ({signal_name(signals.received)}); nothing trained yet, "
                              "nothing saved", signals.received)

    setup_check("while setting up")
    mesh = sharding.make_mesh(cfg.train.num_devices)
    stage = build_stage(cfg)
    setup_check("while building the model")
    data = data if data is not None else make_train_data(cfg, stage.parent)
    cfg = resolve_steps(cfg, data)
    graphdef = stage.graphdef
    tx, state = create_state(cfg, mesh, stage.params)
    repl = sharding.replicated(mesh)
    setup_check("while opening the data")

    ckpt = Checkpointer(run_dir / "checkpoints", keep=cfg.train.keep_checkpoints)
    interval = IntervalMeans()
    restored = ckpt.restore_newest_intact(
        abstract_like(state, repl), log=log, chief=is_chief,
        expect={"stage": cfg.train.stage, "model": config_lib.to_dict(cfg.model),
                "diffusion": config_lib.to_dict(cfg.diffusion)})
    if restored is not None:
        state, meta = restored
        if stage.parent:
            check_parent(meta.get("parent"), stage.record, ckpt.directory)
        norm = NormStats.from_dict(meta["norm"])
        data.set_state(meta.get("data_state", {}))
        interval = IntervalMeans(meta.get("log_interval"))
        log(f"resuming from {ckpt.directory} at step {int(state.step)}")
        before = (meta.get("config") or {}).get("train", {}).get("steps")
        if before is not None and before != cfg.train.steps:
            log(f"note: train.steps is {cfg.train.steps} now, {before} when this run started: the cosine "
                f"learning-rate schedule now decays over {cfg.train.steps} steps from step {int(state.step)} on, "
                f"so the result differs from a run started with train.steps={cfg.train.steps}")
    else:
        norm = stage.parent.norm if stage.parent else data.norm_stats()
    if stage.parent and not (run_dir / REFERENCE / "checkpoints").is_dir():
        # the SL parameters this run is trained against, kept in the run (every process takes part)
        save_reference(run_dir, stage.parent, stage.record, sharding.put_replicated(stage.parent.params, mesh))
    if is_chief:
        if note := config_lib.warmup_note(cfg):
            log(note)
        (run_dir / "config.json").write_text(json.dumps(config_lib.to_dict(cfg), indent=2))
        origin = f", from {stage.parent.run_dir} step {stage.parent.step}" if stage.parent else ""
        if cfg.train.epochs > 0:
            log(f"{cfg.train.epochs:g} epochs of {data.num_records} records at batch {cfg.data.batch_size}: "
                f"{cfg.train.steps} steps")
        log(f"{cfg.name} [{cfg.train.stage}]: {num_params(stage.params) / 1e6:.2f}M parameters, "
            f"{mesh.devices.size} device(s), {jax.process_count()} process(es), run folder {run_dir}{origin}")

    step_fn = stage.make_step(tx, norm, mesh)
    validate = _validator(cfg, stage, norm, mesh) if cfg.train.eval_every else None
    lr = learning_rate(cfg.optim, cfg.train.steps)
    # the records past the restored step (written after its checkpoint, by a run that then died)
    # are dropped, from metrics.jsonl and from the tracker's view, before any new one is written
    tracker = Tracker(cfg.train.tracker, run_dir, config=config_lib.to_dict(cfg), log=log, start_step=int(state.step),
                      wandb_project=cfg.train.wandb_project,
                      wandb_entity=cfg.train.wandb_entity) if is_chief else None
    setup_check("while setting up the run")
    pending = []                      # this interval's device metrics, fetched at the next log or save

    def flush():
        interval.add(jax.device_get(pending))
        pending.clear()

    def save(step, force=False):
        flush()
        ckpt.save(step, state, checkpoint_meta(cfg, norm, data.get_state(), **stage.meta(),
                                               log_interval=interval.state()), force=force)

    start, total = int(state.step), cfg.train.steps
    watch = EarlyStop(cfg.train.early_stop_patience, run_dir / "metrics.jsonl", start)
    bar = progress(total, start, f"{cfg.name} [{cfg.train.stage}]", enabled=progress_bar and is_chief)
    t_first, t_last, n_timed = None, None, 0
    t_interval, n_interval, data_wait = time.perf_counter(), 0, 0.0
    try:
        for step in range(start, total):
            # a step boundary: the state is whole. Every process takes part in the agreement at
            # every step, so all stop at the same step and enter the collective save together
            stop = signals.received if single else agreed_signal(signals.received)
            if stop:
                saved = int(state.step)
                if saved == start and saved not in ckpt.all_steps():
                    raise Interrupted(f"interrupted before the first step ({signal_name(stop)}); nothing "
                                      f"trained yet, nothing saved", stop)
                if saved not in ckpt.all_steps():
                    save(saved, force=True)
                raise Interrupted(f"interrupted at step {saved} ({signal_name(stop)}); checkpoint "
                                  f"saved in {ckpt.directory}; run the same command again to resume", stop)
            t_data = time.perf_counter()
            batch = sharding.to_global(batch_type(cfg.train.stage).from_dict(data.batch(step)), mesh)
            data_wait += time.perf_counter() - t_data
            state, metrics = step_fn(state, batch)
            pending.append(metrics)
            n_interval += 1
            done = step + 1
            record = {}
            if done % cfg.train.log_every == 0 or done == total:
                flush()
                record = interval.means()
                interval.reset()
                if not np.isfinite(record["loss"]):
                    raise FloatingPointError(f"loss is {record['loss']} at step {done}: lower optim.lr "
                                             "or check the data for outliers")
                now = time.perf_counter()
                record.update(lr=float(lr(done - 1)), steps_per_s=n_interval / (now - t_interval),
                              samples_per_s=n_interval * cfg.data.batch_size / (now - t_interval),
                              data_wait_s=data_wait / n_interval)
                t_interval, n_interval, data_wait = now, 0, 0.0
                bar.set_postfix(loss=f"{record['loss']:.4f}")
            stop = False
            if validate and (done % cfg.train.eval_every == 0 or done == total):
                record.update(validate(state))
                stop = watch.update(record.get("val_loss"), done) and done < total
            if record and tracker:
                tracker.write(done, record)
            if t_first is None:
                jax.block_until_ready(state.step)
                t_first = time.perf_counter()
            else:
                n_timed += 1
            bar.update(1)
            t_last = time.perf_counter()
            if done % cfg.train.checkpoint_every == 0 or done == total or stop:
                save(done)
            if stop:
                log(f"early stop at step {done}: val_loss {watch.best:.5f} at step "
                    f"{watch.best_step} not bettered in {watch.patience} validation passes")
                break
    except Interrupted:
        raise
    except KeyboardInterrupt:  # raised by code we called (not our signal handler)
        if any(x.is_deleted() for x in jax.tree.leaves(state)):  # lost inside a step that took the buffers
            raise KeyboardInterrupt(f"interrupted inside a step: nothing saved; the newest checkpoint is step "
                                    f"{ckpt.latest_step()} in {ckpt.directory}") from None
        saved = int(state.step)
        if saved not in ckpt.all_steps():
            save(saved, force=True)
        raise KeyboardInterrupt(f"interrupted at step {saved}; checkpoint saved in {ckpt.directory}; "
                                "run the same command again to resume") from None
    finally:
        bar.close()
        ckpt.close()  # waits for pending asynchronous saves, also when the run crashed
        if tracker:
            tracker.close()
    rate = n_timed / (t_last - t_first) if n_timed else None  # the last step logs, so it has synced
    if is_chief:
        png = plot_curve(run_dir / "metrics.jsonl", run_dir / "loss.png")
        if png:
            log(f"loss curve: {png}")
    return TrainResult(state, graphdef, norm, run_dir, rate)
