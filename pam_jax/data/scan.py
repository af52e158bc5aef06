"""Scan a folder of samples in the DeformPAM layout: validate each, report the ones skipped,
and split the valid ones by episode (no episode in two splits).

Used by the TFDS builder (``pam_jax.data_builders.deformpam``) before it writes anything, so that the
split assignment and the report of skipped samples are complete before generation starts.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import pathlib

import numpy as np

from pam_jax import tasks as tasks_lib
from pam_jax.data import layout

log = logging.getLogger("pam_jax.data")

SPLITS = ("train", "validation", "test")
DEFAULT_RATIOS = (8, 1, 1)


@dataclasses.dataclass
class ScanResult:
    src: str
    task: str
    kind: str
    found: int
    valid: list[tuple[pathlib.Path, str, int]]        # (sample_dir, sample_id, episode_id)
    skipped: list[dict]                                # {"sample", "reason", "category"}
    action_types: dict[str, int]

    @property
    def malformed(self) -> list[dict]:
        return [s for s in self.skipped if s["category"] == "malformed"]

    @property
    def filtered(self) -> list[dict]:
        return [s for s in self.skipped if s["category"] == "filtered"]


def scan(src, *, task: str, kind: str, strict: bool = False, namespace: str | None = None,
         progress: bool = False) -> ScanResult:
    """Read and validate every sample under ``src``.

    Malformed samples are skipped with a warning naming each (``strict=True``: the first one
    raises :class:`layout.MalformedSample`). Samples of another action type than the task's
    primitive are skipped too (reported as ``filtered``; never an error)."""
    tasks_lib.get_data_task(task)
    tasks_lib.check_kind(kind)
    src = pathlib.Path(src)
    dirs = layout.find_samples(src)
    if not dirs:
        raise FileNotFoundError(f"{src}: no samples (folders holding {layout.METADATA}) found")
    it = dirs
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(dirs, desc=f"checking {task}_{kind} samples", unit="sample")
    valid, skipped, types = [], [], collections.Counter()
    for d in it:
        try:
            s = layout.read_sample(d, root=src, task=task, kind=kind, namespace=namespace)
        except layout.FilteredSample as e:
            skipped.append({"sample": e.sample, "reason": e.reason, "category": "filtered"})
            continue
        except layout.MalformedSample as e:
            if strict:
                raise
            log.warning("skipping malformed sample %s", e)
            skipped.append({"sample": e.sample, "reason": e.reason, "category": "malformed"})
            continue
        valid.append((d, s.sample_id, s.episode_id))
        types[s.action_type] += 1
    res = ScanResult(str(src), task, kind, len(dirs), valid, skipped, dict(types))
    if res.malformed:
        log.warning("skipped %d malformed sample(s) of %d under %s: %s", len(res.malformed),
                    len(dirs), src, ", ".join(s["sample"] for s in res.malformed))
    if res.filtered:
        log.info("left out %d sample(s) of other action types than %r", len(res.filtered),
                 tasks_lib.get_data_task(task).primitive)
    if not valid:
        raise ValueError(f"{src}: none of the {len(dirs)} samples is usable for {task}_{kind} "
                         f"(first problem: {skipped[0]['sample']}: {skipped[0]['reason']})")
    return res


def split_episodes(episodes, *, seed: int = 0, ratios=DEFAULT_RATIOS) -> dict[str, list[int]]:
    """Assign whole episodes to train/validation/test in the given ratios (8:1:1).

    Episodes are sorted, permuted with ``seed``, and cut: validation and test get
    floor(n * ratio) episodes each (at least one when n >= 3), train the rest."""
    eps = sorted(set(int(e) for e in episodes))
    if len(ratios) != 3 or min(ratios) < 0 or sum(ratios) <= 0:
        raise ValueError(f"split ratios: expected three non-negative numbers, got {ratios!r}")
    r = np.asarray(ratios, dtype=np.float64) / float(sum(ratios))
    n = len(eps)
    order = [eps[i] for i in np.random.default_rng(seed).permutation(n)]
    n_val, n_test = int(np.floor(n * r[1])), int(np.floor(n * r[2]))
    if n >= 3:
        n_val = max(n_val, 1) if r[1] > 0 else 0
        n_test = max(n_test, 1) if r[2] > 0 else 0
    n_train = n - n_val - n_test
    return {"train": sorted(order[:n_train]),
            "validation": sorted(order[n_train:n_train + n_val]),
            "test": sorted(order[n_train + n_val:])}


def assign_splits(result: ScanResult, *, seed: int = 0, ratios=DEFAULT_RATIOS
                  ) -> dict[str, list[tuple[pathlib.Path, str, int]]]:
    """-> {split: [(sample_dir, sample_id, episode_id), ...]} ordered by (episode, sample id)."""
    eps = split_episodes([e for _, _, e in result.valid], seed=seed, ratios=ratios)
    where = {e: name for name, lst in eps.items() for e in lst}
    out = {name: [] for name in SPLITS}
    for item in sorted(result.valid, key=lambda t: (t[2], t[1])):
        out[where[item[2]]].append(item)
    return out
