"""`pam-jax export`: the whole selection graph as one file that runs without flax and without
the training code (read it with :func:`pam_jax.serving.load_exported`).

The file is a zip archive:
  exported.bin     jax.export's serialized StableHLO of
                   f(ref_leaves, score_leaves, points (B, Np, 3) float32, seeds (B,) uint32) -> dict
                   of action, candidates, scores, index; the normalisation is inside the graph
  params.msgpack   {"ref": [arrays], "score": [arrays]}: the parameter leaves (protocol encoding)
  metadata.json    what a server sends on connect, plus the batch size and platforms
"""
from __future__ import annotations

import json
import pathlib
import zipfile

import jax
import numpy as np

from pam_jax.models import geometry
from pam_jax.serving import protocol
from pam_jax.serving.graph import ServedPolicy

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def parse_platforms(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in str(text).split(",") if p.strip())
    bad = [p for p in names if p not in PLATFORMS]
    if not names or bad:
        raise ValueError(f"--platforms: expected a comma-separated list of {', '.join(PLATFORMS)}, got {text!r}")
    return names


def export_policy(served: ServedPolicy, out, *, platforms=("cpu",), batch: int = 1) -> pathlib.Path:
    """Write the artefact of `served` for `platforms`, compiled for batches of `batch` clouds."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"--batch must be an integer >= 1, got {batch!r}")
    platforms = tuple(platforms)
    ref_leaves, ref_tree = jax.tree.flatten(served.ref_params)
    score_leaves, score_tree = jax.tree.flatten(served.score_params)

    def flat(ref, score, points, seeds):   # only lists and arrays cross the boundary: no flax types
        return served.batch_select(jax.tree.unflatten(ref_tree, ref), jax.tree.unflatten(score_tree, score),
                                   points, seeds)

    args = ([jax.ShapeDtypeStruct(x.shape, x.dtype) for x in ref_leaves],
            [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in score_leaves],
            jax.ShapeDtypeStruct((batch, served.num_points, 3), np.float32),
            jax.ShapeDtypeStruct((batch,), np.uint32))
    with geometry.portable():   # no Pallas kernel in a serialised graph
        exp = jax.export.export(jax.jit(flat), platforms=platforms)(*args)
    meta = {**served.metadata, "batch": batch, "platforms": list(platforms), "format": 1}
    params = protocol.pack({"type": "params", "ref": [np.asarray(x) for x in ref_leaves],
                            "score": [np.asarray(x) for x in score_leaves]})
    out = pathlib.Path(out)
    if out.parent and not out.parent.exists():
        raise FileNotFoundError(f"--out {out}: folder {out.parent} does not exist")
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("exported.bin", bytes(exp.serialize()))
        z.writestr("params.msgpack", params)
        z.writestr("metadata.json", json.dumps(meta, indent=1))
    tmp.replace(out)
    return out
