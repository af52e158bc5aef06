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

import jax
import numpy as np

from pam_jax.normalize import NormStats
from pam_jax.pointcloud import check_clouds
from pam_jax.policy import Policy, load, versions  # noqa: F401  (versions: re-exported)
from pam_jax.serving import protocol

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
    policy: Policy | None = None   # the loaded policy (world-frame preprocessing: policy.to_task_frame)

    def check(self, points) -> np.ndarray:
        """One task-frame cloud (Np, 3) -> float32, or a one-line ValueError (shape, finite,
        plausible range: pam_jax.pointcloud.check_clouds)."""
        return check_clouds(protocol.check_cloud(points, self.num_points)[None], self.norm)[0]

    def select_batch(self, points: np.ndarray, seeds) -> dict:
        """Unchecked, unpadded: (B, Np, 3) float32 and B seeds -> dict of numpy arrays."""
        out = self.batch_decide(self.prepared, points, np.asarray(seeds, np.uint32))
        return {k: np.asarray(v) for k, v in out.items()}

    def select(self, points, seed: int = 0) -> dict:
        """In process, one observation: what a server or an export answers for (points, seed)."""
        out = self.select_batch(self.check(points)[None], [protocol.check_seed(seed)])
        return {k: (int(v[0]) if k == "index" else v[0]) for k, v in out.items()}


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


def from_policy(policy: Policy, batching: str = "exact") -> ServedPolicy:
    """A loaded :class:`pam_jax.policy.Policy` -> the ServedPolicy: its selector as the
    exportable graph from the parameters and as the in-process decision, with what the policy
    prepared once (not again)."""
    meta = {"protocol": protocol.VERSION, **policy.metadata, "batching": batching}
    return ServedPolicy(batch_selector(policy.selector, batching), policy.ref_params, policy.score_params,
                        policy.norm, policy.num_points, meta, batch_selector(policy.selector.decide, batching),
                        policy.prepared, policy)


def load_served(sl: str, dpo: str | None = None, reward: str | None = None, *, mode: str = "implicit",
                num_candidates: int | None = None, reward_samples: int | None = None,
                batching: str = "exact", sl_step: int | None = None,
                snap_pick: bool = True) -> ServedPolicy:
    """Runs -> the served graph (pam_jax.policy.load): the SL model samples N candidates; the
    DPO run (implicit), the reward run (explicit) or nobody (first) picks one. The runs are
    checked (stage, task, model, normalisation, the SL step a preference run was trained against)
    before any array is read. `snap_pick`: the task's pick snapping (``TaskSpec.snap``) applied
    to the returned action (the candidates are returned, and scored, as sampled)."""
    if mode not in protocol.MODES:
        raise ValueError(f"unknown mode {mode!r}: expected one of {', '.join(protocol.MODES)}")
    if batching not in protocol.BATCHING:
        raise ValueError(f"unknown batching {batching!r}: expected one of {', '.join(protocol.BATCHING)}")
    runs = {"dpo": dpo if mode == "implicit" else None, "reward": reward if mode == "explicit" else None}
    return from_policy(load(sl, mode=mode, num_candidates=num_candidates, reward_samples=reward_samples,
                            sl_step=sl_step, snap_pick=snap_pick, **runs), batching)
