"""The samples of one folder in the published layout, as the annotator sees and writes them.

Samples are addressed by their position in the sorted list that :func:`Store.__init__` makes
(``layout.find_samples``); nothing a client sends is ever joined to a path. A sample is
*done* when its ``annotation.yaml`` exists (``layout``'s contract).

Writing one annotation (:meth:`Store.save`), under a lock (a thread lock, plus ``flock`` on the
sample folder so that two servers on one folder exclude each other):

1. compare-and-swap: the ``version`` the page was given (a hash of ``metadata.yaml`` and
   ``annotation.yaml``) must still be the sample's version, else :class:`Conflict`;
2. ``metadata.yaml`` is rewritten with the new ``annotation`` mapping, then ``annotation.yaml``
   (``{namespace: {annotation: ...}}``) is written last, as ``layout.add_annotation`` does; each
   file is written to a hidden temporary file in the sample folder, flushed, fsync'ed, renamed
   over the old one, and the folder is fsync'ed. A crash at any point leaves every file either
   old or new, never partial (``before_replace`` is a test hook called between the fsync and
   the rename).

The annotation mapping comes from ``layout.make_annotation`` (rows/codes from
:mod:`.protocol`), plus ``annotator``, ``annotated_at`` (UTC, ISO 8601), ``annotation_tool``
and ``pam_jax_annotate`` (what the page needs to show the ranking again).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import os
import pathlib
import re
import threading
import uuid

import numpy as np
import yaml

from pam_jax import tasks as tasks_lib
from pam_jax.data import layout

from . import protocol

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the thread lock only
    fcntl = None

TOOL = "pam-jax annotate"
STATE_KEY = "pam_jax_annotate"
TASK_ALIASES = {"tshirt": "tshirt_short"}
MAX_DISPLAY_POINTS = 20000
_ANNOTATOR = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")
_PAYLOAD_KEYS = {"sample_id", "version", "ranked", "equal", "not_comparable", "own_action", "annotator"}
# annotation keys that make_annotation resets and an edit should keep
_KEEP = ("garment_keypoints", "general_object_state", "garment_smoothing_style")


class StoreError(Exception):
    """Bad command-line input (no folder, no samples, unknown task); ``str()`` is one line."""


class Unavailable(Exception):
    """A sample that cannot be annotated (unreadable, no candidates, another task)."""


class Invalid(ValueError):
    """A submission that is rejected (validation); ``str()`` is one line for the page."""


class Conflict(Exception):
    """The sample changed since the page loaded it (compare-and-swap failed)."""

    def __init__(self, message: str, current: dict):
        super().__init__(message)
        self.current = current


@dataclasses.dataclass(frozen=True)
class Entry:
    sample_id: str
    path: pathlib.Path


def task_spec(name: str | None):
    """'rope' | 'nut' | 'tshirt' (or 'tshirt_short') -> the task's spec; None -> None."""
    if name is None:
        return None
    name = TASK_ALIASES.get(name, name)
    try:
        return tasks_lib.get_task(name)
    except ValueError as e:
        raise StoreError(str(e)) from None


def check_annotator(name) -> str:
    if not isinstance(name, str) or not _ANNOTATOR.match(name.strip() or "\0"):
        raise Invalid("annotator: give a name of 1 to 64 printable characters")
    return name.strip()


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat() \
        .replace("+00:00", "Z")


_dump_yaml = layout.dump_yaml


def _floats(value) -> np.ndarray:
    return np.asarray(layout.none_to_nan(value), dtype=np.float64)


def _dig(d, keys):
    for key in keys:
        d = d.get(key) if isinstance(d, dict) else None
    return d


class Store:
    def __init__(self, root, *, task: str | None = None, annotator: str | None = None,
                 fsync: bool = True):
        self.root = pathlib.Path(os.path.expanduser(str(root)))
        if not self.root.is_dir():
            raise StoreError(f"--data {root}: no such directory")
        self.spec = task_spec(task)
        try:
            self.annotator = check_annotator(annotator) if annotator is not None else None
        except Invalid:
            raise StoreError(f"--annotator {str(annotator)[:70]!r}: give a name of 1 to 64 "
                             "printable characters") from None
        dirs = layout.find_samples(self.root)
        if not dirs:
            raise StoreError(f"--data {root}: no samples (no folder with a {layout.METADATA}) under it")
        self.entries = [Entry(layout.sample_id_of(d, self.root), d) for d in dirs]
        self.fsync = fsync
        self.before_replace = None      # test hook: called (tmp, final) before each rename
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ listing

    def __len__(self) -> int:
        return len(self.entries)

    def entry(self, index: int) -> Entry:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self.entries):
            raise IndexError(f"no sample {index!r} (there are {len(self.entries)})")
        return self.entries[index]

    def is_done(self, index: int) -> bool:
        return (self.entry(index).path / layout.ANNOTATION).is_file()

    def progress(self) -> dict:
        done = [self.is_done(i) for i in range(len(self))]
        first = next((i for i, d in enumerate(done) if not d), None)
        return {"total": len(self), "done": sum(done), "first_unannotated": first,
                "samples": [{"index": i, "sample_id": e.sample_id, "done": d}
                            for i, (e, d) in enumerate(zip(self.entries, done))]}

    def next_unannotated(self, after: int) -> int | None:
        n = len(self)
        for j in range(1, n + 1):
            i = (after + j) % n
            if not self.is_done(i):
                return i
        return None

    def version(self, index: int) -> str:
        """A hash of metadata.yaml and annotation.yaml as they are on disk now."""
        h = hashlib.sha256()
        path = self.entry(index).path
        for name in (layout.METADATA, layout.ANNOTATION):
            try:
                data = (path / name).read_bytes()
                h.update(b"%d:" % len(data) + data)
            except FileNotFoundError:
                h.update(b"-")
        return h.hexdigest()[:32]

    # ------------------------------------------------------------------ reading

    def _read(self, index: int) -> dict:
        """Parse what the page and a save need; raises Unavailable."""
        e = self.entry(index)
        try:
            ns, body = layout.read_metadata(e.path, sid=e.sample_id)
        except layout.MalformedSample as err:
            raise Unavailable(str(err)) from None
        ann = body.get("annotation") if isinstance(body.get("annotation"), dict) else None
        if ann is None and (e.path / layout.ANNOTATION).is_file():
            try:
                side = yaml.safe_load((e.path / layout.ANNOTATION).read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError, UnicodeDecodeError):
                side = None
            if isinstance(side, dict) and len(side) == 1 and isinstance(next(iter(side.values())), dict):
                side = next(iter(side.values()))
            if isinstance(side, dict) and isinstance(side.get("annotation"), dict):
                side = side["annotation"]
            ann = side if isinstance(side, dict) else None

        # action type and the two pose rows of the action
        raw = ann.get("action_type") if ann else None
        atype = tasks_lib.action_type_name(raw) if raw is not None else None
        if atype is None:
            executed = body.get("action")
            atype = tasks_lib.action_type_name(executed.get("type")) if isinstance(executed, dict) else None
        if atype is None and self.spec is not None:
            atype = self.spec.primitive
        if atype is None:
            raise Unavailable(f"{e.sample_id}: no action type in {layout.METADATA} (pass --task)")
        if self.spec is not None and atype not in self.spec.action_types:
            raise Unavailable(f"{e.sample_id}: action type {atype!r} is not used by task {self.spec.name!r}")
        rows = tuple(self.spec.rows) if self.spec is not None else tuple(
            tasks_lib.ROWS_BY_ACTION_TYPE.get(atype, tasks_lib.DEFAULT_ROWS))

        # candidates: points 2k, 2k+1 = candidate k
        cur = _dig(body, layout.CANDIDATE_KEY)
        if cur is None:
            raise Unavailable(f"{e.sample_id}: no candidate actions ({'.'.join(layout.CANDIDATE_KEY)}): "
                              "not a finetune sample")
        try:
            cand = _floats(cur)
        except (TypeError, ValueError):
            raise Unavailable(f"{e.sample_id}: candidate points are not a numeric array") from None
        if cand.ndim != 2 or cand.shape[1] < 3 or cand.shape[0] < 2 or cand.shape[0] % 2:
            raise Unavailable(f"{e.sample_id}: candidate points: expected (2K, 6) with K >= 1, "
                              f"got {cand.shape}")
        xyz = cand[:, :3]
        if not np.isfinite(xyz).all():
            raise Unavailable(f"{e.sample_id}: candidate points contain NaN/inf")

        pcd = _dig(body, layout.PROCESSED_KEY)
        path = layout.resolve_npz(e.path, pcd)
        if path is None:
            raise Unavailable(f"{e.sample_id}: missing point cloud {pcd!r}")
        try:
            points = layout.load_points(path, e.sample_id, "processed cloud")
        except layout.MalformedSample as err:
            raise Unavailable(str(err)) from None
        return {"entry": e, "namespace": ns, "body": body, "annotation": ann, "action_type": atype,
                "rows": rows, "candidates": xyz.reshape(-1, 2, 3), "points": points}

    def _read_consistent(self, index: int) -> tuple[dict, str]:
        for _ in range(5):
            v = self.version(index)
            info = self._read(index)
            if self.version(index) == v:
                return info, v
        raise Unavailable(f"{self.entry(index).sample_id}: the files keep changing; try again")

    def load(self, index: int) -> dict:
        """Everything the page shows for one sample (JSON-able)."""
        e = self.entry(index)
        out = {"index": index, "sample_id": e.sample_id, "total": len(self),
               "annotated": self.is_done(index)}
        try:
            info, version = self._read_consistent(index)
        except Unavailable as err:
            out.update(error=str(err))
            return out
        pts = info["points"]
        if len(pts) > MAX_DISPLAY_POINTS:
            keep = np.sort(np.random.default_rng(0).choice(len(pts), MAX_DISPLAY_POINTS, replace=False))
            pts = pts[keep]
        cands = info["candidates"]
        k = len(cands)
        ann, body = info["annotation"], info["body"]
        state = {"ranked": [], "equal": [], "not_comparable": [], "own_action": None}
        elsewhere = False
        if out["annotated"] and ann is not None:
            saved = ann.get(STATE_KEY)
            try:
                if not isinstance(saved, dict):
                    raise ValueError("not written by this tool")
                own = None
                if saved.get("own_action"):
                    poses = _floats(ann.get("action_poses"))
                    own = np.round(poses[list(info["rows"]), :3], 6).tolist()
                r = protocol.parse({key: saved.get(key) for key in ("ranked", "equal", "not_comparable")}
                                   | {"own_action": own}, k)
                state = {"ranked": list(r.ranked), "equal": [list(p) for p in r.equal],
                         "not_comparable": list(r.not_comparable),
                         "own_action": [list(p) for p in r.own_action] if r.own_action else None}
            except (TypeError, ValueError, IndexError):   # RankingError is a ValueError
                elsewhere = True
        notes = {}
        sim = body.get("sim")
        if isinstance(sim, dict) and sim.get("expert_in_candidates") and sim.get("num_candidates") == k - 1:
            notes[str(k - 1)] = "the simulated expert's action, stored as a candidate"
        out.update(
            version=version, action_type=info["action_type"],
            two_picks=tuple(info["rows"]) == (0, 1),
            task=self.spec.name if self.spec is not None else None,
            num_points=int(len(info["points"])),
            points=np.round(pts.astype(np.float64), 5).tolist(),
            candidates=np.round(cands, 6).tolist(), num_candidates=k, ranking_rows=2 * k,
            state=state, annotated_elsewhere=elsewhere, notes=notes,
            annotator=(ann or {}).get("annotator") if out["annotated"] else None,
            annotated_at=(ann or {}).get("annotated_at") if out["annotated"] else None)
        return out

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def _locked(self, path: pathlib.Path):
        with self._lock:
            if fcntl is None:  # pragma: no cover
                yield
                return
            fd = os.open(path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def _write_atomic(self, path: pathlib.Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "x", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            if path.exists():
                os.chmod(tmp, path.stat().st_mode & 0o777)
            if self.before_replace is not None:
                self.before_replace(tmp, path)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        if self.fsync:
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def save(self, index: int, payload) -> dict:
        """Validate a submission and write it (compare-and-swap on ``payload['version']``).
        Raises Invalid, Conflict or Unavailable; nothing is written unless all checks pass."""
        e = self.entry(index)
        if not isinstance(payload, dict):
            raise Invalid("expected a JSON object")
        unknown = sorted(set(payload) - _PAYLOAD_KEYS)
        if unknown:
            raise Invalid(f"unknown field {str(unknown[0])[:40]!r}")
        if payload.get("sample_id") != e.sample_id:
            raise Invalid(f"sample_id does not match sample {index} ({e.sample_id}); reload the page")
        version = payload.get("version")
        if not isinstance(version, str) or not version:
            raise Invalid("version: missing (reload the sample)")
        annotator = self.annotator or check_annotator(payload.get("annotator"))

        with self._locked(e.path):
            current = self.version(index)
            if current != version:
                raise Conflict(f"{e.sample_id} was changed since you opened it"
                               + self._who(index) + "; reload it to see the new version",
                               {"version": current})
            info = self._read(index)
            cands = info["candidates"]
            k = len(cands)
            try:
                ranking = protocol.parse(payload, k)
            except protocol.RankingError as err:
                raise Invalid(str(err)) from None
            rows, codes, dropped = protocol.rows(ranking, k)
            if ranking.own_action is not None:
                action = np.asarray(ranking.own_action, np.float64)
            else:
                action = cands[ranking.ranked[0]]
            old = info["annotation"] or {}
            extra = {key: old[key] for key in _KEEP if key in old}
            extra.update({"annotator": annotator, "annotated_at": _utc_now(), "annotation_tool": TOOL,
                          STATE_KEY: {**ranking.as_yaml(), "dropped_pairs": dropped}})
            multi = self._old_multiple(old)
            ann = layout.make_annotation(
                action_type=info["action_type"], action=action, multiple_action_poses=multi,
                pair_indices=np.asarray(rows, np.int64), rankings=np.asarray(codes, np.int64),
                rows=info["rows"], extra=extra)
            ns, body = info["namespace"], dict(info["body"])
            body["annotation"] = ann
            self._write_atomic(e.path / layout.METADATA, _dump_yaml({ns: body}))
            self._write_atomic(e.path / layout.ANNOTATION, _dump_yaml({ns: {"annotation": ann}}))
            new_version = self.version(index)
        return {"ok": True, "index": index, "sample_id": e.sample_id, "version": new_version,
                "pairs": len(rows), "dropped_pairs": dropped,
                "next_index": self.next_unannotated(index),
                "done": sum(self.is_done(i) for i in range(len(self))), "total": len(self)}

    def _who(self, index: int) -> str:
        try:
            info = self._read(index)
        except Unavailable:
            return ""
        ann = info["annotation"] or {}
        who, when = ann.get("annotator"), ann.get("annotated_at")
        return f" (saved by {who} at {when})" if who and when else ""

    @staticmethod
    def _old_multiple(old: dict):
        """The annotated alternatives of the state, kept through an edit (None if unusable)."""
        m = old.get("multiple_action_poses")
        if not m:
            return None
        try:
            a = _floats(m)
        except (TypeError, ValueError):
            return None
        if a.ndim != 3 or a.shape[1] != 4 or a.shape[2] < 3:
            return None
        return a[..., :6] if a.shape[2] >= 6 else a[..., :3]
