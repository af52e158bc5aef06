"""One record -> one fixed-shape sample: the per-sample half of the data pipeline.

:class:`SampleConfig` fixes how a record of a built dataset is decoded, put in the task frame
(:func:`pam_jax.pointcloud.preprocess`), subsampled, augmented and padded. The batched,
resumable reader over a whole split is :mod:`pam_jax.data.pipeline`; the statistics stored
beside a dataset (:mod:`pam_jax.data.stats`) use the same per-sample functions.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pam_jax import pointcloud as pc
from pam_jax import tasks as tasks_lib
from pam_jax.preference import NOT_COMPARABLE


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
        tasks_lib.get_data_task(self.task)
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
    spec = tasks_lib.get_data_task(task)
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
