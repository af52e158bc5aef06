"""Simulated episodes -> the published layout -> the TFDS builder -> the grain pipeline.

Tiny on purpose (rope, 400-point clouds, two episodes of two steps, K = 4 candidates)."""
from __future__ import annotations

import logging
import pathlib

import numpy as np
import pytest

from pam_jax import pointcloud as pc
from pam_jax import preference, tasks
from pam_jax.data import layout, pipeline, sources
from pam_jax.data.build import build as build_dataset
from pam_jax.sim import episodes, make_task

N_POINTS = 400
K = 4


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _build(src: pathlib.Path, tfds_dir: pathlib.Path, data_task: str, kind: str) -> dict:
    logging.getLogger("pam_jax.data").setLevel(logging.WARNING)
    return build_dataset(src, task=data_task, kind=kind, data_dir=tfds_dir, progress=False)


def _records_by_id(ds_dir) -> dict:
    src = sources.open_source(ds_dir, "train")
    return {_text(src[i]["sample_id"]): src[i] for i in range(len(src))}


def _frame(points: np.ndarray, cfg: pipeline.SampleConfig) -> pc.Frame:
    """The task frame the pipeline derives from a stored cloud."""
    _, _, frame = pc.preprocess(points, (), xy_scale=cfg.xy_scale, voxel_size=cfg.voxel_size,
                                n_sigma=cfg.n_sigma)
    return frame


def _candidates_fn(seed: int = 0):
    """A stand-in policy: K picks on the observed cloud, each placed up to 8 cm away."""
    rng = np.random.default_rng(seed)

    def fn(cloud):
        assert cloud.shape == (N_POINTS, 3)
        picks = cloud[rng.choice(len(cloud), K, replace=False)].astype(np.float64)
        places = picks + np.c_[rng.uniform(-0.08, 0.08, (K, 2)), np.zeros(K)]
        return np.stack([picks, places], axis=1)
    return fn


@pytest.fixture(scope="module")
def supervised(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim_sup")
    summary = episodes.write_expert_episodes("rope", root / "src", episodes=2, seed=0,
                                             max_alternatives=4, num_points=N_POINTS,
                                             max_steps=2, progress=False)
    report = _build(root / "src", root / "tfds", summary["data_task"], "supervised")
    return summary, report, pathlib.Path(report["dataset_dir"])


@pytest.fixture(scope="module")
def finetune(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim_ft")
    summary = episodes.write_preference_round("rope", root / "src", states=3, seed=0,
                                              candidates_fn=_candidates_fn(), num_points=N_POINTS,
                                              max_alternatives=3, warmup_steps=1,
                                              steps_per_episode=2, stride=1, progress=False)
    report = _build(root / "src", root / "tfds", summary["data_task"], "finetune")
    return summary, report, pathlib.Path(report["dataset_dir"])


def test_task_names():
    assert tasks.data_task_name("granular") == "nut"
    assert tasks.data_task_name("cloth") == "tshirt_short"
    assert tasks.data_task_name("tshirt_short") == "tshirt_short"
    assert tasks.sim_task_name("nut") == "granular"
    with pytest.raises(ValueError, match="unknown task"):
        tasks.sim_task_name("towel")
    with pytest.raises(ValueError, match="has no simulator"):
        tasks.sim_task_name("toy")
    with pytest.raises(ValueError, match="unknown task .cloth. of the published data"):
        tasks.get_data_task("cloth")


def test_supervised_round_trip(supervised):
    summary, report, ds_dir = supervised
    recs = summary["records"]
    assert summary["episodes"] == 2 and summary["data_task"] == "rope"
    assert summary["samples"] == len(recs) >= 2 and all(r["written"] for r in recs)
    assert {r["episode_idx"] for r in recs} == {0, 1}
    assert report["skipped"] == [] and report["found"] == len(recs)
    assert sum(report["num_examples"].values()) == len(recs)
    assert report["num_examples"]["train"] == len(recs)          # 2 episodes: all in train

    # The written cloud is the simulator's observation, in the world frame (float16 on disk).
    t = make_task("rope", obs_points=N_POINTS)
    t.reset(0)
    stored = _records_by_id(ds_dir)
    first = stored[recs[0]["sample_id"]]
    np.testing.assert_array_equal(first["points"], t.observe().astype(np.float16).astype(np.float32))
    for r in recs:
        s = stored[r["sample_id"]]
        assert s["episode_id"] == r["episode_idx"] and _text(s["action_type"]) == "single_pick_and_place"
        np.testing.assert_array_equal(s["action"], r["action"].astype(np.float32))
        np.testing.assert_array_equal(s["multiple_actions"], r["alternatives"].astype(np.float32))
        assert s["action_finite"].all() and s["multiple_actions_finite"].all()
        np.testing.assert_array_equal(r["action"], r["alternatives"][0])   # executed = first

    src = sources.open_source(ds_dir, "train")
    by_rec = {i: src[i] for i in range(len(src))}
    expected = {r["sample_id"]: r for r in recs}
    # Without preprocessing, the batch holds the written world-frame values exactly.
    raw = pipeline.DeformPAMData(ds_dir, batch_size=len(recs), augment=False, preprocess=False,
                                 num_points=N_POINTS, num_threads=1)
    b = raw.batch(0)
    for row, idx in enumerate(b["record_index"]):
        r = expected[_text(by_rec[int(idx)]["sample_id"])]
        m = 1 + len(r["alternatives"])
        np.testing.assert_array_equal(b["actions"][row, 0], r["action"].astype(np.float32))
        np.testing.assert_array_equal(b["actions"][row, 1:m], r["alternatives"].astype(np.float32))
        assert b["action_valid"][row, :m].all() and not b["action_valid"][row, m:].any()
        np.testing.assert_array_equal(np.unique(b["points"][row], axis=0),
                                      np.unique(by_rec[int(idx)]["points"], axis=0))
    # With the task's preprocessing: bbox-centred, xy x 1.75, actions through the same frame.
    data = pipeline.DeformPAMData(ds_dir, batch_size=len(recs), augment=False, num_threads=1)
    assert data.config.xy_scale == 1.75
    b = data.batch(0)
    for row, idx in enumerate(b["record_index"]):
        rec = by_rec[int(idx)]
        r = expected[_text(rec["sample_id"])]
        f = _frame(rec["points"], data.config)
        want = (np.concatenate([r["action"][None], r["alternatives"]]) - f.center) * [1.75, 1.75, 1.0]
        np.testing.assert_allclose(b["actions"][row, :len(want)], want, atol=1e-5)
        assert np.abs(b["points"][row]).max() < 1.0
        np.testing.assert_allclose(f.invert(b["actions"][row, 0]), r["action"], atol=1e-5)


def test_finetune_round_trip_and_dpo_batch(finetune):
    summary, report, ds_dir = finetune
    recs = summary["records"]
    assert summary["samples"] == len(recs) == 3 and summary["data_task"] == "rope"
    assert report["skipped"] == [] and report["num_examples"]["train"] == 3
    stored = _records_by_id(ds_dir)
    for r in recs:
        s = stored[r["sample_id"]]
        assert r["candidates"].shape == (K, 2, 3)
        # 2K sampled points, then the expert's action as candidate K (points 2K, 2K+1).
        np.testing.assert_array_equal(r["candidate_points"][:2 * K], r["candidates"].reshape(-1, 3))
        np.testing.assert_array_equal(r["candidate_points"][2 * K:], r["expert"])
        np.testing.assert_array_equal(s["candidate_points"], r["candidate_points"].astype(np.float32))
        np.testing.assert_array_equal(s["pair_indices"], r["pair_indices"])
        np.testing.assert_array_equal(s["rankings"], r["rankings"])
        np.testing.assert_array_equal(s["action"], r["expert"].astype(np.float32))
        assert s["pair_indices"].shape == (3 * K, 4)
        np.testing.assert_array_equal(s["pair_indices"][2 * K:],
                                      [[2 * K, 2 * K + 1, 2 * k, 2 * k + 1] for k in range(K)])
        assert set(s["rankings"][2 * K:].tolist()) <= {0, 1, 2}   # expert rows are real labels

    data = pipeline.DeformPAMData(ds_dir, batch_size=3, augment=False, num_threads=1)
    b = data.batch(0)
    src = sources.open_source(ds_dir, "train")
    kp = 2 * K + 2
    for row, idx in enumerate(b["record_index"]):
        rec = src[int(idx)]
        r = next(x for x in recs if x["sample_id"] == _text(rec["sample_id"]))
        f = _frame(rec["points"], data.config)
        np.testing.assert_allclose(b["candidate_points"][row, :kp], f.apply(r["candidate_points"]),
                                   atol=1e-5)
        assert b["candidate_valid"][row, :kp].all()
        np.testing.assert_array_equal(b["pair_indices"][row, :3 * K], r["pair_indices"])
        np.testing.assert_array_equal(b["rankings"][row, :3 * K], r["rankings"])
        np.testing.assert_allclose(b["actions"][row, 0], f.apply(r["expert"]), atol=1e-5)

    dpo = preference.dpo_batch(b)
    n_c = data.config.max_candidate_points // 2 + 1
    assert n_c == K + 2                       # K sampled + the stored expert + actions[:, 0]
    assert dpo["candidates"].shape == (3, n_c, 2, 3)
    np.testing.assert_allclose(dpo["candidates"][:, -1], b["actions"][:, 0])
    np.testing.assert_allclose(dpo["candidates"][:, K], b["actions"][:, 0], atol=1e-6)
    for row, idx in enumerate(b["record_index"]):
        r = next(x for x in recs if x["sample_id"] == _text(src[int(idx)]["sample_id"]))
        np.testing.assert_array_equal(dpo["rankings"][row, :3 * K], r["rankings"])
        np.testing.assert_array_equal(dpo["pairs"][row, 2 * K:3 * K], [[K, k] for k in range(K)])


def test_finetune_without_the_expert_in_candidates(tmp_path):
    """expert_in_candidates=False: exactly 2K points stored (the published form); the expert rows
    name points 2K, 2K+1 and survive; dpo_batch gives K + 1 candidates, the last the expert's."""
    summary = episodes.write_preference_round("rope", tmp_path / "src", states=2, seed=5,
                                              candidates_fn=_candidates_fn(1), num_points=N_POINTS,
                                              max_alternatives=2, warmup_steps=0,
                                              expert_in_candidates=False, execute="expert",
                                              progress=False)
    report = _build(tmp_path / "src", tmp_path / "tfds", "rope", "finetune")
    assert report["skipped"] == []
    for r in summary["records"]:
        assert r["candidate_points"].shape == (2 * K, 3)
        np.testing.assert_array_equal(r["pair_indices"][2 * K:3 * K, :2], [[2 * K, 2 * K + 1]] * K)
    data = pipeline.DeformPAMData(pathlib.Path(report["dataset_dir"]), batch_size=2,
                                  augment=False, num_threads=1)
    b = data.batch(0)
    dpo = preference.dpo_batch(b)
    assert dpo["candidates"].shape == (2, K + 1, 2, 3)
    np.testing.assert_array_equal(dpo["candidates"][:, K], b["actions"][:, 0])
    for row, r in enumerate(summary["records"]):   # the expert-vs-candidate rows reach the DPO batch
        np.testing.assert_array_equal(dpo["pairs"][row, 2 * K:3 * K], [[K, k] for k in range(K)])
        np.testing.assert_array_equal(dpo["rankings"][row, 2 * K:3 * K], r["rankings"][2 * K:3 * K])


def test_crash_mid_write_leaves_no_half_sample(tmp_path, monkeypatch):
    src = tmp_path / "src"
    real = layout._write_text_atomic
    seen = []

    def crashing(path, text, **kw):
        if path.name == layout.ANNOTATION:
            seen.append(path)
            if len(seen) == 2:                     # the 2nd sample: metadata written, then crash
                raise RuntimeError("simulated crash")
        return real(path, text, **kw)

    monkeypatch.setattr(layout, "_write_text_atomic", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        episodes.write_expert_episodes("rope", src, episodes=1, num_points=N_POINTS,
                                       max_alternatives=2, max_steps=2, progress=False)
    monkeypatch.setattr(layout, "_write_text_atomic", real)
    assert [p.name for p in src.iterdir()] == ["rope_supervised_ep00000_step00"]   # no leftovers
    report = _build(src, tmp_path / "tfds", "rope", "supervised")
    assert report["found"] == 1 and report["skipped"] == []
    assert sum(report["num_examples"].values()) == 1
    # A rerun that keeps the existing samples resumes where the crash happened.
    again = episodes.write_expert_episodes("rope", src, episodes=1, num_points=N_POINTS,
                                           max_alternatives=2, max_steps=2, if_exists="skip",
                                           progress=False)
    assert again["skipped_existing"] == 1 and again["samples"] == 1
    assert [r["written"] for r in again["records"]] == [False, True]
    assert len(layout.find_samples(src)) == 2
    with pytest.raises(FileExistsError, match="sample exists"):
        episodes.write_expert_episodes("rope", src, episodes=1, num_points=N_POINTS,
                                       max_steps=1, progress=False)


def test_bad_candidates_are_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"expected shape \(K, 2, 3\)"):
        episodes.write_preference_round("rope", tmp_path, states=1, warmup_steps=0,
                                        candidates_fn=lambda cloud: np.zeros((3, 3)),
                                        num_points=N_POINTS, progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="execute"):
        episodes.write_preference_round("rope", tmp_path, states=1, execute="worst",
                                        candidates_fn=_candidates_fn(), progress=False)


def test_whole_horizon_collection_visits_late_steps(tmp_path):
    """Default: no expert warm-up, the policy rolls out over the whole horizon (here 6 steps) and
    every stride-th state is recorded (3 per episode -> stride 2); the old mode (expert warm-up,
    consecutive states, stride 1) stays available."""
    rng = np.random.default_rng(2)
    calls = []

    def stub(cloud):                         # 2 candidates: short drags of points of the cloud
        calls.append(1)
        picks = cloud[rng.choice(len(cloud), 2, replace=False)].astype(np.float64)
        return np.stack([picks, picks + [0.03, 0.0, 0.0]], axis=1)

    r = episodes.write_preference_round("rope", tmp_path / "whole", states=3, seed=3, candidates_fn=stub,
                                        num_points=N_POINTS, max_alternatives=1, steps_per_episode=3,
                                        max_steps=6, progress=False)
    assert (r["horizon"], r["stride"]) == (6, 2)
    steps = [rec["step"] for rec in r["records"]]
    assert len({rec["episode_idx"] for rec in r["records"]}) == 1
    assert np.all(np.diff(steps) == 2) and steps[0] in (0, 1) and steps[-1] >= 4   # late steps too
    # the policy also acted on the unrecorded steps (a real rollout), and was asked at every step
    assert r["rollout_steps"] == len(calls) > len(steps)

    old = episodes.write_preference_round("rope", tmp_path / "early", states=2, seed=3, candidates_fn=stub,
                                          num_points=N_POINTS, max_alternatives=1, warmup_steps=3,
                                          steps_per_episode=4, stride=1, progress=False)
    steps = [rec["step"] for rec in old["records"]]
    assert old["stride"] == 1 and np.all(np.diff(steps) == 1) and steps[0] <= 3
    with pytest.raises(ValueError, match="stride"):
        episodes.write_preference_round("rope", tmp_path / "bad", states=1, candidates_fn=stub, stride=0,
                                        progress=False)
