"""The grain pipeline: batch contents, augmentation glue, order, resume, multi-host slices."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.fixtures_deformpam import build_fixture, text

from pam_jax import pointcloud as pc
from pam_jax.data import pipeline, sources, stats


@pytest.fixture(scope="module")
def rope(tmp_path_factory):
    return build_fixture(tmp_path_factory.mktemp("rope"), task="rope", kind="supervised",
                         num_episodes=10, samples_per_episode=2)


@pytest.fixture(scope="module")
def tshirt(tmp_path_factory):
    return build_fixture(tmp_path_factory.mktemp("tshirt"), task="tshirt_short", kind="finetune",
                         num_episodes=10, samples_per_episode=1)


def _expected_by_record(info, ds_dir, split="train"):
    src = sources.open_source(ds_dir, split)
    return src, [info["samples"][text(src[i]["sample_id"])] for i in range(len(src))]


@pytest.mark.parametrize("which", ["rope", "tshirt"])
def test_batch_round_trips_every_value(which, request):
    """No preprocessing, no augmentation, num_points >= every cloud: each batch row holds the
    record's exact points (plus duplicates), actions, flags, candidates and rankings."""
    info, _, ds_dir = request.getfixturevalue(which)
    src, exp = _expected_by_record(info, ds_dir)
    npts = stats.dataset_shapes(ds_dir)["max_points"]
    data = pipeline.DeformPAMData(ds_dir, batch_size=len(src), preprocess=False, augment=False,
                                  num_points=npts, num_threads=2)
    b = data.batch(0)
    assert sorted(b["record_index"].tolist()) == list(range(len(src)))      # one epoch, all records
    m = data.config.max_actions
    assert b["points"].shape == (len(src), npts, 3) and b["points"].dtype == np.float32
    assert b["actions"].shape == (len(src), m, 2, 3) and b["action_valid"].dtype == bool
    np.testing.assert_array_equal(b["action_mask"], 1.0)
    for row, rec in enumerate(b["record_index"]):
        e = exp[rec]
        np.testing.assert_array_equal(np.unique(b["points"][row], axis=0), np.unique(e["points"], axis=0))
        assert b["episode_id"][row] == e["episode_id"]
        valid = np.concatenate([[e["action_finite"].all()], e["multiple_actions_finite"].all(-1)])
        acts = np.concatenate([e["action"][None], e["multiple_actions"]])
        n = len(valid)
        np.testing.assert_array_equal(b["action_valid"][row, :n], valid)
        assert not b["action_valid"][row, n:].any()
        np.testing.assert_array_equal(b["actions"][row, :n][valid], acts[valid])
        np.testing.assert_array_equal(b["actions"][row][~b["action_valid"][row]], 0.0)
        if info["kind"] == "finetune":
            k, p = e["candidate_points"].shape[0], e["rankings"].shape[0]
            np.testing.assert_array_equal(b["candidate_points"][row, :k], e["candidate_points"])
            assert b["candidate_valid"][row, :k].all() and not b["candidate_valid"][row, k:].any()
            np.testing.assert_array_equal(b["pair_indices"][row, :p], e["pair_indices"])
            np.testing.assert_array_equal(b["rankings"][row, :p], e["rankings"])
            assert (b["rankings"][row, p:] == 3).all()
            assert b["pair_indices"].dtype == np.int32 and b["rankings"].dtype == np.int32


def test_preprocess_maps_actions_with_the_cloud(rope):
    info, _, ds_dir = rope
    src, exp = _expected_by_record(info, ds_dir)
    data = pipeline.DeformPAMData(ds_dir, batch_size=4, augment=False)
    b = data.batch(0)
    for row, rec in enumerate(b["record_index"]):
        e = exp[rec]
        _, (acts,), frame = pc.preprocess(e["points"], (e["action"],), xy_scale=1.75,
                                          voxel_size=0.0035)
        np.testing.assert_allclose(b["actions"][row, 0], acts, atol=1e-6)
        assert b["points"].shape[1] == 3000                                   # task default
        assert np.abs(b["points"][row]).max() < 1.0                           # zero-centred, scaled


@pytest.mark.parametrize("which", ["rope", "tshirt"])
def test_augmentation_keeps_actions_glued_to_the_cloud(which, request):
    """The fixture's pick points (all fling points, and the candidate points) are cloud
    points; after preprocessing (exact map) and augmentation they are still cloud points."""
    info, _, ds_dir = request.getfixturevalue(which)
    npts = stats.dataset_shapes(ds_dir)["max_points"]
    data = pipeline.DeformPAMData(ds_dir, batch_size=8, num_points=npts, voxel_size=None,
                                  n_sigma=None, seed=3)
    assert data.config.augment and data.config.max_rotation_deg > 0
    on_cloud = [(0, 0)] if info["task"] == "rope" else [(0, 0), (0, 1)]
    for step in range(3):
        b = data.batch(step)
        for row in range(8):
            cloud = b["points"][row]
            for m, j in on_cloud:
                d = np.abs(cloud - b["actions"][row, m, j]).max(-1).min()
                assert d < 1e-6, f"action point left the cloud by {d}"
            if "candidate_points" in b:
                c = b["candidate_points"][row][b["candidate_valid"][row]]
                d = np.abs(cloud[None] - c[:, None]).max(-1).min(-1)
                assert d.max() < 1e-6
    # augmentation really changes the cloud (z rotation + depth offset)
    b0 = pipeline.DeformPAMData(ds_dir, batch_size=8, num_points=npts, voxel_size=None,
                                n_sigma=None, seed=3, augment=False).batch(0)
    assert not np.allclose(np.sort(b0["points"][0, :, 2]), np.sort(data.batch(0)["points"][0, :, 2]))


def test_fling_swap_swaps_candidates_pairwise(tshirt):
    info, _, ds_dir = tshirt
    cfg = pipeline.sample_config("tshirt_short", "finetune", max_rotation_deg=0.0, depth_offset=0.0,
                                 swap_pick_prob=1.0, preprocess=False, num_points=600)
    src = sources.open_source(ds_dir, "train")
    rec = src[0]
    s = pipeline.make_sample(rec, cfg, np.random.default_rng(0))
    np.testing.assert_allclose(s["actions"][0], rec["action"][::-1])
    k = rec["candidate_points"].shape[0]
    np.testing.assert_allclose(s["candidate_points"][:k],
                               rec["candidate_points"].reshape(-1, 2, 3)[:, ::-1].reshape(-1, 3))


def test_resumed_iterator_continues_the_same_order(rope):
    _, _, ds_dir = rope
    a = pipeline.DeformPAMData(ds_dir, batch_size=6, seed=7, num_points=256)
    seen = [a.batch(s) for s in range(6)]
    b = pipeline.DeformPAMData(ds_dir, batch_size=6, seed=7, num_points=256)
    b.batch(0)
    b.batch(1)
    state = json.loads(json.dumps(b.get_state()))                   # JSON-serialisable
    assert state["next_step"] == 2
    c = pipeline.DeformPAMData(ds_dir, batch_size=6, seed=7, num_points=256)
    c.set_state(state)
    assert c.get_state()["next_step"] == 2
    for s in range(2, 6):
        got = c.batch(s)
        for k in seen[s]:
            np.testing.assert_array_equal(got[k], seen[s][k], err_msg=f"step {s} {k}")
    # random access and the threadless path agree with the prefetched stream
    np.testing.assert_array_equal(c.batch(1)["points"], seen[1]["points"])
    np.testing.assert_array_equal(c.batch_direct(4)["actions"], seen[4]["actions"])
    with pytest.raises(ValueError, match="global_batch_size"):
        pipeline.DeformPAMData(ds_dir, batch_size=4, seed=7).set_state(state)
    with pytest.raises(ValueError, match="seed"):
        pipeline.DeformPAMData(ds_dir, batch_size=6, seed=8).set_state(state)


def test_epochs_visit_every_record_once_and_reshuffle(rope):
    _, _, ds_dir = rope
    d = pipeline.DeformPAMData(ds_dir, batch_size=4, seed=0, num_points=64)
    n = d.num_records
    e0 = [d.record_index(p) for p in range(n)]
    e1 = [d.record_index(p) for p in range(n, 2 * n)]
    assert sorted(e0) == sorted(e1) == list(range(n)) and e0 != e1
    other = pipeline.DeformPAMData(ds_dir, batch_size=4, seed=1, num_points=64)
    assert [other.record_index(p) for p in range(n)] != e0


def test_process_local_batches_tile_the_global_batch(rope):
    _, _, ds_dir = rope
    full = pipeline.DeformPAMData(ds_dir, batch_size=8, seed=5, num_points=128)
    parts = [pipeline.DeformPAMData(ds_dir, batch_size=8, seed=5, num_points=128,
                                    process_index=i, process_count=4) for i in range(4)]
    for step in (0, 3):
        g = full.batch(step)
        loc = [p.batch(step) for p in parts]
        assert loc[0]["points"].shape[0] == 2
        for k in g:
            np.testing.assert_array_equal(np.concatenate([x[k] for x in loc]), g[k])


def test_norm_stats_cover_augmented_actions(rope):
    _, _, ds_dir = rope
    d = pipeline.DeformPAMData(ds_dir, batch_size=16, seed=0, num_points=128)
    norm = d.norm_stats()
    assert norm == stats.load_norm_stats(ds_dir)                       # cached, task defaults
    for s in range(4):
        b = d.batch(s)
        a = norm.normalize(b["actions"][b["action_valid"]])
        assert np.abs(a).max() <= 1.0


def test_from_config_and_eval_batches(rope):
    from pam_jax import config as config_lib

    _, _, ds_dir = rope
    cfg = config_lib.Config()
    cfg = config_lib.override(cfg, ["data.source=tfds", f"data.data_dir={ds_dir.parents[2]}",
                                    "data.dataset=deformpam/rope_supervised", "data.batch_size=4",
                                    "data.num_points=300", "data.max_poses=3", "data.task=rope"])
    d = pipeline.from_config(cfg, process_index=1, process_count=2)
    b = d.batch(0)
    assert b["points"].shape == (2, 300, 3) and b["actions"].shape == (2, 3, 2, 3)
    batches = list(pipeline.eval_batches(ds_dir, split="validation", batch_size=3))
    assert sum(len(x["record_index"]) for x in batches) == len(sources.open_source(ds_dir, "validation"))
    again = list(pipeline.eval_batches(ds_dir, split="validation", batch_size=3))
    np.testing.assert_array_equal(batches[0]["points"], again[0]["points"])   # deterministic


def test_bad_inputs_give_one_line_errors(rope, tmp_path):
    _, _, ds_dir = rope
    with pytest.raises(ValueError, match="not divisible by 3 processes"):
        pipeline.DeformPAMData(ds_dir, batch_size=8, process_count=3)
    with pytest.raises(ValueError, match="no split 'dev'"):
        pipeline.DeformPAMData(ds_dir, batch_size=8, split="dev")
    with pytest.raises(ValueError, match="unknown pipeline settings"):
        pipeline.DeformPAMData(ds_dir, batch_size=8, num_point=10)
    with pytest.raises(ValueError, match="num_points"):
        pipeline.DeformPAMData(ds_dir, batch_size=8, num_points=0)
    with pytest.raises(FileNotFoundError, match="no built dataset"):
        pipeline.make_train_data(tmp_path, task="nut", batch_size=8)
    with pytest.raises(ValueError, match="step"):
        pipeline.DeformPAMData(ds_dir, batch_size=8).batch(-1)
    with pytest.raises(ValueError, match="data state"):
        pipeline.DeformPAMData(ds_dir, batch_size=8).set_state({"next_step": 3})
