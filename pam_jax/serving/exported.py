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

from pam_jax.serving import protocol


class ExportedPolicy:
    """A loaded artefact. Call it (or `.select`) like `PolicyClient.select`; `.metadata` is the
    server's metadata plus `batch` and `platforms`."""

    def __init__(self, exported, ref: list, score: list, metadata: dict):
        self._exp, self._ref, self._score = exported, ref, score
        self.metadata = metadata
        self.batch, self.num_points = int(metadata["batch"]), int(metadata["num_points"])

    def select_batch(self, points, seeds) -> dict:
        """Checked clouds (B, Np, 3) and B seeds -> dict of numpy arrays, in chunks of the
        exported batch size (the last one padded)."""
        pts = np.stack([protocol.check_cloud(np.asarray(p), self.num_points) for p in points])
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
        out = self.select_batch(np.asarray(points)[None], [seed])
        r = {k: (int(v[0]) if k == "index" else v[0]) for k, v in out.items()}
        return {**r, "seed": seed, "server_ms": (time.perf_counter() - t0) * 1e3}

    __call__ = select


def load_exported(path) -> ExportedPolicy:
    """Read an artefact written by `pam-jax export`."""
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
    return ExportedPolicy(jax.export.deserialize(bytearray(blob)), ref, score, meta)
