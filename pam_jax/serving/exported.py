"""Run a `pam-jax export` artefact: jax and numpy only (no flax, no training code).

    from pam_jax.serving import load_exported
    policy = load_exported("rope.pamx")
    out = policy(points, seed=0)          # the same dict as PolicyClient.select
"""
from __future__ import annotations

import json
import secrets
import time
import zipfile

import numpy as np

from pam_jax.normalize import NormStats
from pam_jax.pointcloud import check_batch_shape, check_clouds
from pam_jax.serving import protocol


class ExportedPolicy:
    """A loaded artefact. Call it (or `.select`) like `PolicyClient.select`; `.metadata` is the
    server's metadata plus `batch` and `platforms`. Clouds (task frame) are checked before the
    graph runs (shape, finite, plausible range from the run's normalisation), each failure one
    ValueError line; `checked=False` (of :func:`load_exported`) leaves only the shape check."""

    def __init__(self, exported, ref: list, score: list, metadata: dict, checked: bool = True):
        self._exp, self._ref, self._score = exported, ref, score
        self.metadata, self.checked = metadata, checked
        self.batch, self.num_points = int(metadata["batch"]), int(metadata["num_points"])
        self.norm = NormStats.from_dict(metadata["norm"])

    def check(self, points) -> np.ndarray:
        """One task-frame cloud (num_points, 3) -> float32, or a one-line ValueError: its shape,
        finite values, and (checked) a plausible range (pam_jax.pointcloud.check_clouds, as the
        in-process selector checks)."""
        pts = protocol.check_cloud(np.asarray(points) if not isinstance(points, np.ndarray) else points,
                                   self.num_points)
        return check_clouds(pts[None], self.norm)[0] if self.checked else pts

    def check_batch(self, points) -> np.ndarray:
        """Clouds (B, num_points, 3) -> float32, or one ValueError line (an unbatched cloud, an
        empty batch, NaN/inf, a cloud out of range, another number of points)."""
        if self.checked:
            pts = check_clouds(points, self.norm)
        else:
            pts = np.asarray(points, np.float32)
            check_batch_shape(pts.shape, pts.dtype)
        if pts.shape[1] != self.num_points:
            raise ValueError(f"points: expected clouds of {self.num_points} points (B, {self.num_points}, 3), "
                             f"got shape {pts.shape}")
        return pts

    def select_batch(self, points, seeds) -> dict:
        """Checked clouds (B, Np, 3) and B seeds -> dict of numpy arrays, in chunks of the
        exported batch size (the last one padded)."""
        pts = self.check_batch(points)
        seeds = np.asarray([protocol.check_seed(s) for s in seeds], np.uint32)
        if len(seeds) != len(pts):
            raise ValueError(f"got {len(pts)} clouds and {len(seeds)} seeds")
        parts = []
        for i in range(0, len(pts), self.batch):
            p, s = pts[i:i + self.batch], seeds[i:i + self.batch]
            pad = self.batch - len(p)
            out = self._exp.call(self._ref, self._score, np.concatenate([p, np.repeat(p[:1], pad, 0)]),
                                 np.concatenate([s, np.zeros(pad, np.uint32)]))
            parts.append({k: np.asarray(v)[:len(p)] for k, v in out.items()})
        return {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}

    def select(self, points, seed: int | None = None) -> dict:
        t0 = time.perf_counter()
        seed = secrets.randbelow(protocol.SEED_LIMIT) if seed is None else protocol.check_seed(seed)
        pts = np.asarray(points)
        if pts.ndim == 3:
            raise ValueError(f"points: got a batch of shape {pts.shape}; select takes one cloud "
                             f"({self.num_points}, 3): use select_batch")
        out = self.select_batch(pts[None], [seed])
        r = {k: (int(v[0]) if k == "index" else v[0]) for k, v in out.items()}
        return {**r, "seed": seed, "server_ms": (time.perf_counter() - t0) * 1e3}

    __call__ = select


def load_exported(path, *, checked: bool = True) -> ExportedPolicy:
    """Read an artefact written by `pam-jax export`. `checked=False`: the clouds' values are not
    checked (for a caller that checks them itself)."""
    import jax  # only here: importing pam_jax.serving stays free of jax

    try:
        with zipfile.ZipFile(path) as z:
            blob, params = z.read("exported.bin"), protocol.unpack(z.read("params.msgpack"))
            meta = json.loads(z.read("metadata.json"))
    except (zipfile.BadZipFile, KeyError, protocol.ProtocolError) as e:
        raise ValueError(f"{path}: not a pam-jax export artefact ({e})") from None
    platform = jax.default_backend()
    if platform not in meta["platforms"] and not (platform == "gpu" and "cuda" in meta["platforms"]):
        raise ValueError(f"{path} was exported for {', '.join(meta['platforms'])}, not this {platform} backend; "
                         "export again with --platforms")
    ref, score = ([jax.device_put(x) for x in params[k]] for k in ("ref", "score"))   # on the device once
    return ExportedPolicy(jax.export.deserialize(bytearray(blob)), ref, score, meta, checked)
