"""The typed batches the step functions consume, one per kind, defined once.

A data source yields process-local numpy dicts (the pipeline's keys, see
:mod:`pam_jax.data.pipeline`); the training loop turns each into one of these at the boundary
(``from_dict`` keeps the fields the step needs and checks ranks and shapes with chex), then
shards it. Both are pytrees (``flax.struct``), so they pass through ``jax.jit`` and the mesh
helpers unchanged. Shapes: B states, Np cloud points, M annotated poses, C candidates, A action
points (2), P pairs.
"""
from __future__ import annotations

from typing import Any, Mapping

import chex
from flax import struct

Array = Any


@struct.dataclass
class SupervisedBatch:
    points: Array          # (B, Np, 3) cloud, task frame
    actions: Array         # (B, M, A, 3) executed action first, then the annotated poses
    action_valid: Array    # (B, M) bool: a real pose
    action_mask: Array     # (B, A) 1.0 for the action points the primitive uses

    @classmethod
    def from_dict(cls, d: Mapping | "SupervisedBatch") -> "SupervisedBatch":
        if isinstance(d, cls):
            return d
        b = cls(points=d["points"], actions=d["actions"], action_valid=d["action_valid"],
                action_mask=d["action_mask"])
        chex.assert_rank([b.points, b.actions, b.action_valid, b.action_mask], [3, 4, 2, 2])
        chex.assert_equal_shape_prefix([b.points, b.actions, b.action_valid, b.action_mask], 1)
        chex.assert_axis_dimension(b.points, 2, 3)
        chex.assert_equal_shape_prefix([b.actions, b.action_valid], 2)
        chex.assert_axis_dimension(b.action_mask, 1, b.actions.shape[2])
        return b


@struct.dataclass
class PreferenceBatch:
    points: Array          # (B, Np, 3) cloud, task frame
    candidates: Array      # (B, C, A, 3) the ranked candidates (the annotator's action last)
    pairs: Array           # (B, P, 2) int32 candidate indices
    rankings: Array        # (B, P) int32 codes: 0/1 = first/second better, 2 equal, 3 not comparable
    action_mask: Array     # (B, A)

    @classmethod
    def from_dict(cls, d: Mapping | "PreferenceBatch") -> "PreferenceBatch":
        if isinstance(d, cls):
            return d
        b = cls(points=d["points"], candidates=d["candidates"], pairs=d["pairs"], rankings=d["rankings"],
                action_mask=d["action_mask"])
        chex.assert_rank([b.points, b.candidates, b.pairs, b.rankings, b.action_mask], [3, 4, 3, 2, 2])
        chex.assert_equal_shape_prefix([b.points, b.candidates, b.pairs, b.rankings, b.action_mask], 1)
        chex.assert_axis_dimension(b.pairs, 2, 2)
        chex.assert_equal_shape_prefix([b.pairs, b.rankings], 2)
        chex.assert_axis_dimension(b.action_mask, 1, b.candidates.shape[2])
        return b


def batch_type(stage: str):
    """The batch kind a training stage consumes."""
    return SupervisedBatch if stage == "supervised" else PreferenceBatch
