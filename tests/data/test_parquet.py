"""`pam-jax data export-parquet`: a built dataset written as Parquet, one row per record, gives
back the same clouds, actions, candidates and preference pairs, read with pyarrow alone and
through pam_jax.data.parquet.read_parquet."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from pam_jax import cli  # noqa: E402
from pam_jax.data import parquet, sources  # noqa: E402

FIELDS = ("points", "action", "action_finite", "multiple_actions", "multiple_actions_finite",
          "candidate_points", "pair_indices", "rankings", "episode_id")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("parquet")
    src, out = root / "src", root / "tfds"
    assert cli.main(["data", "fixture", "--out", str(src), "--task", "nut", "--kind", "finetune",
                     "--episodes", "4", "--malformed"]) == 0
    assert cli.main(["data", "build", "deformpam", "--src", str(src), "--task", "nut", "--kind",
                     "finetune", "--data-dir", str(out), "--no-progress"]) == 0
    return sources.dataset_dir(out, "nut", "finetune")


def _tfds_records(ds_dir, split):
    src = sources.open_source(ds_dir, split)
    return [src[i] for i in range(len(src))]


def test_round_trip_keeps_clouds_actions_and_pairs(built, tmp_path, capsys):
    out = tmp_path / "pq"
    assert cli.main(["data", "export-parquet", "--data-dir", str(built), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    sizes = sources.split_sizes(built)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}.parquet" for s in sizes)
    assert sum(sizes.values()) >= 4 and all(f"{s}: {n} rows" in printed for s, n in sizes.items())
    for split, n in sizes.items():
        want = _tfds_records(built, split)
        table = pq.read_table(out / f"{split}.parquet")            # pyarrow alone: lists per axis
        assert table.num_rows == n == len(want)
        assert table.schema.field("points").type == pa.list_(pa.list_(pa.float32()))
        assert table.schema.field("pair_indices").type == pa.list_(pa.list_(pa.int32()))
        rows = table.to_pylist()
        for w, row in zip(want, rows):
            assert row["sample_id"] == w["sample_id"].decode() and row["action_type"] == w["action_type"].decode()
            for k in FIELDS:
                got = np.asarray(row[k], dtype=np.asarray(w[k]).dtype)
                if got.size == 0:
                    assert np.asarray(w[k]).size == 0, k
                    continue
                np.testing.assert_array_equal(got, w[k], err_msg=k)   # bit for bit, NaNs included
        back = parquet.read_parquet(out / f"{split}.parquet")       # the numpy view: shapes too
        for w, r in zip(want, back):
            assert set(r) == set(w)
            for k in w:
                assert np.asarray(r[k]).shape == np.asarray(w[k]).shape, k
                np.testing.assert_array_equal(r[k], w[k], err_msg=k)
    meta = json.loads(pq.read_schema(out / "train.parquet").metadata[b"pam_jax"])
    assert (meta["task"], meta["kind"]) == ("nut", "finetune")
    assert meta["features"]["points"] == {"dtype": "float32", "shape": [None, 3]}


def test_pairs_index_the_exported_candidates(built, tmp_path):
    """Each preference pair (four point indices: two actions' start and end) points inside its
    row's candidate points: the pairing between the two columns survives the export."""
    out = tmp_path / "pq"
    parquet.export_parquet(built, out, splits=["train"])
    for row in pq.read_table(out / "train.parquet").to_pylist():
        n = len(row["candidate_points"])
        idx = np.asarray(row["pair_indices"])
        assert n >= 4 and idx.shape[1:] == (4,) and len(idx) > 0
        assert idx.min() >= 0 and idx.max() < n


def test_existing_files_are_kept_without_overwrite(built, tmp_path, capsys):
    out = tmp_path / "pq"
    out.mkdir()
    (out / "train.parquet").write_bytes(b"keep me")
    assert cli.main(["data", "export-parquet", "--data-dir", str(built), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "exists (--overwrite to replace it)" in err
    assert (out / "train.parquet").read_bytes() == b"keep me"
    assert cli.main(["data", "export-parquet", "--data-dir", str(built), "--out", str(out),
                     "--split", "train", "--overwrite"]) == 0
    assert pq.read_table(out / "train.parquet").num_rows == sources.split_sizes(built)["train"]
    assert cli.main(["data", "export-parquet", "--data-dir", str(built), "--out", str(out),
                     "--split", "nope"]) == 2
    assert "no split 'nope'" in capsys.readouterr().err


def test_without_pyarrow_one_line_names_the_extra(built, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert cli.main(["data", "export-parquet", "--data-dir", str(built), "--out", str(tmp_path / "pq")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "pam-jax: error: the Parquet export needs pyarrow (pip install 'pam_jax[parquet]')"
    assert not (tmp_path / "pq").exists()
