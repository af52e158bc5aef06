"""The toy bimodal task: scenes, annotated poses, and the scoring rule."""
import numpy as np
import pytest

from pam_jax.normalize import NormStats
from pam_jax.toy import data as toy
from pam_jax.toy.evaluate import score_samples


def test_scene_geometry():
    rng = np.random.default_rng(0)
    cloud, ends, length = toy.make_scene(rng, 1000)
    assert cloud.shape == (1000, 3) and ends.shape == (2, 3)
    assert ends[0, 0] <= ends[1, 0]                              # ordered by x
    assert np.linalg.norm(ends[0] - ends[1]) == pytest.approx(length, rel=1e-5)
    assert toy.LENGTH[0] <= length <= toy.LENGTH[1]
    # every endpoint has cloud points next to it; the cloud lies along the bar
    for e in ends:
        assert np.min(np.linalg.norm(cloud - e, axis=1)) < 0.02
    axis = (ends[1] - ends[0]) / length
    along = (cloud - ends[0]) @ axis
    assert along.min() > -0.02 and along.max() < length + 0.02


def test_batch_holds_both_orders():
    b = toy.make_batch(np.random.default_rng(1), 4, 100)
    np.testing.assert_array_equal(b["actions"][:, 0], b["actions"][:, 1, ::-1])
    assert b["action_valid"].all() and b["action_mask"].shape == (4, 2)


def test_data_is_a_function_of_the_step_and_splits_over_processes():
    full = toy.ToyBimodalData(batch_size=8, num_points=32, seed=3)
    parts = [toy.ToyBimodalData(batch_size=8, num_points=32, seed=3, process_index=i, process_count=2)
             for i in range(2)]
    a = full.batch(5)
    np.testing.assert_array_equal(a["points"], full.batch(5)["points"])
    assert not np.array_equal(a["points"], full.batch(6)["points"])
    glued = np.concatenate([p.batch(5)["points"] for p in parts])
    np.testing.assert_array_equal(glued, a["points"])
    with pytest.raises(ValueError, match="divisible"):
        toy.ToyBimodalData(batch_size=7, num_points=32, process_count=2)


def test_score_samples_hand_made():
    ends = np.array([[[0.0, 0, 0], [1.0, 0, 0]]])          # length 1, tol 0.05
    lengths = np.array([1.0])
    samples = np.array([[
        [[0.0, 0.0, 0], [1.0, 0.0, 0]],     # exact, mode 0
        [[1.0, 0.04, 0], [0.0, 0.0, 0]],    # within, mode 1
        [[0.0, 0.0, 0], [1.0, 0.06, 0]],    # outside (6% off), mode 0
        [[0.5, 0.0, 0], [0.5, 0.0, 0]],     # the middle: outside
    ]])
    r = score_samples(samples, ends, lengths)
    assert r["within"] == pytest.approx(0.5)
    assert r["mode1"] == pytest.approx(0.25)


def test_norm_stats_cover_the_actions():
    data = toy.ToyBimodalData(batch_size=4, num_points=16)
    norm = data.norm_stats()
    b = toy.make_batch(np.random.default_rng(9), 64, 16)
    n = norm.normalize(b["actions"])
    assert np.abs(n).max() <= 1.0
    assert len(set(norm.scale)) == 1          # one isotropic scale


def test_norm_stats_round_trip_and_errors():
    s = NormStats.from_actions(np.array([[0.0, 0, 0], [2.0, 1, 0.5]]), margin=1.0)
    assert s.center == (1.0, 0.5, 0.25) and s.scale == (1.0, 1.0, 1.0)
    x = np.array([[0.3, -0.2, 0.1]], np.float32)
    np.testing.assert_allclose(s.unnormalize(s.normalize(x)), x, atol=1e-6)
    assert NormStats.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="no finite"):
        NormStats.from_actions(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="normalization stats"):
        NormStats.from_dict({"center": [0, 0]})
    with pytest.raises(ValueError, match="positive"):
        NormStats.from_dict({"center": [0, 0, 0], "scale": [1, 0, 1]})
