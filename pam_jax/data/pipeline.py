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

import dataclasses
import logging
import os
import pathlib
import threading
from typing import Iterator, Protocol

import numpy as np

from pam_jax import pointcloud as pc
from pam_jax.data import sources
from pam_jax.data import tasks as tasks_lib

log = logging.getLogger("pam_jax.data")

STATE_FORMAT = "pam_jax.data.pipeline/1"
NOT_COMPARABLE = 3


class TrainData(Protocol):
    def batch(self, step: int) -> dict[str, np.ndarray]: ...
    def get_state(self) -> dict: ...
    def set_state(self, state: dict) -> None: ...


# --------------------------------------------------------------------------- per sample


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """How one record becomes one fixed-shape training sample."""

    task: str
    kind: str = "supervised"
    num_points: int = 3000
    max_actions: int = 11             # M: executed action + up to 10 annotated poses
    max_candidate_points: int = 16    # Kp (finetune)
    max_pairs: int = 24               # P (finetune)
    # preprocessing of the stored cloud (pam_jax.pointcloud.preprocess)
    preprocess: bool = True
    xy_scale: float = 1.0
    voxel_size: float | None = None
    n_sigma: float | None = 3.0
    # augmentation (pam_jax.pointcloud.augment)
    augment: bool = True
    max_rotation_deg: float = 0.0
    depth_offset: float = 0.0
    swap_pick_prob: float = 0.0
    subsample_method: str = "random"

    def __post_init__(self):
        tasks_lib.get_task(self.task)
        tasks_lib.check_kind(self.kind)
        for name in ("num_points", "max_actions", "max_candidate_points", "max_pairs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if self.subsample_method not in ("random", "fps"):
            raise ValueError(f"subsample_method: expected 'random' or 'fps', got {self.subsample_method!r}")

    @property
    def frame_settings(self) -> dict:
        """The settings that fix the task frame (what the normalisation stats depend on)."""
        return {"preprocess": self.preprocess, "xy_scale": self.xy_scale, "n_sigma": self.n_sigma}

    @property
    def augmentation(self) -> dict:
        return {"max_rotation_deg": self.max_rotation_deg, "depth_offset": self.depth_offset,
                "swap_pick_prob": self.swap_pick_prob}


def sample_config(task: str, kind: str = "supervised", *, shapes: dict | None = None,
                  **overrides) -> SampleConfig:
    """The task's defaults (tasks.TASKS), padded sizes from the dataset ``shapes`` (see
    :func:`pam_jax.data.stats.dataset_shapes`), then ``overrides`` (as given: ``voxel_size=None``
    or ``n_sigma=None`` switch that step off)."""
    spec = tasks_lib.get_task(task)
    kw = dict(task=task, kind=kind, num_points=spec.num_points, xy_scale=spec.xy_scale,
              voxel_size=spec.voxel_size, **spec.augmentation)
    if shapes:
        kw["max_actions"] = max(1, 1 + int(shapes.get("max_multiple_actions", 10)))
        if kind == "finetune":
            kw["max_candidate_points"] = max(1, int(shapes.get("max_candidate_points", 16)))
            kw["max_pairs"] = max(1, int(shapes.get("max_pairs", 24)))
    unknown = set(overrides) - {f.name for f in dataclasses.fields(SampleConfig)}
    if unknown:
        raise ValueError(f"unknown pipeline settings {sorted(unknown)}")
    kw.update(overrides)
    return SampleConfig(**kw)


def record_arrays(record: dict, cfg: SampleConfig):
    """Record -> (points, actions (1+M, 2, 3), valid (1+M,), candidates (K, 3) or None),
    truncated to cfg.max_actions."""
    pts = np.asarray(record["points"], dtype=np.float32)
    acts = np.concatenate([np.asarray(record["action"], np.float32)[None],
                           np.asarray(record["multiple_actions"], np.float32).reshape(-1, 2, 3)])
    fin = np.concatenate([np.asarray(record["action_finite"], bool)[None],
                          np.asarray(record["multiple_actions_finite"], bool).reshape(-1, 2)])
    valid = fin.all(-1)
    acts, valid = acts[: cfg.max_actions], valid[: cfg.max_actions]
    cands = None
    if cfg.kind == "finetune":
        cands = np.asarray(record["candidate_points"], np.float32).reshape(-1, 3)
    return pts, acts, valid, cands


def to_task_frame(pts, acts, cands, cfg: SampleConfig, *, voxel: bool = True):
    """Step 1: the deterministic preprocessing (identity when cfg.preprocess is False)."""
    if not cfg.preprocess:
        return pts, acts, cands
    extra = (cands,) if cands is not None else ()
    cloud, out, _ = pc.preprocess(pts, (acts,) + extra, xy_scale=cfg.xy_scale,
                                  voxel_size=cfg.voxel_size if voxel else None, n_sigma=cfg.n_sigma)
    return cloud, out[0], (out[1] if cands is not None else None)


@dataclasses.dataclass
class Prepared:
    """The deterministic part of a sample (record decoded, cloud and actions in the task
    frame); cacheable, since it depends only on the record and the frame settings."""

    points: np.ndarray                  # (N', 3) task frame
    actions: np.ndarray                 # (<=M, 2, 3) task frame, executed action first
    valid: np.ndarray                   # (<=M,) bool
    episode_id: int
    candidates: np.ndarray | None = None    # (K, 3) task frame
    pair_indices: np.ndarray | None = None  # (P, 4) int32
    rankings: np.ndarray | None = None      # (P,) int32

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.points, self.actions, self.valid, self.candidates,
                                       self.pair_indices, self.rankings) if a is not None)


def prepare(record: dict, cfg: SampleConfig) -> Prepared:
    pts, acts, valid, cands = record_arrays(record, cfg)
    pts, acts, cands = to_task_frame(pts, acts, cands, cfg)
    prep = Prepared(pts, acts, valid, int(record["episode_id"]), cands)
    if cfg.kind == "finetune":
        prep.pair_indices = np.asarray(record["pair_indices"], np.int32).reshape(-1, 4)
        prep.rankings = np.asarray(record["rankings"], np.int32).reshape(-1)
    return prep


def finish(prep: Prepared, cfg: SampleConfig, rng: np.random.Generator | None) -> dict:
    """Steps 2-3 (subsample, augment) and padding to the fixed shapes."""
    pts, acts, valid, cands = prep.points, prep.actions, prep.valid, prep.candidates
    sub_rng = rng if rng is not None else np.random.default_rng(0)
    pts = pc.subsample(pts, cfg.num_points, sub_rng, method=cfg.subsample_method)
    if cfg.augment and rng is not None:
        extra = ()
        if cands is not None:
            extra = (cands.reshape(-1, 2, 3) if cands.shape[0] % 2 == 0 else cands,)
        pts, out = pc.augment(pts, (acts,) + extra, rng=rng, **cfg.augmentation)
        acts = out[0]
        if cands is not None:
            cands = out[1].reshape(-1, 3)

    m = cfg.max_actions
    actions = np.zeros((m, 2, 3), np.float32)
    action_valid = np.zeros((m,), bool)
    n = acts.shape[0]
    actions[:n] = np.where(valid[:, None, None], acts, 0.0)
    action_valid[:n] = valid
    out = {
        "points": np.ascontiguousarray(pts, dtype=np.float32),
        "actions": actions,
        "action_valid": action_valid,
        "action_mask": np.ones((2,), np.float32),
        "episode_id": np.int32(prep.episode_id),
    }
    if cfg.kind == "finetune":
        kp, pmax = cfg.max_candidate_points, cfg.max_pairs
        cand_out = np.zeros((kp, 3), np.float32)
        cand_valid = np.zeros((kp,), bool)
        k = min(kp, cands.shape[0])
        cand_out[:k], cand_valid[:k] = cands[:k], True
        pairs, ranks = prep.pair_indices[:pmax], prep.rankings[:pmax]
        # points k0, k0+1 name the annotator's action: it becomes candidate kp/2 (points kp, kp+1)
        k0 = cands.shape[0]
        annotator = (pairs >= k0) & (pairs < k0 + 2)
        pairs = np.where(annotator, pairs - k0 + kp, pairs)
        ok = ((pairs < k) | annotator).all(-1)                          # truncated candidates -> 3
        ranks = np.where(ok, ranks, NOT_COMPARABLE)
        pairs = np.where(ok[:, None], pairs, 0)
        pair_out = np.zeros((pmax, 4), np.int32)
        rank_out = np.full((pmax,), NOT_COMPARABLE, np.int32)
        pair_out[: pairs.shape[0]], rank_out[: ranks.shape[0]] = pairs, ranks
        out.update(candidate_points=cand_out, candidate_valid=cand_valid,
                   pair_indices=pair_out, rankings=rank_out)
    return out


def make_sample(record: dict, cfg: SampleConfig, rng: np.random.Generator | None) -> dict:
    """One record -> one fixed-shape sample (see the module docstring for the keys).

    ``rng`` drives subsampling and augmentation; with ``rng=None`` nothing random happens
    except the subsampling, which then uses a fixed generator (evaluation)."""
    return finish(prepare(record, cfg), cfg, rng)


def stack(samples) -> dict[str, np.ndarray]:
    return {k: np.stack([s[k] for s in samples]) for k in samples[0]}


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

        from pam_jax.data import stats as stats_lib
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

    def steps_per_epoch(self) -> float:
        return self.num_records / self.global_batch_size

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
        from pam_jax.data import stats as stats_lib
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
    from pam_jax.data import stats as stats_lib
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
