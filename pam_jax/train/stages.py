"""Training stages: what is trained, from what, and with which step function.

- supervised: a fresh diffusion policy, epsilon-MSE (DeformPAM stage 1);
- dpo: a copy of a supervised checkpoint fine-tuned on preference pairs against the frozen
  supervised model (stage 2); the checkpoint records its parent;
- reward: the explicit reward model (baseline), fresh or on the backbone of a supervised
  checkpoint (`preference.reward_init`), with a linear or MLP head (`preference.reward_head`);
  it still names its supervised parent, whose normalisation it uses.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable

import jax

from pam_jax import config as config_lib
from pam_jax import diffusion
from pam_jax.models import kernels
from pam_jax.models.policy import Policy, init_policy
from pam_jax.models.reward import HEADS, INITS, init_reward_model
from pam_jax.train import sharding
from pam_jax.train.checkpoint import CheckpointError
from pam_jax.train.preference_steps import PAIR_NOISE, dpo_loss, make_dpo_step, make_reward_step, reward_loss
from pam_jax.train.restore import REFERENCE, Reference, fingerprint, load_policy, load_reference, parent_record, reference_record, steps_of
from pam_jax.train.steps import make_supervised_step, supervised_loss

STAGES = config_lib.TRAIN_STAGES


@dataclasses.dataclass
class Stage:
    name: str
    graphdef: object
    params: object
    parent: Policy | None   # the supervised run a preference stage starts from
    make_step: Callable  # (tx, norm, mesh) -> step(state, batch) -> (state, metrics)
    make_eval: Callable  # (norm, mesh) -> evaluate(params, batch, key) -> metrics (no update)
    record: dict | None = None   # what the run records of its parent (restore.parent_record)

    def meta(self) -> dict:
        return {} if self.parent is None else {"parent": self.record}


def load_parent(cfg: config_lib.Config) -> tuple[Policy, dict]:
    """The SL checkpoint a preference stage trains against, and its record. A run that has
    started keeps a copy of it (restore.REFERENCE), read on resume: the SL run may have been
    trained on or pruned since; `preference.init_from` must still name that run."""
    p = cfg.preference
    if not p.init_from:
        raise ValueError(f"train.stage={cfg.train.stage!r} needs preference.init_from=<supervised run folder>")
    copy = pathlib.Path(cfg.train.run_dir) / REFERENCE
    if (copy / "checkpoints").is_dir():
        parent = load_policy(copy)
        record = reference_record(copy, key="copy_of")
        if fingerprint(parent.params) != record.get("fingerprint"):
            raise CheckpointError(f"{copy}: the kept SL parameters do not match their recorded fingerprint")
        if p.init_step >= 0 and p.init_step != record["step"]:
            raise ValueError(f"preference.init_step={p.init_step}, but {cfg.train.run_dir} was started from SL "
                             f"step {record['step']} of {record['run_dir']}")
        if record["step"] in steps_of(p.init_from):   # the SL run still holds it: the same parameters
            load_reference(Reference(p.init_from, record["step"], record["fingerprint"]), "preference.init_from")
    else:
        step = None if p.init_step < 0 else p.init_step
        parent = load_policy(p.init_from, step=step)
        record = parent_record(parent, cfg.train.run_dir)
    pcfg = parent.cfg
    if pcfg.train.stage != "supervised":
        raise ValueError(f"preference.init_from={p.init_from} is a {pcfg.train.stage!r} run; "
                         "a preference stage starts from a supervised run")
    # the runtime section (kernel forms) is not compared: the forms compute the same function
    if pcfg.model != cfg.model or pcfg.diffusion != cfg.diffusion:
        raise ValueError(f"the model/diffusion config of {p.init_from} differs from this experiment's; "
                         "copy them from the supervised experiment")
    return parent, record


def build_stage(cfg: config_lib.Config) -> Stage:
    name = cfg.train.stage
    d, o = cfg.diffusion, cfg.optim
    if name == "supervised":
        graphdef, params = init_policy(cfg.model, cfg.train.seed)

        def make_step(tx, norm, mesh):
            return make_supervised_step(graphdef, tx, diffusion.schedule_from_config(d), mesh,
                                        replicas=cfg.train.noise_replicas, norm=norm,
                                        seed=cfg.train.seed, ema_decay=o.ema_decay,
                                        compute_dtype=cfg.train.compute_dtype, runtime=cfg.runtime)

        def make_eval(norm, mesh):
            schedule = diffusion.schedule_from_config(d)
            return jax.jit(kernels.traced(lambda p, batch, key: {"loss": supervised_loss(
                p, graphdef, schedule, batch, key, replicas=cfg.train.noise_replicas, norm=norm,
                compute_dtype=cfg.train.compute_dtype)}, cfg.runtime))

        return Stage(name, graphdef, params, None, make_step, make_eval)

    if name == "dpo":
        if not 0.0 < cfg.preference.train_timestep_frac <= 1.0:
            raise ValueError(f"preference.train_timestep_frac must be in (0, 1], "
                             f"got {cfg.preference.train_timestep_frac}")
        if cfg.preference.pair_noise not in PAIR_NOISE:
            raise ValueError(f"unknown preference.pair_noise {cfg.preference.pair_noise!r}: expected one of {PAIR_NOISE}")
        parent, record = load_parent(cfg)
        params = jax.tree.map(lambda x: x.copy(), parent.params)

        def make_step(tx, norm, mesh):
            return make_dpo_step(parent.graphdef, tx, diffusion.schedule_from_config(d), mesh, parent.params,
                                 pcfg=cfg.preference, norm=norm, seed=cfg.train.seed, ema_decay=o.ema_decay,
                                 compute_dtype=cfg.train.compute_dtype, runtime=cfg.runtime)

        def make_eval(norm, mesh):
            schedule = diffusion.schedule_from_config(d)
            ref = sharding.put_replicated(parent.params, mesh)

            def evaluate(p, batch, key, ref):
                loss, aux = dpo_loss(p, ref, parent.graphdef, schedule, batch, key, pcfg=cfg.preference,
                                     norm=norm, compute_dtype=cfg.train.compute_dtype)
                return {"loss": loss, **aux}

            jitted = jax.jit(kernels.traced(evaluate, cfg.runtime))
            return lambda p, batch, key: jitted(p, batch, key, ref)

        return Stage(name, parent.graphdef, params, parent, make_step, make_eval, record)

    if name == "reward":
        p = cfg.preference
        if p.reward_init not in INITS:
            raise ValueError(f"unknown preference.reward_init {p.reward_init!r}: expected one of {INITS}")
        if p.reward_head not in HEADS:
            raise ValueError(f"unknown preference.reward_head {p.reward_head!r}: expected one of {HEADS}")
        parent, record = load_parent(cfg)
        graphdef, params = init_reward_model(cfg.model, cfg.train.seed,
                                             parent.params if p.reward_init == "sl" else None, head=p.reward_head)

        def make_step(tx, norm, mesh):
            return make_reward_step(graphdef, tx, mesh, norm=norm, ema_decay=o.ema_decay, runtime=cfg.runtime)

        def make_eval(norm, mesh):
            def evaluate(p, batch, key):
                loss, aux = reward_loss(p, graphdef, batch, norm=norm)
                return {"loss": loss, **aux}
            return jax.jit(kernels.traced(evaluate, cfg.runtime))

        return Stage(name, graphdef, params, parent, make_step, make_eval, record)

    raise ValueError(f"unknown train.stage {name!r}: expected one of {STAGES}")
