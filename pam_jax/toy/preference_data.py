"""Preference data and RAS evaluation for the toy bar task, with a planted preference.

The oracle prefers the "left end first" order (mode 0): a candidate within 5% of the bar length
of the mode-0 endpoint pair is good, one within 5% of the mode-1 pair is acceptable, anything
else is bad. As in DeformPAM, candidates come from the supervised model (on-policy, K=8, DDIM
with eta=1), and each state gets the published comparisons: all candidate pairs (better class
wins; equal good/acceptable classes are "equal"; two bad ones are "not comparable") plus the
annotator's own action (the true mode-0 pair, appended as candidate K) against each candidate.
"""
from __future__ import annotations

import dataclasses
import itertools

import jax
import numpy as np

from pam_jax.config import Config, DiffusionConfig
from pam_jax.models.policy import Policy, sample_actions
from pam_jax.preference import EQUAL, FIRST_BETTER, NOT_COMPARABLE, SECOND_BETTER
from pam_jax.toy import data as toy

GOOD, OK, BAD = 0, 1, 2


def oracle_classes(cands, ends, lengths, tol: float = 0.05):
    """cands (S, K, 2, 3), ordered true ends (S, 2, 3) -> class per candidate (S, K)."""
    d0 = np.linalg.norm(cands - ends[:, None], axis=-1).max(-1)
    d1 = np.linalg.norm(cands - ends[:, None, ::-1], axis=-1).max(-1)
    lim = tol * lengths[:, None]
    return np.where(d0 <= lim, GOOD, np.where(d1 <= lim, OK, BAD))


def comparisons(classes, rng, label_noise: float = 0.0):
    """classes (S, K) -> pairs (S, P, 2) over K+1 candidates (index K = the annotator's action), codes (S, P)."""
    s, k = classes.shape
    pair_list = list(itertools.combinations(range(k), 2)) + [(k, j) for j in range(k)]
    pairs = np.broadcast_to(np.asarray(pair_list, np.int32), (s, len(pair_list), 2)).copy()
    full = np.concatenate([classes, np.full((s, 1), GOOD)], axis=1)
    c1 = np.take_along_axis(full, pairs[..., 0], axis=1)
    c2 = np.take_along_axis(full, pairs[..., 1], axis=1)
    codes = np.where(c1 < c2, FIRST_BETTER, np.where(c1 > c2, SECOND_BETTER,
                                                     np.where(c1 == BAD, NOT_COMPARABLE, EQUAL)))
    if label_noise > 0:
        flip = (rng.random(codes.shape) < label_noise) & (codes <= SECOND_BETTER)
        codes = np.where(flip, 1 - codes, codes)
    return pairs, codes.astype(np.int32)


def _sample(parent: Policy, points, key, num_samples, diff: DiffusionConfig, chunk: int = 64):
    out = []
    for i in range(0, len(points), chunk):
        out.append(np.asarray(sample_actions(
            parent.graphdef, parent.params, points[i:i + chunk], np.asarray(parent.norm.center, np.float32),
            np.asarray(parent.norm.scale, np.float32), jax.random.fold_in(key, i),
            num_samples=num_samples, diff=diff, runtime=parent.cfg.runtime)))
    return np.concatenate(out)


class ToyPreferenceData:
    """DPO batches over a fixed set of labelled states; a new permutation every epoch."""

    def __init__(self, arrays: dict, *, batch_size: int, seed: int, norm, process_index=0, process_count=1):
        if batch_size % process_count:
            raise ValueError(f"batch size {batch_size} is not divisible by {process_count} processes")
        self.arrays, self.batch_size, self.seed, self.norm = arrays, batch_size, seed, norm
        self.process_index, self.process_count = process_index, process_count
        self.num = len(arrays["points"])

    @classmethod
    def from_parent(cls, cfg: Config, parent: Policy, *, process_index=0, process_count=1):
        d = cfg.data
        rng = np.random.default_rng([d.seed, 4242])
        batch = toy.make_batch(rng, d.num_states, d.num_points)
        ends = batch["actions"][:, 0]
        collect = dataclasses.replace(parent.cfg.diffusion, eta=1.0)
        cands = _sample(parent, batch["points"], jax.random.key(d.seed + 4242),
                        cfg.preference.num_candidates, collect)
        classes = oracle_classes(cands, ends, batch["length"])
        pairs, codes = comparisons(classes, rng, d.label_noise)
        arrays = {
            "points": batch["points"],
            "candidates": np.concatenate([cands, ends[:, None]], axis=1).astype(np.float32),
            "pairs": pairs, "rankings": codes,
            "action_mask": np.ones((d.num_states, 2), np.float32),
        }
        return cls(arrays, batch_size=d.batch_size, seed=d.seed, norm=parent.norm,
                   process_index=process_index, process_count=process_count)

    def batch(self, step: int) -> dict:
        per_epoch = max(self.num // self.batch_size, 1)
        epoch, pos = divmod(step, per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num)
        idx = order[pos * self.batch_size:(pos + 1) * self.batch_size]
        n = self.batch_size // self.process_count
        idx = idx[self.process_index * n:(self.process_index + 1) * n]
        return {k: v[idx] for k, v in self.arrays.items()}

    def get_state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        del state

    def norm_stats(self):
        return self.norm

    @property
    def num_records(self) -> int:
        return self.num
