"""What an evaluation is given, checked before any episode or batch: every count, which runs the
methods need, and each run's stage, task and model (only the checkpoints' JSON records are read).

The runs are named by their `Runs` field (``sl``, ``dpo``, ``reward``, ``reward_sl``); errors
name them as the `pam-jax eval` flags (``--dpo``).
"""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from pam_jax import config as config_lib
from pam_jax import tasks as tasks_lib
from pam_jax.data import sources
from pam_jax.train.checkpoint import Checkpointer, CheckpointError

# the train.stage each run must have
ROLE_STAGE = {"sl": "supervised", "dpo": "dpo", "reward": "reward", "reward_sl": "reward"}


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def check_count(name: str, value, lo: int = 1) -> int:
    """`value` as an int >= lo, else a one-line ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def run_task(cfg: config_lib.Config) -> str:
    """The task a run was trained for: data.task, else 'toy' for the toy data sources."""
    if cfg.data.task:
        return cfg.data.task
    return "toy" if cfg.data.source.startswith("toy") else "unknown"


def run_meta(path, field: str) -> dict:
    """The newest checkpoint's record of the run folder given as `field` (no arrays are read)."""
    try:
        ckpt = Checkpointer(pathlib.Path(path) / "checkpoints", create=False)
    except CheckpointError as e:
        raise CheckpointError(f"{flag(field)} {path}: not a trained run ({e})") from None
    try:
        return ckpt.restore_meta()
    finally:
        ckpt.close()


def _model_difference(a: config_lib.Config, b: config_lib.Config) -> str | None:
    for part in ("model", "diffusion"):
        x, y = getattr(a, part), getattr(b, part)
        for f in dataclasses.fields(x):
            if getattr(x, f.name) != getattr(y, f.name):
                return f"{part}.{f.name} is {getattr(x, f.name)!r} there, {getattr(y, f.name)!r} in --sl"
    return None


def check_runs(task: str, runs: dict[str, str]) -> dict[str, config_lib.Config]:
    """`runs` maps `Runs` fields to run folders ('' = not given). Each given run must have its
    role's stage and have been trained for `task`; a DPO run must share the SL run's model and
    diffusion config, and every scoring run its normalisation. -> the configs by field."""
    task = tasks_lib.data_task_name(task)
    cfgs, metas = {}, {}
    for field, path in runs.items():
        if not path:
            continue
        if field not in ROLE_STAGE:
            raise ValueError(f"unknown run role {field!r}: expected one of {tuple(ROLE_STAGE)}")
        meta = run_meta(path, field)
        cfg = config_lib.from_dict(meta["config"])
        want = ROLE_STAGE[field]
        if cfg.train.stage != want:
            raise ValueError(f"{flag(field)} {path} is a {cfg.train.stage!r} run ({cfg.name}); "
                             f"{flag(field)} takes a {want!r} run")
        if run_task(cfg) != task:
            raise ValueError(f"{flag(field)} {path} was trained for task {run_task(cfg)!r} ({cfg.name}, "
                             f"data.source={cfg.data.source!r}), not {task!r}")
        cfgs[field], metas[field] = cfg, meta
    if "sl" not in cfgs:
        return cfgs
    for field, cfg in cfgs.items():
        if field == "sl":
            continue
        diff = _model_difference(cfg, cfgs["sl"]) if field == "dpo" else None
        if diff:
            raise ValueError(f"{flag(field)} {runs[field]} does not fit --sl {runs['sl']}: {diff} (the implicit "
                             "reward compares the DPO model with the supervised model it was fine-tuned from)")
        if metas[field].get("norm") != metas["sl"].get("norm"):
            parent = (metas[field].get("parent") or {}).get("run_dir", "?")
            raise ValueError(f"{flag(field)} {runs[field]} normalises clouds differently from --sl {runs['sl']}: "
                             f"it was trained from another supervised run ({parent})")
    return cfgs


def check_eval_runs(task: str, runs, methods, known, needs: dict) -> dict[str, config_lib.Config]:
    """Before a closed-loop evaluation: every method is `known`, each has the run it `needs`
    (method -> (Runs field, what it is)), and the runs pass :func:`check_runs`."""
    methods = tuple(methods)
    if not methods:
        raise ValueError("no method to evaluate")
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}: expected some of {', '.join(known)}")
    given = dataclasses.asdict(runs) if dataclasses.is_dataclass(runs) else dict(runs)
    missing = {}
    for m in methods:
        if m in needs and not given.get(needs[m][0]):
            missing.setdefault(needs[m], []).append(m)
    if not given.get("sl"):
        raise ValueError("every method needs --sl RUN (the supervised run)")
    if missing:
        raise ValueError("; ".join(f"{', '.join(ms)} need{'s' if len(ms) == 1 else ''} {flag(field)} RUN "
                                   f"(the {what} run)" for (field, what), ms in missing.items()))
    used = {"sl"} | {needs[m][0] for m in methods if m in needs}
    return check_runs(task, {f: p for f, p in given.items() if f in used})


def check_pairs_dataset(path) -> tuple[pathlib.Path, str]:
    """A built finetune dataset (what held-out pair accuracy reads) -> (its folder, its task)."""
    ds_dir = sources.resolve_dataset_dir(path)
    task, kind = sources.task_kind_of(ds_dir)
    if kind != "finetune":
        raise ValueError(f"--pairs {path} is a {kind} dataset (deformpam/{task}_{kind}); pair accuracy needs "
                         f"candidates and rankings: a finetune dataset (deformpam/{task}_finetune)")
    return ds_dir, task
