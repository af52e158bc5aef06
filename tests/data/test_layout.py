"""The sample layout: strict reader, atomic writer, fixture generator, episode splits."""
from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pam_jax import tasks
from pam_jax.data import fixtures, layout, scan


def _write(root, sid="s0", **kw):
    rng = np.random.default_rng(0)
    pts = rng.uniform(-0.2, 0.2, (50, 3)).astype(np.float16)
    args = dict(points=pts, episode_idx=3, action_type="single_pick_and_place",
                action=np.asarray(pts[:2], np.float32), multiple_actions=np.zeros((2, 2, 3)))
    args.update(kw)
    return layout.write_sample(root, sid, **args), pts


def test_write_then_read_round_trips(tmp_path):
    path, pts = _write(tmp_path, raw_points=np.zeros((4, 3)))
    assert (path / "annotation.yaml").is_file()
    s = layout.read_sample(path, root=tmp_path, task="rope")
    assert s.sample_id == "s0" and s.episode_id == 3 and s.action_type == "single_pick_and_place"
    np.testing.assert_array_equal(s.points, pts.astype(np.float32))
    np.testing.assert_array_equal(s.action, pts[:2].astype(np.float32))
    assert s.action_finite.all() and s.multiple_actions.shape == (2, 2, 3)
    meta = yaml.safe_load((path / "metadata.yaml").read_text())
    (ns,) = meta
    poses = np.asarray(meta[ns]["annotation"]["action_poses"], float)
    assert poses.shape == (4, 6)
    assert np.isnan(poses[[1, 3]]).all() and np.isfinite(poses[[0, 2]]).all()   # rows 0, 2 used
    assert not meta[ns]["pcd"]["processed"]["begin"].endswith(".npz")           # suffix omitted


def test_rows_follow_the_task_and_nan_becomes_zero(tmp_path):
    act = np.array([[0.1, 0.2, 0.0], [0.3, 0.4, 0.0]])
    multi = np.stack([act, act + 1])
    path, _ = _write(tmp_path, action_type="fling", action=act, multiple_actions=multi)
    meta = yaml.safe_load((path / "metadata.yaml").read_text())
    poses = np.asarray(meta["pam_jax"]["annotation"]["action_poses"], float)
    np.testing.assert_allclose(poses[[0, 1], :3], act)                          # fling: rows 0, 1
    assert np.isnan(poses[[2, 3]]).all()
    # NaN in a used row of one annotated pose -> 0 and finite=False, order kept
    meta["pam_jax"]["annotation"]["multiple_action_poses"][1][1][0] = float("nan")
    (path / "metadata.yaml").write_text(yaml.safe_dump(meta))
    s = layout.read_sample(path, task="tshirt_short")
    np.testing.assert_allclose(s.action, act)
    np.testing.assert_allclose(s.multiple_actions[0], act)
    assert s.multiple_actions[1, 1, 0] == 0.0
    assert s.multiple_actions_finite.tolist() == [[True, True], [True, False]]


def test_failed_write_leaves_nothing_visible(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="NaN"):
        _write(tmp_path, points=np.full((5, 3), np.nan))
    assert list(tmp_path.iterdir()) == []
    real_replace = os.replace

    def crash_on_folder(src, dst):
        if pathlib.Path(dst).name == "s1":
            raise OSError("simulated crash")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_folder)
    with pytest.raises(OSError, match="simulated"):
        _write(tmp_path, sid="s1")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []        # no sample, no temporary folder left


def test_existing_sample_and_overwrite(tmp_path):
    _write(tmp_path)
    with pytest.raises(FileExistsError, match="overwrite"):
        _write(tmp_path)
    path, _ = _write(tmp_path, episode_idx=7, overwrite=True)
    assert layout.read_sample(path).episode_id == 7
    assert [p.name for p in tmp_path.iterdir()] == ["s0"]


def test_unannotated_rollout_then_annotation(tmp_path):
    path, pts = _write(tmp_path, annotated=False, candidates=np.zeros((4, 3)), action=None,
                       multiple_actions=None)
    assert not (path / "annotation.yaml").exists()
    with pytest.raises(layout.MalformedSample, match="not annotated"):
        layout.read_sample(path)
    ann = layout.make_annotation(action_type="single_pick_and_place", action=pts[:2],
                                 multiple_actions=np.zeros((0, 2, 3)),
                                 pair_indices=[[0, 1, 2, 3]], rankings=[1])
    layout.add_annotation(path, ann)
    s = layout.read_sample(path, kind="finetune")
    assert s.rankings.tolist() == [1] and s.pair_indices.tolist() == [[0, 1, 2, 3]]
    assert s.candidate_points.shape == (4, 3)


def test_hidden_and_nested_folders(tmp_path):
    _write(tmp_path / "a" / "b", sid="deep")
    (tmp_path / ".incomplete-x").mkdir()
    (tmp_path / ".incomplete-x" / "metadata.yaml").write_text("{}")
    found = layout.find_samples(tmp_path)
    assert [layout.sample_id_of(p, tmp_path) for p in found] == ["a/b/deep"]


@pytest.mark.parametrize("how,reason", [
    ("missing_npz", "missing point cloud"),
    ("unreadable_npz", "unreadable processed_begin.npz"),
    ("missing_key", "missing key annotation.action_poses"),
    ("bad_shape", "expected shape (4, >=3)"),
    ("no_annotation", "not annotated"),
    ("bad_indices", "outside [0, 18)"),   # 16 candidate points + the annotator's action
])
def test_each_malformation_is_named(tmp_path, how, reason):
    info = fixtures.write_fixture(tmp_path, task="rope", kind="finetune", num_episodes=1,
                                  samples_per_episode=1, malformed=(how,), images=False)
    (bad,) = info["malformed"]
    with pytest.raises(layout.MalformedSample) as e:
        layout.read_sample(tmp_path / bad, root=tmp_path, task="rope", kind="finetune")
    assert reason in str(e.value) and bad in str(e.value) and "\n" not in str(e.value)


def test_fixture_is_in_the_published_form(tmp_path):
    info = fixtures.write_fixture(tmp_path, task="tshirt_short", kind="finetune", num_episodes=2)
    sid = next(iter(info["samples"]))
    d = tmp_path / sid
    assert (d / "observations/0/rgb/begin.jpg").is_file() and (d / "observations/0/mask/begin.png").is_file()
    with np.load(d / "observations/0/pcd/processed_begin.npz") as z:
        assert z["points"].dtype == np.float16 and z["points"].shape[1] == 3
    meta = yaml.safe_load((d / "metadata.yaml").read_text())
    (ns,) = meta
    body = meta[ns]
    assert isinstance(body["episode_idx"], int) and body["action"]["type"] == "fling"
    assert np.asarray(body["pose_virtual"]["prediction"]["begin"]).shape == (16, 6)
    ann = body["annotation"]
    assert np.asarray(ann["multiple_action_poses"], float).shape == (3, 4, 6)
    assert np.asarray(ann["selected_grasp_point_indices"]).shape == (24, 4)
    assert set(ann["grasp_point_rankings"]) <= {0, 1, 2, 3}
    for k in ("garment_keypoints", "general_object_state", "garment_smoothing_style"):
        assert k in ann
    # every good sample parses to exactly the expected values
    for sid, exp in info["samples"].items():
        s = layout.read_sample(tmp_path / sid, root=tmp_path, task="tshirt_short", kind="finetune")
        for k in ("points", "action", "action_finite", "multiple_actions",
                  "multiple_actions_finite", "candidate_points", "pair_indices", "rankings"):
            np.testing.assert_array_equal(getattr(s, k), exp[k], err_msg=f"{sid} {k}")


def test_bad_inputs_give_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="did you mean 'rope'"):
        tasks.get_task("ropee")
    with pytest.raises(ValueError, match="unknown kind"):
        tasks.check_kind("pretrain")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        layout.find_samples(tmp_path / "nope")
    with pytest.raises(ValueError, match="sample_id"):
        _write(tmp_path, sid="../escape")
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, 3\)"):
        _write(tmp_path, action=np.zeros((3, 3)))
    with pytest.raises(FileNotFoundError, match="no samples"):
        scan.scan(tmp_path, task="rope", kind="supervised")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=60, unique=True), st.integers(0, 99))
def test_episode_split_partitions(episodes, seed):
    sp = scan.split_episodes(episodes, seed=seed)
    got = sp["train"] + sp["validation"] + sp["test"]
    assert sorted(got) == sorted(episodes)                       # a partition: nothing lost
    assert len(set(got)) == len(got)                             # no episode in two splits
    n = len(episodes)
    if n >= 3:
        assert len(sp["validation"]) == max(1, n // 10) and len(sp["test"]) == max(1, n // 10)
    assert sp == scan.split_episodes(list(reversed(episodes)), seed=seed)   # input order irrelevant


@pytest.mark.parametrize("stored,name", [(16, "single_pick_and_place"), ("single_pick_and_place",
                                          "single_pick_and_place"), ("ActionTypeDef.SWEEP", "sweep"),
                                          ("14", "sweep"), (None, "single_pick_and_place")])
def test_action_type_codes_and_names(tmp_path, stored, name):
    path, _ = _write(tmp_path)
    meta = yaml.safe_load((path / "metadata.yaml").read_text())
    assert meta["pam_jax"]["annotation"]["action_type"] == 16          # written as the int code
    assert meta["pam_jax"]["action"]["type"] == "single_pick_and_place"
    meta["pam_jax"]["annotation"]["action_type"] = stored
    (path / "metadata.yaml").write_text(yaml.safe_dump(meta))
    assert layout.read_sample(path).action_type == name


def test_unknown_action_type_code_is_malformed(tmp_path):
    path, _ = _write(tmp_path)
    meta = yaml.safe_load((path / "metadata.yaml").read_text())
    meta["pam_jax"]["annotation"]["action_type"] = 999
    (path / "metadata.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(layout.MalformedSample, match="unknown action type 999"):
        layout.read_sample(path)
