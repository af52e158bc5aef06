"""Tests for pam_jax.pointcloud: hand-computed values, invariants and every bad-input path."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pam_jax import pointcloud as pc


def rng(seed=0):
    return np.random.default_rng(seed)


def pairwise(x):
    x = np.asarray(x, np.float64)
    return np.linalg.norm(x[:, None] - x[None], axis=-1)


def is_member(row, cloud):
    return bool(np.any(np.all(cloud == row, axis=1)))


# --------------------------------------------------------------------------- validation


def test_check_cloud_returns_float32_and_accepts_ints():
    out = pc.check_cloud([[1, 2, 3], [4, 5, 6]])
    assert out.dtype == np.float32 and out.shape == (2, 3)
    np.testing.assert_array_equal(out, [[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize(
    "bad, pattern",
    [
        (np.zeros((5, 2)), r"^points: expected shape \(N, 3\), got \(5, 2\)$"),
        (np.zeros(3), r"expected shape \(N, 3\), got \(3,\)"),
        (np.zeros((2, 4, 3)), r"expected shape \(N, 3\), got \(2, 4, 3\)"),
        (np.zeros((0, 3)), r"^points: empty cloud \(0 points\)$"),
        (np.array([[0, 0, np.nan], [np.inf, 1, -np.inf]]), r"^points: 3 non-finite values \(NaN/inf\)$"),
        (np.array([[1e39, 0, 0]]), r"overflow float32"),
        (np.array([["a", "b", "c"]]), r"real numeric array"),
        ([[1, 2, 3], [1, 2]], r"points: "),
    ],
)
def test_check_cloud_rejects(bad, pattern):
    with pytest.raises(ValueError, match=pattern):
        pc.check_cloud(bad)


def test_check_cloud_custom_name():
    with pytest.raises(ValueError, match=r"^cloud_b: empty"):
        pc.check_cloud(np.zeros((0, 3)), name="cloud_b")


def test_check_actions_shapes():
    assert pc.check_actions(np.zeros((4, 2, 3))).shape == (4, 2, 3)
    assert pc.check_actions(np.zeros((0, 2, 3))).shape == (0, 2, 3)
    assert pc.check_actions([1, 2, 3]).dtype == np.float32
    with pytest.raises(ValueError, match=r"^actions: expected shape \(\.\.\., 3\), got \(2, 6\)$"):
        pc.check_actions(np.zeros((2, 6)))
    with pytest.raises(ValueError, match=r"expected shape \(\.\.\., 3\), got \(\)"):
        pc.check_actions(np.float32(1.0))
    with pytest.raises(ValueError, match=r"^pose: 1 non-finite values \(NaN/inf\)$"):
        pc.check_actions([[0, np.nan, 0]], name="pose")


# --------------------------------------------------------------------------- frame


def test_frame_apply_hand_computed():
    f = pc.Frame(center=np.array([1.0, 2.0, 3.0]), xy_scale=2.0)
    np.testing.assert_allclose(f.apply([[2.0, 2.0, 5.0]]), [[2.0, 0.0, 2.0]])
    np.testing.assert_allclose(f.invert([[2.0, 0.0, 2.0]]), [[2.0, 2.0, 5.0]])
    assert f.apply(np.zeros((4, 2, 3))).shape == (4, 2, 3)


def test_frame_is_frozen_and_validated():
    f = pc.Frame(center=[0, 0, 0], xy_scale=1.5)
    with pytest.raises(Exception):
        f.xy_scale = 2.0
    with pytest.raises(ValueError):
        f.center[0] = 1.0  # read-only array
    with pytest.raises(ValueError, match=r"Frame.center: expected shape \(3,\)"):
        pc.Frame(center=[0, 0], xy_scale=1.0)
    with pytest.raises(ValueError, match=r"Frame.xy_scale"):
        pc.Frame(center=[0, 0, 0], xy_scale=0.0)
    with pytest.raises(ValueError, match=r"Frame.center: non-finite"):
        pc.Frame(center=[0, np.nan, 0], xy_scale=1.0)
    with pytest.raises(ValueError, match=r"^x: expected shape"):
        f.apply(np.zeros((3, 2)))


def test_frame_propagates_nan_rows():
    f = pc.Frame(center=[1, 1, 1], xy_scale=3.0)
    out = f.apply([[np.nan, np.nan, np.nan], [1, 1, 1]])
    assert np.isnan(out[0]).all()
    np.testing.assert_array_equal(out[1], [0, 0, 0])


@settings(max_examples=25, deadline=None)
@given(
    x=arrays(np.float32, (7, 3), elements=st.floats(-10, 10, width=32)),
    center=arrays(np.float64, (3,), elements=st.floats(-5, 5)),
    scale=st.floats(0.25, 4.0),
)
def test_frame_invert_is_inverse(x, center, scale):
    f = pc.Frame(center=center, xy_scale=scale)
    np.testing.assert_allclose(f.invert(f.apply(x)), x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(f.apply(f.invert(x)), x, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- outliers


def test_remove_outliers_drops_far_point():
    r = rng(1)
    cloud = r.normal(size=(1000, 3))
    cloud = np.clip(cloud, -2.5, 2.5)  # inliers stay well inside 3 sigma
    far = np.array([[0.0, 50.0, 0.0]])
    out = pc.remove_outliers(np.concatenate([cloud, far]))
    assert out.shape == (1000, 3)
    assert not is_member(far[0].astype(np.float32), out)


def test_remove_outliers_keeps_constant_axis():
    # z identical for all points (flat cloth on the table): zero spread must remove nothing
    xy = np.stack(np.meshgrid(np.arange(5.0), np.arange(5.0)), -1).reshape(-1, 2)
    cloud = np.concatenate([xy, np.full((25, 1), 0.7)], 1)
    assert pc.remove_outliers(cloud).shape == (25, 3)
    assert pc.remove_outliers(cloud, None).shape == (25, 3)


def test_remove_outliers_all_removed_raises():
    # mean 0.5, std 0.5: both points are 1 sigma away, beyond 0.5 sigma
    with pytest.raises(ValueError, match=r"^points: all 2 points removed as outliers"):
        pc.remove_outliers([[0, 0, 0], [1, 0, 0]], n_sigma=0.5)
    with pytest.raises(ValueError, match=r"^n_sigma"):
        pc.remove_outliers([[0, 0, 0]], n_sigma=-1)


# --------------------------------------------------------------------------- voxels


def test_voxel_downsample_known_grid():
    # 4x4x4 points at 0.5, 1.5, 2.5, 3.5: voxels of size 2 group them 2x2x2 -> 8 voxels
    g = np.array(list(itertools.product([0.5, 1.5, 2.5, 3.5], repeat=3)))
    out = pc.voxel_downsample(g, 2.0)
    assert out.shape == (8, 3) and out.dtype == np.float32
    expected = np.array(list(itertools.product([1.0, 3.0], repeat=3)))
    np.testing.assert_allclose(out, expected)  # centroids, lexicographic voxel order
    # voxel 1 keeps every point; voxel 10 merges all into the centroid
    assert pc.voxel_downsample(g, 1.0).shape == (64, 3)
    np.testing.assert_allclose(pc.voxel_downsample(g, 10.0), [[2.0, 2.0, 2.0]])


def test_voxel_downsample_centroid_and_noop():
    pts = np.array([[0.1, 0.1, 0.1], [0.3, 0.1, 0.1], [5.2, 0.0, 0.0]])
    out = pc.voxel_downsample(pts, 1.0)
    np.testing.assert_allclose(out, [[0.2, 0.1, 0.1], [5.2, 0.0, 0.0]], rtol=1e-6)
    for v in (None, 0.0, -1.0):
        np.testing.assert_array_equal(pc.voxel_downsample(pts, v), pts.astype(np.float32))
    with pytest.raises(ValueError, match=r"^voxel_size"):
        pc.voxel_downsample(pts, float("nan"))
    with pytest.raises(ValueError, match=r"^points: empty"):
        pc.voxel_downsample(np.zeros((0, 3)), 1.0)


# --------------------------------------------------------------------------- FPS / subsample


def test_fps_line_extremes_first():
    xs = rng(2).permutation(np.linspace(0.0, 1.0, 21))
    line = np.stack([xs, np.zeros_like(xs), np.zeros_like(xs)], 1)
    mid = int(np.argmin(np.abs(xs - 0.5)))
    idx = pc.farthest_point_sample(line, 3, start_index=mid)
    assert idx.dtype.kind == "i" and idx[0] == mid
    assert sorted(xs[idx[1:]].tolist()) == [0.0, 1.0]
    # starting at one end: the other end comes next, then the middle
    lo = int(np.argmin(xs))
    idx = pc.farthest_point_sample(line, 3, start_index=lo)
    np.testing.assert_allclose(xs[idx], [0.0, 1.0, 0.5])


def test_fps_greedy_property_bruteforce():
    # every pick is (up to float32 rounding) the point farthest from those already picked
    pts = rng(9).uniform(-1, 1, size=(200, 3)).astype(np.float32)
    idx = pc.farthest_point_sample(pts, 30, start_index=7)
    d = pairwise(pts)
    for i in range(1, len(idx)):
        mind = d[:, idx[:i]].min(axis=1)
        assert mind[idx[i]] >= mind.max() - 1e-5


def test_fps_distinct_even_with_duplicates_and_errors():
    pts = np.zeros((6, 3))
    pts[3:] = 1.0  # only two distinct locations
    idx = pc.farthest_point_sample(pts, 6)
    assert sorted(idx.tolist()) == list(range(6))
    with pytest.raises(ValueError, match=r"^num_samples: 7 exceeds"):
        pc.farthest_point_sample(pts, 7)
    with pytest.raises(ValueError, match=r"^start_index"):
        pc.farthest_point_sample(pts, 2, start_index=6)
    with pytest.raises(ValueError, match=r"^num_samples"):
        pc.farthest_point_sample(pts, 0)


@pytest.mark.parametrize("method", ["random", "fps"])
def test_subsample_shape_and_membership(method):
    cloud = rng(3).normal(size=(500, 3)).astype(np.float32)
    out = pc.subsample(cloud, 100, rng(4), method=method)
    assert out.shape == (100, 3) and out.dtype == np.float32
    assert all(is_member(p, cloud) for p in out)
    assert len(np.unique(out, axis=0)) == 100  # no repeats when N >= num_points
    # deterministic given the seed
    np.testing.assert_array_equal(out, pc.subsample(cloud, 100, rng(4), method=method))


@pytest.mark.parametrize("method", ["random", "fps"])
def test_subsample_pads_with_replacement(method):
    cloud = np.arange(15, dtype=np.float32).reshape(5, 3)
    out = pc.subsample(cloud, 12, rng(5), method=method)
    assert out.shape == (12, 3)
    assert all(is_member(p, cloud) for p in out)
    assert len(np.unique(out, axis=0)) == 5  # every original point kept


def test_subsample_errors():
    cloud = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"^method"):
        pc.subsample(cloud, 2, rng(), method="grid")
    with pytest.raises(ValueError, match=r"^num_points"):
        pc.subsample(cloud, 0, rng())
    with pytest.raises(ValueError, match=r"^rng"):
        pc.subsample(cloud, 2, 0)


# --------------------------------------------------------------------------- preprocess


def test_preprocess_bbox_centre_and_scale():
    # box [1, 3] x [-2, 4] x [10, 11]: bbox centre (2, 1, 10.5), with an interior point
    box = np.array(list(itertools.product([1.0, 3.0], [-2.0, 4.0], [10.0, 11.0])))
    cloud = np.concatenate([box, [[2.5, 0.0, 10.2]]])
    action = np.array([[3.0, 4.0, 11.0], [1.0, -2.0, 10.0]])
    out, (a,), frame = pc.preprocess(cloud, (action,), xy_scale=2.0, n_sigma=None)
    np.testing.assert_allclose(frame.center, [2.0, 1.0, 10.5])
    assert frame.xy_scale == 2.0
    np.testing.assert_allclose(out.min(0), [-2.0, -6.0, -0.5])
    np.testing.assert_allclose(out.max(0), [2.0, 6.0, 0.5])
    np.testing.assert_allclose(a, [[2.0, 6.0, 0.5], [-2.0, -6.0, -0.5]])
    np.testing.assert_allclose(frame.invert(a), action, atol=1e-6)
    assert out.dtype == np.float32 and a.dtype == np.float32


def test_preprocess_removes_outlier_before_centring():
    r = rng(6)
    cloud = np.clip(r.normal(size=(2000, 3)), -2.0, 2.0)
    cloud[:, :2] = np.clip(cloud[:, :2], -1.0, 1.0)
    cloud[:4] = [[1, 1, 0], [-1, -1, 0], [0, 0, 2], [0, 0, -2]]  # bbox exactly +-1, +-1, +-2
    noisy = np.concatenate([cloud, [[100.0, 0.0, 0.0]]]) + [5.0, 6.0, 7.0]
    out, acts, frame = pc.preprocess(noisy, xy_scale=1.75)
    np.testing.assert_allclose(frame.center, [5.0, 6.0, 7.0], atol=1e-5)
    assert acts == ()
    assert out.shape == (2000, 3)
    np.testing.assert_allclose(out.max(0), [1.75, 1.75, 2.0], atol=1e-5)


def test_preprocess_voxel_in_scaled_frame():
    # points 0.1 apart in x; scaled by 3 they are 0.3 apart: voxel 0.25 keeps all 5,
    # whereas in the raw frame a 0.25 voxel would merge neighbours
    x = np.arange(5) * 0.1
    cloud = np.stack([x, np.zeros(5), np.zeros(5)], 1)
    out, _, _ = pc.preprocess(cloud, xy_scale=3.0, voxel_size=0.25, n_sigma=None)
    assert out.shape == (5, 3)
    out, _, _ = pc.preprocess(cloud, xy_scale=1.0, voxel_size=0.25, n_sigma=None)
    assert out.shape == (2, 3)  # centred at 0.2: x in {-0.2, -0.1} and {0, 0.1, 0.2}


def test_preprocess_many_action_arrays_same_frame():
    cloud = rng(7).uniform(-1, 1, size=(300, 3)) + 4.0
    a1 = cloud[:2].copy()
    a2 = cloud[None, 10:14].reshape(2, 2, 3)
    out, (b1, b2), frame = pc.preprocess(cloud, [a1, a2], xy_scale=1.75, n_sigma=None)
    assert b1.shape == (2, 3) and b2.shape == (2, 2, 3)
    # actions equal to cloud points are still cloud points (no voxelisation)
    for p in np.concatenate([b1, b2.reshape(-1, 3)]):
        assert is_member(p, out)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(points=np.zeros((0, 3))), r"^points: empty cloud"),
        (dict(points=np.full((3, 3), np.nan)), r"^points: 9 non-finite"),
        (dict(actions=(np.zeros((2, 3)), np.zeros((2, 2)))), r"^actions\[1\]: expected shape \(\.\.\., 3\)"),
        (dict(actions=(np.array([[np.nan, 0, 0]]),)), r"^actions\[0\]: 1 non-finite"),
        (dict(actions=np.zeros((2, 3))), r"^actions: expected a tuple of arrays, got a single ndarray"),
        (dict(xy_scale=-1.0), r"^xy_scale"),
        (dict(n_sigma=0.1), r"removed as outliers"),
    ],
)
def test_preprocess_bad_input(kwargs, pattern):
    args = dict(points=[[0.0, 0, 0], [1, 1, 1], [2, 0, 1]], actions=())
    args.update(kwargs)
    points, actions = args.pop("points"), args.pop("actions")
    with pytest.raises(ValueError, match=pattern):
        pc.preprocess(points, actions, **args)


# --------------------------------------------------------------------------- rotation / augment


def test_rotate_z_hand_computed():
    np.testing.assert_allclose(pc.rotate_z([1.0, 0.0, 0.0], math.pi / 2), [0, 1, 0], atol=1e-7)
    np.testing.assert_allclose(pc.rotate_z([[0.0, 2.0, 5.0]], math.pi), [[0, -2, 5]], atol=1e-6)
    assert pc.rotate_z(np.zeros((4, 2, 3)), 0.3).shape == (4, 2, 3)
    with pytest.raises(ValueError, match=r"^x: expected shape"):
        pc.rotate_z(np.zeros((3, 2)), 0.1)
    with pytest.raises(ValueError, match=r"^angle_rad"):
        pc.rotate_z(np.zeros((1, 3)), float("inf"))


@settings(max_examples=25, deadline=None)
@given(
    x=arrays(np.float32, (6, 3), elements=st.floats(-5, 5, width=32)),
    angle=st.floats(-2 * math.pi, 2 * math.pi),
)
def test_rotate_z_preserves_distances_and_z(x, angle):
    y = pc.rotate_z(x, angle)
    np.testing.assert_allclose(pairwise(y), pairwise(x), atol=1e-4)
    np.testing.assert_array_equal(y[:, 2], x[:, 2])


def test_augment_action_on_cloud_stays_on_cloud():
    r = rng(8)
    cloud = r.normal(size=(400, 3)).astype(np.float32)
    fling = cloud[[5, 17]].copy()  # (2, 3)
    alts = cloud[[1, 2, 3, 4, 6, 7]].reshape(3, 2, 3)  # (3, 2, 3)
    single = cloud[9].copy()  # (3,): not a pair, never swapped
    before = cloud.copy()
    for seed in range(10):
        out, (f, al, s) = pc.augment(
            cloud, (fling, alts, single), rng=rng(seed),
            max_rotation_deg=180.0, depth_offset=0.02, swap_pick_prob=0.5,
        )
        for p in np.concatenate([f, al.reshape(-1, 3), s[None]]):
            assert is_member(p, out)
        np.testing.assert_allclose(pairwise(out[:50]), pairwise(cloud[:50]), atol=1e-4)
    np.testing.assert_array_equal(cloud, before)  # inputs are not mutated


def test_augment_ranges_and_identity():
    cloud = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    out, acts = pc.augment(cloud, rng=rng())
    np.testing.assert_array_equal(out, cloud)
    assert acts == ()
    for seed in range(30):
        out, _ = pc.augment(cloud, rng=rng(seed), max_rotation_deg=20.0, depth_offset=0.02)
        # origin only moves in z, by at most 2 cm
        assert out[1, 0] == 0 and out[1, 1] == 0 and abs(out[1, 2]) <= 0.02
        angle = math.degrees(math.atan2(out[0, 1], out[0, 0]))
        assert abs(angle) <= 20.0 + 1e-4
        assert out[0, 2] == out[1, 2]  # same depth offset everywhere


def test_augment_swap():
    cloud = np.zeros((3, 3), np.float32)
    pair = np.array([[1.0, 0, 0], [2.0, 0, 0]])
    batch = np.array([[[1.0, 0, 0], [2.0, 0, 0]], [[3.0, 0, 0], [4.0, 0, 0]]])
    triple = np.arange(9.0).reshape(3, 3)  # shape[-2] == 3: never swapped
    _, (p, b, t) = pc.augment(cloud, (pair, batch, triple), rng=rng(), swap_pick_prob=1.0)
    np.testing.assert_array_equal(p, pair[::-1])
    np.testing.assert_array_equal(b, batch[:, ::-1])
    np.testing.assert_array_equal(t, triple)
    _, (p,) = pc.augment(cloud, (pair,), rng=rng(), swap_pick_prob=0.0)
    np.testing.assert_array_equal(p, pair)
    swaps = sum(
        pc.augment(cloud, (pair,), rng=rng(s), swap_pick_prob=0.5)[1][0][0, 0] == 2.0
        for s in range(200)
    )
    assert 60 < swaps < 140


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(max_rotation_deg=-1.0), r"^max_rotation_deg"),
        (dict(depth_offset=float("nan")), r"^depth_offset"),
        (dict(swap_pick_prob=1.5), r"^swap_pick_prob"),
        (dict(rng=42), r"^rng"),
    ],
)
def test_augment_bad_params(kwargs, pattern):
    args = dict(rng=rng())
    args.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        pc.augment(np.zeros((2, 3)), **args)


def test_augment_bad_arrays():
    with pytest.raises(ValueError, match=r"^points: 1 non-finite"):
        pc.augment([[0, 0, np.inf]], rng=rng())
    with pytest.raises(ValueError, match=r"^points: expected shape \(N, 3\)"):
        pc.augment(np.zeros((4,)), rng=rng())
    with pytest.raises(ValueError, match=r"^actions\[0\]: 2 non-finite"):
        pc.augment(np.zeros((2, 3)), ([[np.nan, np.nan, 0]],), rng=rng())
