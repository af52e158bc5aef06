"""Export a built dataset (TFDS ArrayRecord) to Parquet, for pipelines outside TFDS and grain.

    pam-jax data export-parquet --data-dir DIR --task rope --kind finetune --out OUT

writes one file per split, ``OUT/<split>.parquet``, one row per record, which Hugging Face
``datasets`` loads as they are (``load_dataset("parquet", data_dir=OUT)``: the file names give
the splits) and pandas or polars read directly. Each array field is a column of nested lists,
one level per axis (``points``: a list of ``[x, y, z]``), with the element type of the TFDS
feature (float32, int32, bool); text fields are strings and scalars plain values. The schema's
metadata (key ``pam_jax``) keeps each field's dtype and shape, so :func:`read_parquet` gives
back the same numpy arrays, empty ones with their trailing axes included.

Needs pyarrow (the ``parquet`` extra: ``pip install 'pam_jax[parquet]'``).
"""
from __future__ import annotations

import json
import os
import pathlib

import numpy as np

from pam_jax.data import sources

INSTALL_HINT = "pip install 'pam_jax[parquet]'"
METADATA_KEY = b"pam_jax"
ROWS_PER_GROUP = 256          # records per Parquet row group (and per write)


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"the Parquet export needs pyarrow ({INSTALL_HINT})") from None
    return pa, pq


def feature_specs(ds_dir) -> dict[str, dict]:
    """{field: {"dtype": numpy dtype name or "text", "shape": [int or None, ...]}} of a built
    dataset, from its TFDS features (features.json)."""
    import tensorflow_datasets as tfds

    features = tfds.builder_from_directory(str(ds_dir)).info.features
    out = {}
    for name, f in features.items():
        if isinstance(f, tfds.features.Text):
            out[name] = {"dtype": "text", "shape": []}
        else:
            out[name] = {"dtype": np.dtype(f.np_dtype).name, "shape": list(f.shape)}
    return out


def _arrow_type(pa, spec):
    if spec["dtype"] == "text":
        return pa.string()
    t = pa.from_numpy_dtype(np.dtype(spec["dtype"]))
    for _ in spec["shape"]:
        t = pa.list_(t)
    return t


def _column(pa, values: list, spec):
    """One Arrow column from the records' values of one field (nested lists built from the flat
    values and per-axis offsets, without going through Python lists)."""
    if spec["dtype"] == "text":
        return pa.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values], pa.string())
    dtype = np.dtype(spec["dtype"])
    ndim = len(spec["shape"])
    arrays = [np.asarray(v, dtype=dtype) for v in values]
    if ndim == 0:
        return pa.array(np.array(arrays, dtype=dtype))
    for a in arrays:
        if a.ndim != ndim:
            raise ValueError(f"a record's array has shape {a.shape}, the feature {spec['shape']}")
    col = pa.array(np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, dtype))
    shapes = [a.shape for a in arrays]
    for axis in reversed(range(ndim)):          # innermost lists first
        lengths = [np.full(int(np.prod(s[:axis], dtype=np.int64)), s[axis], dtype=np.int64) for s in shapes]
        lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])   # < 2**31 for any row group of this size
        col = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), col)
    return col


def export_parquet(ds_dir, out_dir, *, splits=None, overwrite: bool = False, progress=None) -> dict:
    """Write ``out_dir/<split>.parquet`` for each split of the built dataset ``ds_dir`` (all by
    default). An existing file is an error unless ``overwrite``; each file is written beside its
    place and moved there when complete. Returns ``{"out_dir", "files": {split: path},
    "rows": {split: n}, "features"}``."""
    pa, pq = _pyarrow()
    ds_dir = pathlib.Path(ds_dir)
    task, kind = sources.task_kind_of(ds_dir)
    sizes = sources.split_sizes(ds_dir)
    chosen = list(sizes) if not splits else list(splits)
    for s in chosen:
        if s not in sizes:
            raise ValueError(f"{ds_dir}: no split {s!r} (has {', '.join(sorted(sizes)) or 'none'})")
    out_dir = pathlib.Path(out_dir)
    targets = {s: out_dir / f"{s}.parquet" for s in chosen}
    if not overwrite:
        there = [str(p) for p in targets.values() if p.exists()]
        if there:
            raise FileExistsError(f"{there[0]} exists (--overwrite to replace it)")
    specs = feature_specs(ds_dir)
    schema = pa.schema([pa.field(k, _arrow_type(pa, v)) for k, v in specs.items()])
    schema = schema.with_metadata({METADATA_KEY: json.dumps(
        {"task": task, "kind": kind, "source": str(ds_dir), "features": specs}).encode()})
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = {}
    for split, path in targets.items():
        src = sources.open_source(ds_dir, split)
        tmp = path.with_name(f".{path.name}.partial")
        n = len(src)
        with pq.ParquetWriter(str(tmp), schema) as writer:
            for start in range(0, max(n, 1), ROWS_PER_GROUP):
                records = [src[i] for i in range(start, min(n, start + ROWS_PER_GROUP))]
                cols = [_column(pa, [r[k] for r in records], specs[k]) for k in specs]
                writer.write_table(pa.Table.from_arrays(cols, schema=schema))
                if progress is not None:
                    progress(split, min(n, start + ROWS_PER_GROUP), n)
        os.replace(tmp, path)
        rows[split] = n
    return {"out_dir": str(out_dir), "files": {s: str(p) for s, p in targets.items()}, "rows": rows,
            "features": specs}


def read_parquet(path) -> list[dict]:
    """The records of one exported file as dicts of numpy arrays (text as bytes, as the TFDS
    source gives them): the inverse of :func:`export_parquet` for one split."""
    _, pq = _pyarrow()
    table = pq.read_table(str(path))
    meta = (table.schema.metadata or {}).get(METADATA_KEY)
    if meta is None:
        raise ValueError(f"{path}: not a pam_jax Parquet export (no {METADATA_KEY.decode()!r} schema metadata)")
    specs = json.loads(meta)["features"]
    columns = {k: table.column(k).to_pylist() for k in specs}
    out = []
    for i in range(table.num_rows):
        rec = {}
        for k, spec in specs.items():
            v = columns[k][i]
            if spec["dtype"] == "text":
                rec[k] = v.encode("utf-8")
                continue
            a = np.asarray(v, dtype=spec["dtype"])
            if a.size == 0:
                a = a.reshape([0 if d is None else d for d in spec["shape"]])
            rec[k] = a
        out.append(rec)
    return out
