"""Load a trained run for inference: params only, no optimiser, no train state."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib

import jax
import numpy as np

from pam_jax import config as config_lib
from pam_jax.models.build import build_model
from pam_jax.models.policy import Policy
from pam_jax.normalize import NormStats
from pam_jax.train.checkpoint import Checkpointer, abstract_like


def load_policy(run_dir: str | pathlib.Path, *, step: int | None = None, use_ema: bool = True) -> Policy:
    """The network of a run folder (any stage: a reward run gives the reward model) on one
    device, EMA weights when the run kept them. Only the parameters are read."""
    run_dir = pathlib.Path(run_dir)
    ckpt = Checkpointer(run_dir / "checkpoints", create=False)
    try:
        meta = ckpt.restore_meta(step)
        cfg = config_lib.from_dict(meta["config"])
        graphdef, params = build_model(cfg)
        field = "ema_params" if use_ema and cfg.optim.ema_decay > 0 else "params"
        target = {field: abstract_like(params, jax.sharding.SingleDeviceSharding(jax.devices()[0]))}
        restored, meta = ckpt.restore_subtree(target, meta["step"])
    finally:
        ckpt.close()
    return Policy(cfg, graphdef, restored[field], NormStats.from_dict(meta["norm"]), int(meta["step"]), str(run_dir))


# --------------------------------------------------------------------------- a preference run's reference
#
# A DPO or reward run is trained against one supervised (SL) checkpoint: the implicit reward is a
# log-ratio against exactly those parameters. The run records that checkpoint in every checkpoint
# record (``parent``: the SL run folder, absolute and relative to the preference run folder, its
# step and a fingerprint of its parameters) and keeps a copy of those parameters in its own
# folder (REFERENCE, itself a one-checkpoint run folder of the SL run at that step), so that the
# SL run may be trained on, pruned or left behind on another machine.

REFERENCE = "reference"


def fingerprint(params) -> str:
    """A hash of a parameter tree: every leaf's path, dtype, shape and bytes, in tree order."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        a = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return "sha256:" + h.hexdigest()[:32]


def parent_record(parent: Policy, run_dir) -> dict:
    """What a preference run in `run_dir` records of the SL checkpoint it starts from."""
    src = pathlib.Path(parent.run_dir).absolute()
    return {"run_dir": str(src), "path": os.path.relpath(src, pathlib.Path(run_dir).absolute()),
            "step": int(parent.step), "fingerprint": fingerprint(parent.params)}


def reference_record(run_dir, key: str = "parent") -> dict | None:
    """The ``parent`` record of a preference run's newest checkpoint (None: none recorded); with
    key="copy_of", the record of a kept copy (a REFERENCE folder)."""
    ckpt = Checkpointer(pathlib.Path(run_dir) / "checkpoints", create=False)
    try:
        return ckpt.restore_meta().get(key)
    finally:
        ckpt.close()


def steps_of(run_dir) -> list[int]:
    d = pathlib.Path(run_dir) / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def _same_folder(a, b) -> bool:
    try:
        return pathlib.Path(a).exists() and pathlib.Path(b).exists() and os.path.samefile(a, b)
    except OSError:
        return False


@dataclasses.dataclass(frozen=True)
class Reference:
    """Where the SL parameters of a selection come from: a run folder and its step, and the
    fingerprint they must have (None: nothing to verify)."""

    run_dir: str
    step: int | None
    fingerprint: str | None = None
    note: str = ""


def resolve_reference(sl_run, sl_step: int | None, preference: dict) -> Reference:
    """The SL checkpoint a selection uses. `preference` maps flag names (``--dpo``) to the
    preference runs given ('' = none). With none, `sl_run` at `sl_step` (None: its newest).
    Otherwise the step every preference run was trained against (they must agree), from `sl_run`
    when it holds that step (its fingerprint then checked by :func:`load_reference`), else from
    the copy kept in the preference run when `sl_run` is the run it was trained from (or when no
    `sl_run` is given); an `sl_step` that differs is an explicit override. Anything else is
    refused with one line naming both steps."""
    records = {}
    for flag, run in preference.items():
        if run:
            rec = reference_record(run)
            if rec is not None:
                records[flag] = (run, rec)
    if not records:
        if not sl_run:
            raise ValueError("no supervised run: give --sl RUN")
        return Reference(str(sl_run), sl_step)
    (flag, (run, rec)), *others = records.items()
    for f2, (r2, rec2) in others:
        if rec2.get("step") != rec.get("step") or rec2.get("fingerprint") != rec.get("fingerprint"):
            raise ValueError(f"{flag} {run} was trained against SL step {rec.get('step')} ({rec.get('run_dir')}), "
                             f"{f2} {r2} against SL step {rec2.get('step')} ({rec2.get('run_dir')}): "
                             "they cannot share one reference")
    step, fp = int(rec["step"]), rec.get("fingerprint")
    recorded = [p for p in ((pathlib.Path(run) / rec["path"]) if rec.get("path") else None,
                            rec.get("run_dir")) if p]
    copies = [pathlib.Path(r) / REFERENCE for r, _ in records.values()
              if step in steps_of(pathlib.Path(r) / REFERENCE)]
    if sl_step is not None and sl_step != step:
        if not sl_run:
            raise ValueError(f"an SL step ({sl_step}) was named without --sl RUN")
        return Reference(str(sl_run), int(sl_step), None,
                         f"SL step {sl_step} named explicitly; {flag} {run} was trained against step {step}")
    if sl_run:
        if step in steps_of(sl_run):
            return Reference(str(sl_run), step, fp)
        if copies and any(_same_folder(sl_run, p) for p in recorded):
            return Reference(str(copies[0]), step, fp, f"SL step {step} from the copy in {copies[0]}")
        have = steps_of(sl_run)
        newest = f"newest {have[-1]}" if have else "no checkpoint"
        raise ValueError(f"{flag} {run} was trained against SL step {step} of {rec.get('run_dir')}; --sl {sl_run} "
                         f"has no step {step} ({newest}): give the run it was trained from, or name another "
                         f"step explicitly (--sl-step{' ' + str(have[-1]) if have else ''})")
    if copies:
        return Reference(str(copies[0]), step, fp, f"SL step {step} from the copy in {copies[0]}")
    for p in recorded:
        if step in steps_of(p):
            return Reference(str(p), step, fp)
    raise ValueError(f"{flag} {run} was trained against SL step {step} of {rec.get('run_dir')}, which is not "
                     f"there any more and the run keeps no copy ({run}/{REFERENCE}): give --sl RUN --sl-step STEP")


def load_reference(ref: Reference, flag: str = "--sl") -> Policy:
    """Load `ref` (see :func:`resolve_reference`) and verify its fingerprint."""
    sl = load_policy(ref.run_dir, step=ref.step)
    if ref.fingerprint and fingerprint(sl.params) != ref.fingerprint:
        raise ValueError(f"{flag} {ref.run_dir} step {sl.step} is not the SL model the preference run was trained "
                         f"against (its parameters differ from the recorded fingerprint {ref.fingerprint})")
    return sl


def save_reference(run_dir, parent: Policy, record: dict, params=None) -> None:
    """Keep `parent`'s parameters (or `params`, the same ones placed for this process's mesh) in
    the preference run `run_dir` as REFERENCE/checkpoints/<step> (collective under several
    processes)."""
    field = "ema_params" if parent.cfg.optim.ema_decay > 0 else "params"
    ckpt = Checkpointer(pathlib.Path(run_dir) / REFERENCE / "checkpoints", keep=1)
    try:
        ckpt.save(parent.step, {field: parent.params if params is None else params},
                  {"config": config_lib.to_dict(parent.cfg), "model": config_lib.to_dict(parent.cfg.model),
                   "diffusion": config_lib.to_dict(parent.cfg.diffusion), "stage": parent.cfg.train.stage,
                   "norm": parent.norm.to_dict(), "data_state": {}, "copy_of": record}, force=True)
    finally:
        ckpt.close()
