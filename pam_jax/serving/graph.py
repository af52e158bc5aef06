"""The served selection graph: trained runs -> one jitted function of a padded batch of
observations, each with its own key, so that a result depends only on its cloud and its seed.

    batch_select(ref_params, score_params, points (B, Np, 3), seeds (B,) uint32) -> dict of
        action (B, 2, 3), candidates (B, N, 2, 3), scores (B, N), index (B,)

In process, the parameter-only work (pam_jax.select.Selector.prepare) is done once when the
policy loads, and each request runs only the decision (`batch_decide`); an export serialises the
one graph from the parameters (`batch_select`). On CPU both give bit-identical answers.

Each observation runs the one-graph selector (pam_jax.select) on its own key
``jax.random.key(seed)``: padding, batch size and batch neighbours never enter its random draws.
With the default batching ("exact", lax.map over the batch) a result is bit-identical to the same
request alone; "vmap" vectorises the batch, where kernels chosen for each batch shape (an XLA
matmul's blocking) change the last float bits of the scores, and rarely the chosen index.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import numpy as np

import pam_jax
from pam_jax import config as config_lib
from pam_jax import tasks as tasks_lib
from pam_jax.eval.checks import check_runs, run_meta, run_task
from pam_jax.normalize import NormStats
from pam_jax.select import SelectConfig, check_clouds, make_selector, task_snap
from pam_jax.serving import protocol
from pam_jax.train.restore import load_policy

OUTPUTS = protocol.OUTPUTS


@dataclasses.dataclass(frozen=True)
class ServedPolicy:
    """What a server or an export needs: the batched graphs, the two parameter trees and what
    was prepared from them, and the metadata sent to clients."""

    batch_select: Callable   # jitted (ref, score, points (B, Np, 3), seeds (B,) uint32) -> dict (exports)
    ref_params: Any
    score_params: Any
    norm: NormStats
    num_points: int
    metadata: dict
    batch_decide: Callable   # jitted (prepared, points, seeds) -> dict (in process)
    prepared: Any            # Selector.prepare(ref_params, score_params), made once

    def check(self, points) -> np.ndarray:
        """One cloud (Np, 3) -> float32, or a one-line ValueError (shape, finite, plausible range)."""
        return check_clouds(protocol.check_cloud(points, self.num_points)[None], self.norm)[0]

    def select_batch(self, points: np.ndarray, seeds) -> dict:
        """Unchecked, unpadded: (B, Np, 3) float32 and B seeds -> dict of numpy arrays."""
        out = self.batch_decide(self.prepared, points, np.asarray(seeds, np.uint32))
        return {k: np.asarray(v) for k, v in out.items()}

    def select(self, points, seed: int = 0) -> dict:
        """In process, one observation: what a server or an export answers for (points, seed)."""
        out = self.select_batch(self.check(points)[None], [protocol.check_seed(seed)])
        return {k: (int(v[0]) if k == "index" else v[0]) for k, v in out.items()}


def versions() -> dict:
    return {"pam_jax": pam_jax.__version__, "jax": jax.__version__, "flax": flax.__version__, "numpy": np.__version__}


def batch_selector(selector: Callable, batching: str = "exact") -> Callable:
    """selector(*shared, points (1, Np, 3), key) -> Selection (a Selector's four-argument call,
    or its `decide` with the Prepared as the one shared argument) => a jitted batch function
    f(*shared, points (B, Np, 3), seeds (B,) uint32) with one key per observation, the outputs as
    a dict. `batching` (BATCHING): "exact" runs the observations one after another inside the
    graph (lax.map), so each is computed by the same code whatever its batch: results are
    bit-identical to a lone request; "vmap" vectorises them (more throughput on a GPU), and
    kernels chosen for the batch's shape may change the last float bits."""
    if batching not in protocol.BATCHING:
        raise ValueError(f"unknown batching {batching!r}: expected one of {', '.join(protocol.BATCHING)}")

    def one(shared, p, s):
        sel = selector(*shared, p[None], jax.random.key(s))
        return {k: getattr(sel, k)[0] for k in OUTPUTS}

    def batch(*args):
        *shared, points, seeds = args
        if batching == "vmap":
            return jax.vmap(lambda p, s: one(shared, p, s))(points, seeds)
        return jax.lax.map(lambda a: one(shared, *a), (points, seeds))

    return jax.jit(batch)


def served_policy(selector, ref_params, score_params, norm: NormStats, num_points: int, meta: dict,
                  batching: str = "exact") -> ServedPolicy:
    """A Selector (pam_jax.select.make_selector) and its parameters -> the ServedPolicy: the
    exportable graph from the parameters, and the in-process one from what `selector.prepare`
    made of them (once, here)."""
    return ServedPolicy(batch_selector(selector, batching), ref_params, score_params, norm, num_points, meta,
                        batch_selector(selector.decide, batching), selector.prepare(ref_params, score_params))


def _mode_runs(mode: str, dpo: str | None, reward: str | None) -> dict:
    if mode not in protocol.MODES:
        raise ValueError(f"unknown mode {mode!r}: expected one of {', '.join(protocol.MODES)}")
    if mode == "implicit" and not dpo:
        raise ValueError("--mode implicit needs --dpo RUN (the DPO run scores the candidates)")
    if mode == "explicit" and not reward:
        raise ValueError("--mode explicit needs --reward RUN (the reward model scores the candidates)")
    return {"dpo": dpo if mode == "implicit" else "", "reward": reward if mode == "explicit" else ""}


def load_served(sl: str, dpo: str | None = None, reward: str | None = None, *, mode: str = "implicit",
                num_candidates: int | None = None, reward_samples: int | None = None,
                batching: str = "exact", snap_pick: bool = True) -> ServedPolicy:
    """Runs -> the served graph: the SL model samples N candidates; the DPO run (implicit), the
    reward run (explicit) or nobody (first) picks one. The runs are checked (stage, task, model,
    normalisation) before any array is read. `snap_pick`: the task's pick snapping
    (``TaskSpec.snap``) applied to the returned action (the candidates are returned, and scored,
    as sampled)."""
    runs = {"sl": sl, **_mode_runs(mode, dpo, reward)}
    task = run_task(config_lib.from_dict(run_meta(sl, "sl")["config"]))
    if task == "unknown":
        raise ValueError(f"--sl {sl}: its config names no data.task, so the cloud it takes is unknown")
    check_runs(task, runs)   # stages, task, model and normalisation, before any array is read
    policy = load_policy(sl)
    scorer = load_policy(runs["dpo"] or runs["reward"]) if mode != "first" else None
    scfg = SelectConfig.from_config(policy.cfg, scorer.cfg if scorer else None, mode=mode,
                                    num_candidates=num_candidates, reward_samples=reward_samples,
                                    **task_snap(task, snap_pick))
    selector = make_selector(policy.graphdef, policy.cfg.diffusion, policy.norm, scfg,
                             score_graphdef=scorer.graphdef if mode == "explicit" else None)
    spec = tasks_lib.get_task(task)
    num_points = policy.cfg.data.num_points or spec.num_points
    meta = {
        "protocol": protocol.VERSION, "task": task, "mode": mode, "num_points": int(num_points),
        # clouds arrive in the task frame the SL run was trained in: a world-frame cloud goes through
        # pam_jax.pointcloud.preprocess(cloud, xy_scale=..., voxel_size=...) and subsample(num_points)
        # (numpy only), and the returned Frame maps the action back (frame.invert)
        "preprocess": {"xy_scale": spec.xy_scale, "voxel_size": spec.voxel_size},
        # how the server frames a world-frame cloud (pam_jax.pointcloud.frame_world_cloud), as the
        # training data were made: the toy task's synthetic clouds are used as they are
        "frame": {"preprocess": task != "toy", "xy_scale": spec.xy_scale if task != "toy" else 1.0,
                  "voxel_size": spec.voxel_size if task != "toy" else None, "n_sigma": 3.0 if task != "toy" else None,
                  "subsample_method": "random"},
        "selection": dataclasses.asdict(scfg), "batching": batching,
        "model": dataclasses.asdict(policy.cfg.model), "diffusion": dataclasses.asdict(policy.cfg.diffusion),
        "norm": policy.norm.to_dict(),
        "runs": {"sl": {"run_dir": str(sl), "step": policy.step},
                 **({mode: {"run_dir": scorer.run_dir, "step": scorer.step}} if scorer else {})},
        "versions": versions(),
    }
    return served_policy(selector, policy.params, scorer.params if scorer else None, policy.norm, int(num_points),
                         meta, batching)
