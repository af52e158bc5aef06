"""TFDS builder (data_builders/deformpam): ArrayRecord build, read back without TensorFlow."""
from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
from helpers.fixtures_deformpam import build_fixture, text

from pam_jax.data import fixtures, layout, sources, stats
from pam_jax.data.build import build as build_dataset


@pytest.fixture(scope="module")
def rope(tmp_path_factory):
    return build_fixture(tmp_path_factory.mktemp("rope"), task="rope", kind="supervised",
                         malformed=("missing_npz",), filtered=True)


@pytest.fixture(scope="module")
def tshirt(tmp_path_factory):
    return build_fixture(tmp_path_factory.mktemp("tshirt"), task="tshirt_short", kind="finetune",
                         malformed=fixtures.MALFORMED_KINDS)


def _records(ds_dir):
    out = {}
    for split in sources.split_sizes(ds_dir):
        src = sources.open_source(ds_dir, split)
        for i in range(len(src)):
            r = src[i]
            out[text(r["sample_id"])] = (split, r)
    return out


@pytest.mark.parametrize("which", ["rope", "tshirt"])
def test_every_value_round_trips(which, request):
    info, report, ds_dir = request.getfixturevalue(which)
    recs = _records(ds_dir)
    assert set(recs) == set(info["samples"])
    for sid, exp in info["samples"].items():
        _, r = recs[sid]
        assert int(r["episode_id"]) == exp["episode_id"]
        assert text(r["action_type"]) == exp["action_type"]
        for k in ("points", "action", "action_finite", "multiple_actions", "multiple_actions_finite"):
            assert r[k].dtype == np.asarray(exp[k]).dtype, k
            np.testing.assert_array_equal(r[k], exp[k], err_msg=f"{sid} {k}")
        if info["kind"] == "finetune":
            for k in ("candidate_points", "pair_indices", "rankings"):
                np.testing.assert_array_equal(r[k], exp[k], err_msg=f"{sid} {k}")
    assert "tensorflow" not in sys.modules


def test_malformed_sample_is_reported(rope, tmp_path, caplog):
    info, report, _ = rope
    malformed = [s for s in report["skipped"] if s["category"] == "malformed"]
    assert [s["sample"] for s in malformed] == info["malformed"]
    assert "missing point cloud" in malformed[0]["reason"]
    filtered = [s for s in report["skipped"] if s["category"] == "filtered"]
    assert [s["sample"] for s in filtered] == info["filtered"]
    # the warning names the sample (fresh scan so the log is captured here)
    from pam_jax.data import scan
    with caplog.at_level(logging.WARNING, logger="pam_jax.data"):
        scan.scan(info["root"], task="rope", kind="supervised")
    assert any(info["malformed"][0] in r.getMessage() for r in caplog.records)


def test_every_kind_of_malformation_is_reported(tshirt):
    info, report, _ = tshirt
    got = {s["sample"] for s in report["skipped"] if s["category"] == "malformed"}
    assert got == set(info["malformed"]) and len(got) == len(fixtures.MALFORMED_KINDS)


def test_strict_mode_rejects(rope, tmp_path):
    info, _, _ = rope
    with pytest.raises(layout.MalformedSample, match=info["malformed"][0]):
        build_dataset(info["root"], task="rope", kind="supervised", data_dir=tmp_path,
                      strict=True, progress=False)


@pytest.mark.parametrize("which", ["rope", "tshirt"])
def test_episode_splits_do_not_overlap(which, request):
    info, report, ds_dir = request.getfixturevalue(which)
    recs = _records(ds_dir)
    split_of_episode = {}
    for _, (split, r) in recs.items():
        ep = int(r["episode_id"])
        assert split_of_episode.setdefault(ep, split) == split, f"episode {ep} in two splits"
    eps = report["episodes"]
    assert not set(eps["train"]) & set(eps["validation"])
    assert not set(eps["train"]) & set(eps["test"])
    assert not set(eps["validation"]) & set(eps["test"])
    assert (len(eps["train"]), len(eps["validation"]), len(eps["test"])) == (8, 1, 1)
    assert report["num_examples"] == sources.split_sizes(ds_dir)


def test_tfds_data_source_by_name_and_record_order(rope):
    import tensorflow_datasets as tfds

    import pam_jax.data_builders.deformpam  # noqa: F401  registers "deformpam"
    info, report, ds_dir = rope
    src = tfds.data_source("deformpam/rope_supervised", data_dir=str(ds_dir.parents[2]),
                           split="train")
    ids = [text(src[i]["sample_id"]) for i in range(len(src))]
    eps = [int(src[i]["episode_id"]) for i in range(len(src))]
    assert eps == sorted(eps) and len(ids) == report["num_examples"]["train"]   # disable_shuffling
    assert "tensorflow" not in sys.modules


def test_reuse_and_overwrite(rope):
    info, report, ds_dir = rope
    again = build_dataset(info["root"], task="rope", kind="supervised",
                          data_dir=ds_dir.parents[2], progress=False)
    assert again.get("reused") and again["num_examples"] == report["num_examples"]
    assert (ds_dir / stats.STATS_FILE).is_file() and (ds_dir / sources.BUILD_REPORT).is_file()


def test_manual_dir_and_explicit_path(tmp_path):
    import tensorflow_datasets as tfds

    from pam_jax.data_builders.deformpam import Builder
    fixtures.write_fixture(tmp_path / "manual" / "nut_supervised", task="nut", num_episodes=3,
                           samples_per_episode=1, malformed=(), images=False)
    b = Builder(config="nut_supervised", data_dir=str(tmp_path / "tfds"), progress=False)
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(tmp_path / "manual")))
    assert b.report["num_examples"] == {"train": 1, "validation": 1, "test": 1}
    assert b.info.splits["train"].num_examples == 1


def test_bad_inputs_give_one_line_errors(tmp_path, rope):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        build_dataset(tmp_path / "nope", task="rope", kind="supervised", data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown task"):
        build_dataset(tmp_path, task="cloth", kind="supervised", data_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no samples"):
        build_dataset(tmp_path / "empty", task="rope", kind="supervised", data_dir=tmp_path,
                      progress=False)
    with pytest.raises(FileNotFoundError, match="no built dataset"):
        sources.dataset_dir(tmp_path, "rope", "finetune")
    _, _, ds_dir = rope
    with pytest.raises(ValueError, match="no split 'val'"):
        sources.open_source(ds_dir, "val")
    # every sample unusable -> one clear error naming the first problem
    fixtures.write_fixture(tmp_path / "allbad", task="rope", num_episodes=1, samples_per_episode=1,
                           malformed=(), images=False)
    for p in (tmp_path / "allbad").iterdir():
        (p / "annotation.yaml").unlink()
    with pytest.raises(ValueError, match="none of the 1 samples is usable.*not annotated"):
        build_dataset(tmp_path / "allbad", task="rope", kind="supervised", data_dir=tmp_path,
                      progress=False)


def test_out_of_range_coordinates_are_skipped_and_named(tmp_path, capsys):
    import yaml

    from pam_jax.cli import app as cli

    info = fixtures.write_fixture(tmp_path / "src", task="rope", num_episodes=3, malformed=(), images=False)
    far_pose, far_cloud = sorted(info["samples"])[:2]
    meta = tmp_path / "src" / far_pose / layout.METADATA
    doc = yaml.safe_load(meta.read_text())
    ann = next(iter(doc.values()))["annotation"]
    ann["action_poses"][0][0] = 1e30                     # a coordinate of 1e30: the scale would become ~1e30
    meta.write_text(yaml.safe_dump(doc))
    npz = next((tmp_path / "src" / far_cloud).rglob("processed_begin.npz"))
    with np.load(npz) as z:
        pts = z["points"].astype(np.float32)
    np.savez(npz, points=(pts * 1000).astype(np.float16))   # millimetres, not metres
    assert cli.main(["data", "build", "deformpam", "--src", str(tmp_path / "src"), "--task", "rope",
                     "--kind", "supervised", "--data-dir", str(tmp_path / "tfds"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "skipped 2 malformed sample(s)" in out
    assert (f"{far_pose}: annotation.action_poses: a coordinate of 1e+30 is out of the plausible range +-100 "
            "(metres in the table frame)") in out
    assert f"{far_cloud}: processed cloud: a coordinate of" in out
    ds = sources.dataset_dir(tmp_path / "tfds", "rope", "supervised")
    assert stats.load_norm_stats(ds).scale[0] < 5.0      # the good samples' scale, metres


def test_truncated_array_record_is_one_line(rope, tmp_path, capsys):
    import shutil

    from pam_jax.cli import app as cli

    _, _, ds_dir = rope
    copy = tmp_path / "deformpam" / "rope_supervised" / ds_dir.name
    shutil.copytree(ds_dir, copy)
    f = next(copy.glob("*-train.array_record*"))
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"record 0 of split 'train' is unreadable .*truncated or corrupt; "
                                         r"rebuild the dataset"):
        sources.open_source(copy, "train")[0]
    assert cli.main(["data", "inspect", "--data-dir", str(copy), "--num", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pam-jax: error: ") and "truncated or corrupt" in err[0], err
