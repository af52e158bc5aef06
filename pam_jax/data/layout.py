"""The DeformPAM sample-folder layout: a strict reader and an atomic writer.

One sample is one folder ``<root>/<sample_id>/``::

    metadata.yaml                       # {<namespace>: {episode_idx, tag, action, pcd, pose_virtual?, annotation?}}
    annotation.yaml                     # present <=> the sample is annotated (written last)
    observations/<obs>/pcd/processed_begin.npz   # key "points", (N, 3) float16
    observations/<obs>/pcd/raw_begin.npz         # optional here

``pcd.processed.begin`` is a path relative to the sample folder; the ``.npz`` suffix may be
omitted. ``annotation.action_poses`` is 4 x 6 (rows: left pick, right pick, left place, right
place; NaN where unused), ``annotation.multiple_action_poses`` is M x 4 x 6, and finetune
samples add ``pose_virtual.prediction.begin`` (K x 6 candidate points, candidate k = points
2k and 2k+1), ``annotation.selected_grasp_point_indices`` (P x 4) and
``annotation.grasp_point_rankings`` (P). See docs/method.md, "The published data layout".

The published data and the data this project generates (simulated demonstrations, rollouts
waiting for annotation, oracle or human preferences) share this layout, so one TFDS builder
(``pam_jax.data_builders.deformpam``) serves both. :func:`write_sample` and :func:`add_annotation`
never leave a half-written sample behind: a sample folder is assembled under a hidden temporary
name and renamed into place in one ``os.replace``; ``annotation.yaml`` is always the last file
to appear. Readers ignore hidden folders, so leftovers of a crash are never read.

Clouds are stored as the segmented object points in the table frame (metres). The task frame
(zero-centred, xy scaled) is produced at load time by :func:`pam_jax.pointcloud.preprocess`,
the same function the policy applies to live observations.
"""
from __future__ import annotations

import dataclasses
import io
import os
import pathlib
import re
import shutil
import uuid
import zipfile

import numpy as np
import yaml

from pam_jax import tasks as tasks_lib

METADATA = "metadata.yaml"
ANNOTATION = "annotation.yaml"
PROCESSED_KEY = ("pcd", "processed", "begin")
RAW_KEY = ("pcd", "raw", "begin")
CANDIDATE_KEY = ("pose_virtual", "prediction", "begin")
RANKING_CODES = (0, 1, 2, 3)  # 0 pair 1 better, 1 pair 2 better, 2 equal, 3 not comparable
# Clouds and poses are metres in the table frame: a coordinate beyond this is another unit or a
# corrupt value (1e30 would make the normalisation scale 1e30), and the sample is skipped.
MAX_ABS_COORD = 100.0
_SAMPLE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class SampleError(ValueError):
    """A sample that the builder does not turn into an example; ``str()`` is one line."""

    def __init__(self, sample: str, reason: str):
        self.sample, self.reason = str(sample), str(reason)
        super().__init__(f"{self.sample}: {self.reason}")


class MalformedSample(SampleError):
    """Missing/unreadable files, missing keys, shapes that do not match, not annotated."""


class FilteredSample(SampleError):
    """A well-formed sample that the task does not use (another action type)."""


@dataclasses.dataclass
class Sample:
    """One parsed sample. Poses keep the row order of the file; NaN became 0 (as the
    reference reader does) and ``*_finite`` records which points were finite."""

    sample_id: str
    episode_id: int
    action_type: str
    points: np.ndarray                    # (N, 3) float32
    action: np.ndarray                    # (2, 3) float32: the two rows used by the task
    action_finite: np.ndarray             # (2,) bool
    multiple_actions: np.ndarray          # (M, 2, 3) float32
    multiple_actions_finite: np.ndarray   # (M, 2) bool
    candidate_points: np.ndarray | None = None   # (K, 3) float32, finetune
    pair_indices: np.ndarray | None = None       # (P, 4) int32, finetune
    rankings: np.ndarray | None = None           # (P,) int32, finetune

    @property
    def num_valid_actions(self) -> int:
        return int(self.action_finite.all()) + int(self.multiple_actions_finite.all(-1).sum())


# --------------------------------------------------------------------------- discovery


def find_samples(root) -> list[pathlib.Path]:
    """Every folder under ``root`` that holds a ``metadata.yaml`` (not descending into
    samples; hidden folders, e.g. a writer's temporary ones, are ignored), sorted by path."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if METADATA in filenames:
            found.append(pathlib.Path(dirpath))
            dirnames[:] = []
    return sorted(found)


def sample_id_of(sample_dir, root) -> str:
    rel = pathlib.Path(sample_dir).resolve().relative_to(pathlib.Path(root).resolve())
    return rel.as_posix() if rel.parts else pathlib.Path(sample_dir).name


# --------------------------------------------------------------------------- reading


def _get(d, path, sid, what=None):
    cur = d
    for i, k in enumerate(path):
        if not isinstance(cur, dict) or k not in cur:
            raise MalformedSample(sid, f"missing key {what or '.'.join(path[: i + 1])}")
        cur = cur[k]
    return cur


def _load_yaml(path: pathlib.Path, sid: str):
    try:
        with open(path, "r", encoding="utf-8") as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise MalformedSample(sid, f"missing {path.name}") from None
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MalformedSample(sid, f"unreadable {path.name} ({first})") from None


def read_metadata(sample_dir, *, namespace: str | None = None, sid: str | None = None
                  ) -> tuple[str, dict]:
    """-> (namespace, the dict under it). metadata.yaml has one top-level namespace key."""
    sample_dir = pathlib.Path(sample_dir)
    sid = sid or sample_dir.name
    meta = _load_yaml(sample_dir / METADATA, sid)
    if not isinstance(meta, dict) or not meta:
        raise MalformedSample(sid, f"{METADATA} is not a mapping with a namespace key")
    if namespace is None:
        if len(meta) != 1:
            raise MalformedSample(sid, f"{METADATA} has {len(meta)} top-level keys "
                                       f"{sorted(map(str, meta))}; pass a namespace")
        namespace = next(iter(meta))
    if namespace not in meta:
        raise MalformedSample(sid, f"{METADATA} has no namespace {namespace!r}")
    body = meta[namespace]
    if not isinstance(body, dict):
        raise MalformedSample(sid, f"{METADATA}: namespace {namespace!r} is not a mapping")
    return str(namespace), body


def none_to_nan(x):
    """Nested YAML lists with None (a NaN written by YAML as null) -> the same lists with NaN."""
    if x is None:
        return float("nan")
    if isinstance(x, (list, tuple)):
        return [none_to_nan(v) for v in x]
    return x


def dump_yaml(data) -> str:
    """The YAML text every writer of the layout uses (key order kept)."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True)


def _float_array(value, sid: str, name: str, ndim: int, tail: tuple) -> np.ndarray:
    """Parse nested lists (None -> NaN) into float64 with ``ndim`` axes whose trailing sizes
    match ``tail``: None = any size, an int k = exactly k, ``("ge", k)`` = at least k."""

    def dim(t):
        return 0 if t is None else (t if isinstance(t, int) else t[1])

    def show(t):
        return "*" if t is None else (str(t) if isinstance(t, int) else f">={t[1]}")

    try:
        a = np.asarray(none_to_nan(value), dtype=np.float64)
    except (TypeError, ValueError):
        raise MalformedSample(sid, f"{name}: not a rectangular numeric array") from None
    if a.size == 0 and a.ndim < ndim:  # [] stands for an empty list of poses
        a = a.reshape([0] * (ndim - len(tail)) + [dim(t) for t in tail])
    want = "(" + ", ".join(["*"] * (ndim - len(tail)) + [show(t) for t in tail]) + ")"
    if a.ndim != ndim:
        raise MalformedSample(sid, f"{name}: expected shape {want}, got {a.shape}")
    for size, t in zip(a.shape[ndim - len(tail):], tail):
        if (isinstance(t, int) and size != t) or (isinstance(t, tuple) and size < t[1]):
            raise MalformedSample(sid, f"{name}: expected shape {want}, got {a.shape}")
    return a


def _int_array(value, sid: str, name: str, ndim: int, tail: tuple) -> np.ndarray:
    a = _float_array(value, sid, name, ndim, tail)
    if a.size and (not np.isfinite(a).all() or (a != np.round(a)).any()):
        raise MalformedSample(sid, f"{name}: expected integers")
    return a.astype(np.int64)


def resolve_npz(sample_dir: pathlib.Path, rel) -> pathlib.Path | None:
    """The file a metadata path names: as written, else with ``.npz`` appended."""
    if not isinstance(rel, str) or not rel:
        return None
    p = sample_dir / rel
    if p.is_file():
        return p
    q = sample_dir / (rel + ".npz")
    return q if q.is_file() else None


def load_points(path: pathlib.Path, sid: str, name: str = "points") -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "points" not in z.files:
                raise MalformedSample(sid, f"{path.name}: no 'points' array (has {z.files})")
            pts = z["points"]
    except MalformedSample:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise MalformedSample(sid, f"unreadable {path.name} ({type(e).__name__})") from None
    if pts.dtype.kind not in "fiu":
        raise MalformedSample(sid, f"{name}: dtype {pts.dtype} is not numeric")
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise MalformedSample(sid, f"{name}: expected shape (N, 3), got {pts.shape}")
    if pts.shape[0] == 0:
        raise MalformedSample(sid, f"{name}: empty cloud")
    pts = pts.astype(np.float32)
    bad = int(pts.size - np.count_nonzero(np.isfinite(pts)))
    if bad:
        raise MalformedSample(sid, f"{name}: {bad} non-finite values")
    return pts


def check_range(a: np.ndarray, sid: str, name: str, limit: float = MAX_ABS_COORD) -> None:
    """A MalformedSample naming the worst finite coordinate of `a` if it lies beyond +-limit."""
    fin = np.abs(np.asarray(a, np.float64)[np.isfinite(a)])
    if fin.size and fin.max() > limit:
        raise MalformedSample(sid, f"{name}: a coordinate of {fin.max():.3g} is out of the plausible range "
                                   f"+-{limit:g} (metres in the table frame)")


def _two_rows(poses: np.ndarray, rows) -> tuple[np.ndarray, np.ndarray]:
    """(..., 4, >=3) -> the two used rows' xyz, NaN->0, and their finiteness (..., 2)."""
    sel = poses[..., list(rows), :3]
    finite = np.isfinite(sel).all(-1)
    return np.nan_to_num(sel, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32), finite


def read_sample(sample_dir, *, root=None, task: str | None = None, kind: str = "supervised",
                namespace: str | None = None, require_annotation: bool = True) -> Sample:
    """Parse and validate one sample folder. Raises :class:`MalformedSample` (or
    :class:`FilteredSample` when ``task`` is given and the action type is not the task's)."""
    sample_dir = pathlib.Path(sample_dir)
    sid = sample_id_of(sample_dir, root) if root is not None else sample_dir.name
    tasks_lib.check_kind(kind)
    spec = tasks_lib.get_data_task(task) if task is not None else None

    if not (sample_dir / METADATA).is_file():
        raise MalformedSample(sid, f"missing {METADATA}")
    if require_annotation and not (sample_dir / ANNOTATION).is_file():
        raise MalformedSample(sid, f"no {ANNOTATION} (sample is not annotated)")
    _, body = read_metadata(sample_dir, namespace=namespace, sid=sid)

    ep = _get(body, ("episode_idx",), sid)
    if isinstance(ep, bool) or not isinstance(ep, (int, np.integer)):
        raise MalformedSample(sid, f"episode_idx: expected an int, got {ep!r}")

    ann = body.get("annotation")
    if not isinstance(ann, dict):
        # Fall back to annotation.yaml carrying the annotation itself.
        side = _load_yaml(sample_dir / ANNOTATION, sid) if (sample_dir / ANNOTATION).is_file() else None
        if isinstance(side, dict) and len(side) == 1 and isinstance(next(iter(side.values())), dict):
            side = next(iter(side.values()))
        if isinstance(side, dict) and "annotation" in side and isinstance(side["annotation"], dict):
            side = side["annotation"]
        if not (isinstance(side, dict) and "action_poses" in side):
            raise MalformedSample(sid, "missing key annotation")
        ann = side

    # annotation.action_type is the label (an int code in the published data, or a name);
    # action.type, the executed primitive's name, is the fallback.
    raw_type = ann.get("action_type")
    action_type = tasks_lib.action_type_name(raw_type)
    if action_type is None and raw_type is not None:
        raise MalformedSample(sid, f"annotation.action_type: unknown action type {raw_type!r}")
    if action_type is None:
        executed = body.get("action")
        action_type = tasks_lib.action_type_name(executed.get("type")) if isinstance(executed, dict) else None
    if action_type is None:
        raise MalformedSample(sid, "missing key annotation.action_type (and action.type)")
    if spec is not None and action_type not in spec.action_types:
        raise FilteredSample(sid, f"action type {action_type!r} is not used by task {spec.name!r}")
    rows = spec.rows if spec is not None else tasks_lib.ROWS_BY_ACTION_TYPE.get(
        action_type, tasks_lib.DEFAULT_ROWS)

    poses = _float_array(_get(ann, ("action_poses",), sid, "annotation.action_poses"),
                         sid, "annotation.action_poses", 2, (4, ("ge", 3)))
    check_range(poses[:, :3], sid, "annotation.action_poses")
    action, action_finite = _two_rows(poses, rows)

    if "multiple_action_poses" in ann and ann["multiple_action_poses"] is not None:
        multi = _float_array(ann["multiple_action_poses"], sid, "annotation.multiple_action_poses",
                             3, (None, 4, ("ge", 3)))
    elif kind == "supervised":
        raise MalformedSample(sid, "missing key annotation.multiple_action_poses")
    else:
        multi = np.zeros((0, 4, 3))
    check_range(multi[..., :3], sid, "annotation.multiple_action_poses")
    multiple_actions, multiple_finite = _two_rows(multi, rows)

    cands = pairs = ranks = None
    if kind == "finetune":
        cand = _float_array(_get(body, CANDIDATE_KEY, sid), sid, ".".join(CANDIDATE_KEY),
                            2, (("ge", 3),))
        if cand.shape[0] == 0:
            raise MalformedSample(sid, f"{'.'.join(CANDIDATE_KEY)}: no candidate points")
        check_range(cand[:, :3], sid, ".".join(CANDIDATE_KEY))
        cands = np.nan_to_num(cand[:, :3], nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
        pairs = _int_array(_get(ann, ("selected_grasp_point_indices",), sid,
                                "annotation.selected_grasp_point_indices"),
                           sid, "annotation.selected_grasp_point_indices", 2, (4,))
        ranks = _int_array(_get(ann, ("grasp_point_rankings",), sid, "annotation.grasp_point_rankings"),
                           sid, "annotation.grasp_point_rankings", 1, ())
        if pairs.shape[0] != ranks.shape[0]:
            raise MalformedSample(sid, f"{pairs.shape[0]} index rows but {ranks.shape[0]} rankings")
        # points Kp and Kp+1 name the annotator's own action (candidate K, appended at load time)
        if pairs.size and (pairs.min() < 0 or pairs.max() >= cands.shape[0] + 2):
            raise MalformedSample(sid, f"selected_grasp_point_indices outside [0, {cands.shape[0] + 2})")
        if ranks.size and not np.isin(ranks, RANKING_CODES).all():
            raise MalformedSample(sid, f"grasp_point_rankings: codes must be in {RANKING_CODES}")
        pairs, ranks = pairs.astype(np.int32), ranks.astype(np.int32)

    rel = _get(body, PROCESSED_KEY, sid)
    path = resolve_npz(sample_dir, rel)
    if path is None:
        tried = "" if str(rel).endswith(".npz") else f" (also tried {str(rel) + '.npz'!r})"
        raise MalformedSample(sid, f"missing point cloud {rel!r}{tried}")
    points = load_points(path, sid, "processed cloud")
    check_range(points, sid, "processed cloud")

    sample = Sample(sid, int(ep), action_type, points, action, action_finite,
                    multiple_actions, multiple_finite, cands, pairs, ranks)
    if sample.num_valid_actions == 0:
        raise MalformedSample(sid, f"no finite action: rows {list(rows)} of every pose contain NaN")
    return sample


# --------------------------------------------------------------------------- writing


def _check_sample_id(sample_id: str) -> str:
    if not isinstance(sample_id, str) or not _SAMPLE_ID.match(sample_id):
        raise ValueError(f"sample_id {sample_id!r}: use letters, digits, '_', '-', '.' "
                         "(one folder name, not starting with '.')")
    return sample_id


def _rows_for(action_type: str, rows=None) -> tuple[int, int]:
    if rows is not None:
        return tuple(rows)
    return tasks_lib.ROWS_BY_ACTION_TYPE.get(action_type, tasks_lib.DEFAULT_ROWS)


def poses_from_actions(actions, action_type: str, *, rows=None) -> np.ndarray:
    """(..., 2, 3) two-point actions -> (..., 4, 6) published poses: the two points in the rows
    the action type uses, NaN in the other rows, rpy = 0 (gripper rotations are not learned)."""
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim < 2 or a.shape[-2:] != (2, 3):
        raise ValueError(f"actions: expected shape (..., 2, 3), got {a.shape}")
    r = _rows_for(action_type, rows)
    out = np.full(a.shape[:-2] + (4, 6), np.nan)
    for j, row in enumerate(r):
        out[..., row, :3] = a[..., j, :]
        out[..., row, 3:] = 0.0
    return out


def _as_poses(name, poses, actions, action_type, rows, ndim):
    if poses is not None and actions is not None:
        raise ValueError(f"give either {name}_poses or {name}s, not both")
    if actions is not None:
        poses = poses_from_actions(actions, action_type, rows=rows)
    if poses is None:
        return None
    p = np.asarray(poses, dtype=np.float64)
    if p.ndim != ndim or p.shape[-2] != 4 or p.shape[-1] not in (3, 6):
        raise ValueError(f"{name}_poses: expected shape {'(M, ' if ndim == 3 else '('}4, 6), got {p.shape}")
    if p.shape[-1] == 3:
        p = np.concatenate([p, np.where(np.isfinite(p), 0.0, np.nan)], axis=-1)
    return p


def _yaml_list(a) -> list:
    return np.asarray(a, dtype=np.float64).tolist()


def make_annotation(*, action_type: str, action_poses=None, action=None,
                    multiple_action_poses=None, multiple_actions=None,
                    pair_indices=None, rankings=None, rows=None, extra: dict | None = None) -> dict:
    """The ``annotation`` mapping of metadata.yaml, from arrays (see :func:`write_sample`)."""
    poses = _as_poses("action", action_poses, action, action_type, rows, 2)
    if poses is None:
        raise ValueError("an annotation needs action_poses (4, 6) or action (2, 3)")
    multi = _as_poses("multiple_action", multiple_action_poses, multiple_actions, action_type, rows, 3)
    ann = {
        # the published files store the label as an int code (the name when it has none)
        "action_type": tasks_lib.ACTION_TYPE_NAMES.get(action_type, action_type),
        "action_poses": _yaml_list(poses),
        "multiple_action_poses": _yaml_list(multi) if multi is not None else [],
        "garment_keypoints": [],
        "general_object_state": None,
        "garment_smoothing_style": None,
    }
    if (pair_indices is None) != (rankings is None):
        raise ValueError("give pair_indices and rankings together")
    if pair_indices is not None:
        idx = np.asarray(pair_indices)
        rk = np.asarray(rankings)
        if idx.ndim != 2 or idx.shape[1] != 4 or rk.shape != (idx.shape[0],):
            raise ValueError(f"pair_indices (P, 4) and rankings (P,) expected, got {idx.shape} and {rk.shape}")
        if rk.size and not np.isin(rk, RANKING_CODES).all():
            raise ValueError(f"rankings: codes must be in {RANKING_CODES}")
        ann["selected_grasp_point_indices"] = idx.astype(np.int64).tolist()
        ann["grasp_point_rankings"] = rk.astype(np.int64).tolist()
    if extra:
        ann.update(extra)
    return ann


def _write_npz(path: pathlib.Path, points, dtype) -> None:
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] == 0:
        raise ValueError(f"{path.name}: points must have shape (N, 3) with N > 0, got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError(f"{path.name}: points contain NaN/inf")
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, points=pts.astype(dtype))
    path.write_bytes(buf.getvalue())


_dump_yaml = dump_yaml


def _write_text_atomic(path: pathlib.Path, text: str, *, fsync: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def write_sample(root, sample_id: str, *, points, episode_idx: int, action_type: str,
                 action_poses=None, action=None,
                 multiple_action_poses=None, multiple_actions=None,
                 candidates=None, pair_indices=None, rankings=None,
                 raw_points=None, annotated: bool = True, rows=None,
                 namespace: str = "pam_jax", tag: str = "pam_jax", observation_id: int = 0,
                 points_dtype=np.float16, npz_suffix_in_metadata: bool = False,
                 extra_metadata: dict | None = None, extra_annotation: dict | None = None,
                 overwrite: bool = False, fsync: bool = False) -> pathlib.Path:
    """Write one sample folder in the published layout, atomically. Returns its path.

    - ``points`` (N, 3): the object's cloud in the table frame (stored as ``points_dtype``,
      float16 like the published data).
    - the executed action as ``action`` (2, 3) or full ``action_poses`` (4, 6); the annotated
      alternatives as ``multiple_actions`` (M, 2, 3) or ``multiple_action_poses`` (M, 4, 6).
      Two-point actions go to the rows their action type uses (fling: rows 0, 1; others: rows
      0, 2; or ``rows``), the other rows are NaN, as in the published files.
    - finetune data: ``candidates`` (K, 3) or (K, 6) (candidate k = points 2k, 2k+1),
      ``pair_indices`` (P, 4) and ``rankings`` (P,) with codes 0..3.
    - ``annotated=False`` writes a rollout waiting for annotation (no ``annotation`` key, no
      annotation.yaml); :func:`add_annotation` completes it later.

    The folder is built under a hidden temporary name in ``root`` and renamed into place;
    an existing sample is an error unless ``overwrite``."""
    root = pathlib.Path(root)
    _check_sample_id(sample_id)
    if isinstance(episode_idx, bool) or not isinstance(episode_idx, (int, np.integer)):
        raise ValueError(f"episode_idx: expected an int, got {episode_idx!r}")
    if not isinstance(action_type, str) or not action_type:
        raise ValueError(f"action_type: expected a non-empty string, got {action_type!r}")
    final = root / sample_id
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final}: sample exists (pass overwrite=True to replace it)")

    obs = f"observations/{int(observation_id)}/pcd"
    body: dict = {
        "episode_idx": int(episode_idx),
        "tag": tag,
        "action": {"type": action_type},
        "pcd": {"processed": {"begin": f"{obs}/processed_begin" + (".npz" if npz_suffix_in_metadata else "")}},
    }
    if raw_points is not None:
        body["pcd"]["raw"] = {"begin": f"{obs}/raw_begin" + (".npz" if npz_suffix_in_metadata else "")}
    if candidates is not None:
        c = np.asarray(candidates, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] not in (3, 6) or c.shape[0] == 0:
            raise ValueError(f"candidates: expected shape (K, 3) or (K, 6), got {c.shape}")
        if c.shape[1] == 3:
            c = np.concatenate([c, np.zeros_like(c)], axis=1)
        body["pose_virtual"] = {"prediction": {"begin": _yaml_list(c)}}
    if pair_indices is not None and candidates is not None:
        k = np.asarray(candidates).shape[0]
        idx = np.asarray(pair_indices)
        if idx.size and (idx.min() < 0 or idx.max() >= k + 2):
            raise ValueError(f"pair_indices: values must index the {k} candidate points or the "
                             f"annotator's action ({k}, {k + 1})")
    annotation = None
    if annotated:
        annotation = make_annotation(
            action_type=action_type, action_poses=action_poses, action=action,
            multiple_action_poses=multiple_action_poses, multiple_actions=multiple_actions,
            pair_indices=pair_indices, rankings=rankings, rows=rows, extra=extra_annotation)
        body["annotation"] = annotation
    if extra_metadata:
        body.update(extra_metadata)

    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".incomplete-{sample_id}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_npz(tmp / obs / "processed_begin.npz", points, points_dtype)
        if raw_points is not None:
            _write_npz(tmp / obs / "raw_begin.npz", raw_points, points_dtype)
        _write_text_atomic(tmp / METADATA, _dump_yaml({namespace: body}), fsync=fsync)
        if annotated:
            _write_text_atomic(tmp / ANNOTATION, _dump_yaml({namespace: {"annotation": annotation}}),
                               fsync=fsync)
        if final.exists():
            trash = root / f".trash-{sample_id}-{uuid.uuid4().hex[:8]}"
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def add_annotation(sample_dir, annotation: dict, *, namespace: str | None = None,
                   fsync: bool = False) -> None:
    """Annotate a written sample: rewrite metadata.yaml with ``annotation`` (atomic replace),
    then write annotation.yaml last, so the builder sees the sample only once both exist.
    ``annotation`` comes from :func:`make_annotation`; candidate points for finetune data
    must already be in the metadata (``candidates=`` of :func:`write_sample`)."""
    sample_dir = pathlib.Path(sample_dir)
    ns, body = read_metadata(sample_dir, namespace=namespace)
    if not isinstance(annotation, dict) or "action_poses" not in annotation:
        raise ValueError("annotation: expected a mapping from make_annotation()")
    body = dict(body)
    body["annotation"] = annotation
    _write_text_atomic(sample_dir / METADATA, _dump_yaml({ns: body}), fsync=fsync)
    _write_text_atomic(sample_dir / ANNOTATION, _dump_yaml({ns: {"annotation": annotation}}),
                       fsync=fsync)
