"""The input pipeline: TFDS data source -> grain -> process-local numpy batches.

Order and randomness are pure functions of ``(seed, global sample position)``:

- the global stream is an endless sequence of epochs; epoch ``e`` visits every record once in
  the order ``permutation(seed, e)``; global step ``s`` holds positions
  ``[s * B, (s + 1) * B)`` of the stream (B = the global batch size);
- process ``i`` of ``n`` takes positions ``[s * B + i * B/n, s * B + (i + 1) * B/n)``;
- the subsampling and augmentation of position ``p`` draw from ``default_rng([seed, p, 1])``.

So ``batch(step)`` is random access: a resumed run (``set_state``), a different number of
processes, or a different number of worker threads all see exactly the same samples. grain
does the per-sample work in parallel threads (``grain.MapDataset`` -> ``to_iter_dataset``
with ``ReadOptions``) and prefetches ahead of the training step.

Per sample (numpy, :mod:`pam_jax.pointcloud`):

1. ``preprocess`` (outlier removal, bbox zero-centring, xy scale, voxel downsampling) of the
   stored cloud, with every action and candidate point mapped through the same frame;
2. ``subsample`` to ``num_points``;
3. ``augment`` (z-rotation, depth offset, fling pick swap) of cloud, actions and candidates
   together (candidates swap pairwise, so candidate k stays points 2k, 2k+1).

Step 1 is deterministic, so its result is kept in memory (``cache_bytes``, 2 GiB by default):
after the first epoch a sample costs only steps 2-3.

Batch (``B`` = process-local batch size):

==================  ===================  =====================================================
key                 shape, dtype         meaning
==================  ===================  =====================================================
points              (B, Np, 3) float32   cloud in the task frame (not normalised)
actions             (B, M, 2, 3) f32     executed action first, then the annotated poses;
                                         zero rows where not valid
action_valid        (B, M) bool          a real pose with both points finite in the file
action_mask         (B, 2) float32       1.0 for the action points the primitive uses
episode_id          (B,) int32
record_index        (B,) int32           index of the record in the split
candidate_points    (B, Kp, 3) f32       finetune: candidate points (candidate k = 2k, 2k+1)
candidate_valid     (B, Kp) bool         finetune
pair_indices        (B, P, 4) int32      finetune: [p1_a, p1_b, p2_a, p2_b] into candidates;
                                         Kp, Kp+1 = the annotator's action (actions[:, 0])
rankings            (B, P) int32         finetune: 0/1/2, padded with 3 (not comparable)
==================  ===================  =====================================================
"""
from __future__ import annotations

import logging
import os
import pathlib
import threading
from typing import Iterator

import numpy as np

from pam_jax.data import sources
from pam_jax.data import stats as stats_lib
from pam_jax.data.sample import Prepared, finish, make_sample, prepare, sample_config, stack

log = logging.getLogger("pam_jax.data")

STATE_FORMAT = "pam_jax.data.pipeline/1"

# --------------------------------------------------------------------------- training data


def _check_int(v, name, lo=0):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
    return int(v)


class DeformPAMData:
    """Process-local training batches over one split of a built dataset (a ``TrainData``).

    ``batch(step)`` returns this process's slice of global batch ``step``; it may be called with
    any step (random access), and is fastest for consecutive steps, which it prefetches.
    ``get_state()``/``set_state()`` carry the next step plus what fixes the order (seed,
    global batch size, number of records), JSON-serialisable for checkpoints."""

    def __init__(self, dataset_dir, *, batch_size: int, split: str = "train", seed: int = 0,
                 process_index: int = 0, process_count: int = 1,
                 num_threads: int | None = None, prefetch: int | None = None,
                 cache_bytes: int = 2 << 30, **sample_overrides):
        self.dataset_dir = pathlib.Path(dataset_dir)
        self.task, self.kind = sources.task_kind_of(self.dataset_dir)
        self.split = split
        self.global_batch_size = _check_int(batch_size, "batch_size", 1)
        self.seed = _check_int(seed, "seed")
        self.process_count = _check_int(process_count, "process_count", 1)
        self.process_index = _check_int(process_index, "process_index")
        if self.process_index >= self.process_count:
            raise ValueError(f"process_index {process_index} >= process_count {process_count}")
        if self.global_batch_size % self.process_count:
            raise ValueError(f"batch size {batch_size} is not divisible by {process_count} processes")
        self.local_batch_size = self.global_batch_size // self.process_count

        shapes = stats_lib.dataset_shapes(self.dataset_dir)
        self.config = sample_config(self.task, self.kind, shapes=shapes, **sample_overrides)
        if shapes and 1 + shapes.get("max_multiple_actions", 0) > self.config.max_actions:
            log.info("max_actions=%d keeps the executed action and the first %d annotated poses "
                     "(the data has up to %d)", self.config.max_actions, self.config.max_actions - 1,
                     shapes["max_multiple_actions"])
        self.source = sources.open_source(self.dataset_dir, split)
        self.num_records = len(self.source)
        if self.num_records == 0:
            raise ValueError(f"{self.dataset_dir}: split {split!r} is empty")
        self.num_threads = num_threads if num_threads is not None else min(16, os.cpu_count() or 1)
        self.prefetch = prefetch if prefetch is not None else max(2 * self.local_batch_size, 32)
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[int, Prepared] = {}
        self._cached_bytes = 0
        self._perms: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self._next_step = 0
        self._iter = None
        self._iter_step = None

    # -- order

    def _permutation(self, epoch: int) -> np.ndarray:
        with self._lock:
            perm = self._perms.get(epoch)
            if perm is None:
                perm = np.random.default_rng([self.seed, epoch, 0]).permutation(self.num_records)
                if len(self._perms) >= 4:
                    self._perms.pop(next(iter(self._perms)))
                self._perms[epoch] = perm
            return perm

    def position(self, step: int, j: int) -> int:
        """Global stream position of local sample ``j`` of global step ``step``."""
        return step * self.global_batch_size + self.process_index * self.local_batch_size + j

    def record_index(self, position: int) -> int:
        epoch, i = divmod(int(position), self.num_records)
        return int(self._permutation(epoch)[i])

    # -- samples

    def sample_at(self, position: int) -> dict:
        """The processed sample at a global stream position (deterministic)."""
        idx = self.record_index(position)
        rng = np.random.default_rng([self.seed, int(position), 1])
        out = finish(self._prepared(idx), self.config, rng)
        out["record_index"] = np.int32(idx)
        return out

    def _prepared(self, idx: int) -> Prepared:
        """Decoded, task-frame record; kept in memory up to ``cache_bytes`` (the result is
        the same with or without the cache: preprocessing is deterministic)."""
        prep = self._cache.get(idx)
        if prep is None:
            prep = prepare(self.source[idx], self.config)
            if self._cached_bytes + prep.nbytes <= self.cache_bytes:
                with self._lock:
                    if idx not in self._cache:
                        self._cache[idx] = prep
                        self._cached_bytes += prep.nbytes
        return prep

    def _local(self, q: int) -> dict:
        step, j = divmod(int(q), self.local_batch_size)
        return self.sample_at(self.position(step, j))

    def _make_iter(self, start_step: int):
        import grain

        lb = self.local_batch_size
        ds = grain.MapDataset.range(start_step * lb, (start_step + 2**40) * lb).map(self._local)
        opts = grain.ReadOptions(num_threads=max(1, self.num_threads),
                                 prefetch_buffer_size=max(1, self.prefetch))
        it = ds.to_iter_dataset(opts).batch(lb, drop_remainder=True, batch_fn=stack)
        return iter(it)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        step = _check_int(step, "step")
        if self._iter is None or self._iter_step != step:
            self._iter = self._make_iter(step)
            self._iter_step = step
        out = next(self._iter)
        self._iter_step = step + 1
        self._next_step = step + 1
        return out

    def batch_direct(self, step: int) -> dict[str, np.ndarray]:
        """The same batch as ``batch(step)``, computed in this thread (no prefetch)."""
        return stack([self.sample_at(self.position(step, j)) for j in range(self.local_batch_size)])

    # -- state

    def get_state(self) -> dict:
        return {"format": STATE_FORMAT, "next_step": self._next_step, "seed": self.seed,
                "global_batch_size": self.global_batch_size, "num_records": self.num_records,
                "split": self.split}

    def set_state(self, state: dict) -> None:
        if not state:
            return
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"data state: not a {STATE_FORMAT} state: {state!r}"[:200])
        mine = self.get_state()
        for key in ("seed", "global_batch_size", "num_records", "split"):
            if state.get(key) != mine[key]:
                raise ValueError(f"data state: saved with {key}={state.get(key)!r}, this pipeline "
                                 f"has {key}={mine[key]!r}; the data order would not continue")
        self._next_step = _check_int(state.get("next_step"), "data state next_step")
        self._iter = None

    # -- misc

    def norm_stats(self):
        return stats_lib.load_norm_stats(self.dataset_dir, config=self.config)

    def close(self) -> None:
        self._iter = None

    def __repr__(self):
        return (f"DeformPAMData({self.dataset_dir}, split={self.split!r}, records={self.num_records}, "
                f"batch={self.global_batch_size} ({self.local_batch_size} on process "
                f"{self.process_index}/{self.process_count}), points={self.config.num_points})")


def make_train_data(data_dir, *, task: str | None = None, kind: str | None = None,
                    dataset: str | None = None, **kwargs) -> DeformPAMData:
    """Open ``deformpam/<task>_<kind>`` under a TFDS ``data_dir`` (or a dataset folder, or
    ``dataset='deformpam/rope_supervised'``) as a :class:`DeformPAMData`."""
    if dataset is None and task is not None:
        dataset = f"{sources.BUILDER_NAME}/{task}_{kind or 'supervised'}"
    ds_dir = sources.resolve_dataset_dir(data_dir, dataset)
    return DeformPAMData(ds_dir, **kwargs)


def from_config(cfg, *, process_index: int = 0, process_count: int = 1) -> DeformPAMData:
    """From ``pam_jax.config.Config``: ``data.data_dir``, ``data.dataset`` (e.g.
    ``"deformpam/rope_supervised"``), ``data.split``, ``data.batch_size`` (global),
    ``data.num_points`` (0: the task's 3000/3500), ``data.max_poses`` (M, executed action
    included; 0: all poses of the dataset), ``data.seed``. ``data.task``, when set, must
    match the dataset's task."""
    d = cfg.data
    if not d.dataset:
        raise ValueError("data.dataset is empty: set it to e.g. 'deformpam/rope_supervised'")
    ds_dir = sources.resolve_dataset_dir(d.data_dir or None, d.dataset)
    task, _ = sources.task_kind_of(ds_dir)
    if d.task and d.task != task:
        raise ValueError(f"data.task={d.task!r} but {ds_dir} holds task {task!r}")
    overrides = {}
    if d.num_points > 0:
        overrides["num_points"] = d.num_points
    if d.max_poses > 0:
        overrides["max_actions"] = d.max_poses
    return DeformPAMData(ds_dir, batch_size=d.batch_size, split=d.split, seed=d.seed,
                         process_index=process_index, process_count=process_count, **overrides)


def eval_batches(dataset_dir, *, split: str = "validation", batch_size: int = 32,
                 seed: int = 0, **sample_overrides) -> Iterator[dict[str, np.ndarray]]:
    """One pass over a split in record order, no augmentation, deterministic subsampling;
    the last batch may be smaller. Each batch also holds ``record_index``."""
    ds_dir = pathlib.Path(dataset_dir)
    task, kind = sources.task_kind_of(ds_dir)
    cfg = sample_config(task, kind, shapes=stats_lib.dataset_shapes(ds_dir),
                        **{"augment": False, **sample_overrides})
    src = sources.open_source(ds_dir, split)
    buf = []
    for i in range(len(src)):
        s = make_sample(src[i], cfg, np.random.default_rng([seed, i, 2]))
        s["record_index"] = np.int32(i)
        buf.append(s)
        if len(buf) == batch_size:
            yield stack(buf)
            buf = []
    if buf:
        yield stack(buf)
