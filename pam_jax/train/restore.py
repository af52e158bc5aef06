"""Load a trained run for inference: params only, no optimiser, no train state."""
from __future__ import annotations

import pathlib

import jax

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
