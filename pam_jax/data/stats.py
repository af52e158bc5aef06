"""Dataset statistics stored beside a built dataset (``pam_jax_stats.json``).

- ``shapes``: the largest number of annotated poses (M), candidate points (K) and ranked
  pairs (P) of any record, and the cloud sizes; the pipeline pads to these.
- ``norm``: :class:`pam_jax.normalize.NormStats` fitted once to every valid action point of
  the train split, in the task frame of the pipeline (after ``preprocess``), widened to cover
  the task's augmentation (every z-rotation in the range and the depth offset), so augmented
  actions stay inside [-1, 1] after normalisation. Entries are keyed by the settings they
  depend on; a pipeline with other settings computes (and stores) its own entry.

Both are computed on first use when missing (e.g. a dataset built with ``tfds build``), and
written atomically; a read-only dataset folder just skips the caching.
"""
from __future__ import annotations

import json
import math
import pathlib

import numpy as np

from pam_jax.data import sources
from pam_jax.data.io import read_json, write_json_atomic
from pam_jax.data.sample import record_arrays, sample_config, to_task_frame
from pam_jax.normalize import NormStats

STATS_FILE = "pam_jax_stats.json"
STATS_FORMAT = 1


def _load(ds_dir: pathlib.Path) -> dict:
    data = read_json(ds_dir / STATS_FILE)
    if not isinstance(data, dict) or data.get("format") != STATS_FORMAT:
        data = {"format": STATS_FORMAT}
    return data


def _save(ds_dir: pathlib.Path, key: str, value) -> None:
    data = _load(ds_dir)  # re-read: another process may have added entries
    if key == "norm":
        data.setdefault("norm", {}).update(value)
    else:
        data[key] = value
    write_json_atomic(ds_dir / STATS_FILE, data)


def compute_shapes(ds_dir) -> dict:
    ds_dir = pathlib.Path(ds_dir)
    m = k = p = 0
    n_min, n_max, n_sum, count = math.inf, 0, 0, 0
    for split in sources.split_sizes(ds_dir):
        src = sources.open_source(ds_dir, split)
        for i in range(len(src)):
            r = src[i]
            n = int(np.shape(r["points"])[0])
            n_min, n_max, n_sum, count = min(n_min, n), max(n_max, n), n_sum + n, count + 1
            m = max(m, int(np.shape(r["multiple_actions"])[0]))
            if "candidate_points" in r:
                k = max(k, int(np.shape(r["candidate_points"])[0]))
                p = max(p, int(np.shape(r["rankings"])[0]))
    out = {"records": count, "max_multiple_actions": m, "min_points": int(n_min) if count else 0,
           "max_points": n_max, "mean_points": n_sum / max(count, 1)}
    if k:
        out.update(max_candidate_points=k, max_pairs=p)
    return out


def dataset_shapes(ds_dir) -> dict:
    """Padded-size statistics of a built dataset (computed once, then cached)."""
    ds_dir = pathlib.Path(ds_dir)
    shapes = _load(ds_dir).get("shapes")
    if not shapes:
        shapes = compute_shapes(ds_dir)
        _save(ds_dir, "shapes", shapes)
    return shapes


def _settings(config) -> dict:
    return {**config.frame_settings, **config.augmentation}


def augmentation_envelope(points: np.ndarray, *, max_rotation_deg: float = 0.0,
                          depth_offset: float = 0.0, num_angles: int = 73, **_) -> np.ndarray:
    """The extreme copies of ``points`` (n, 3) under every augmentation in range: rotations
    about z at ``num_angles`` angles across +-max_rotation_deg, z shifted by +-depth_offset."""
    p = np.asarray(points, np.float64).reshape(-1, 3)
    angles = np.deg2rad(np.linspace(-max_rotation_deg, max_rotation_deg, num_angles)) \
        if max_rotation_deg > 0 else np.zeros(1)
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    x = c * p[None, :, 0] - s * p[None, :, 1]
    y = s * p[None, :, 0] + c * p[None, :, 1]
    z = np.broadcast_to(p[None, :, 2], x.shape)
    rot = np.stack([x, y, z], -1).reshape(-1, 3)
    if depth_offset > 0:
        rot = np.concatenate([rot + [0, 0, depth_offset], rot - [0, 0, depth_offset]])
    return rot


def action_points(ds_dir, config, *, split: str = "train", progress: bool = False) -> np.ndarray:
    """Every valid action point of ``split``, in the pipeline's task frame (n, 3)."""
    src = sources.open_source(ds_dir, split)
    it = range(len(src))
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc="normalisation statistics", unit="sample")
    out = []
    for i in it:
        pts, acts, valid, _ = record_arrays(src[i], config)
        _, acts, _ = to_task_frame(pts, acts, None, config, voxel=False)
        out.append(acts[valid].reshape(-1, 3))
    return np.concatenate(out) if out else np.zeros((0, 3), np.float32)


def load_norm_stats(ds_dir, *, config=None, progress: bool = False) -> NormStats:
    """The normalisation statistics of a built dataset for the pipeline ``config``
    (default: the task's defaults). Computed from the train split on first use and stored."""
    ds_dir = pathlib.Path(ds_dir)
    if config is None:
        task, kind = sources.task_kind_of(ds_dir)
        config = sample_config(task, kind)
    settings = _settings(config)
    key = json.dumps(settings, sort_keys=True)
    entry = _load(ds_dir).get("norm", {}).get(key)
    if entry:
        return NormStats.from_dict(entry)
    pts = action_points(ds_dir, config, progress=progress)
    norm = NormStats.from_actions(augmentation_envelope(pts, **config.augmentation))
    _save(ds_dir, "norm", {key: {**norm.to_dict(), "settings": settings}})
    return norm
