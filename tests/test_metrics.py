"""Hand-computed cases for pam_jax.metrics (docs/method.md, "Evaluation")."""
import numpy as np
import pytest

from pam_jax import metrics


def _square_outline(n=50, side=0.2):
    t = np.linspace(0, 1, n, endpoint=False)
    s = side / 2
    edges = [np.stack([-s + side * t, np.full(n, -s)], 1), np.stack([np.full(n, s), -s + side * t], 1),
             np.stack([s - side * t, np.full(n, s)], 1), np.stack([np.full(n, -s), s - side * t], 1)]
    return np.concatenate(edges)


def _l_shape():
    g = np.stack(np.meshgrid(np.linspace(0, 0.3, 31), np.linspace(0, 0.3, 31), indexing="ij"), -1).reshape(-1, 2)
    return g[(g[:, 0] < 0.1) | (g[:, 1] < 0.1)]


def _rot(deg):
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def test_rotation_set_is_quarter_turns_times_small_corrections():
    assert len(metrics.ROTATION_ANGLES_DEG) == 20
    assert set(metrics.ROTATION_ANGLES_DEG) == {q * 90 + d for q in range(4) for d in (-20, -10, 0, 10, 20)}


def test_identical_shapes():
    a = _l_shape()
    assert metrics.iou_2d(a, a) == 1.0
    assert metrics.chamfer(a, a) == 0.0
    assert metrics.emd(a, a) == 0.0


def test_shift_is_removed_by_zero_meaning():
    a = _l_shape()
    b = a + np.array([0.37, -1.2])
    assert metrics.iou_2d(a, b) == 1.0
    assert metrics.chamfer(a, b) == pytest.approx(0.0, abs=1e-12)
    assert metrics.emd(a, b) == pytest.approx(0.0, abs=1e-12)


def test_emd_known_value_for_a_stretched_pair():
    # Two points at +-1 against two points at +-2 (zero-mean already): each moves by 1.
    a = np.array([[-1.0, 0.0], [1.0, 0.0]])
    b = np.array([[-2.0, 0.0], [2.0, 0.0]])
    assert metrics.emd(a, b) == pytest.approx(1.0)
    # Chamfer: each direction's mean NN distance is 1 -> sum 2 (rotations cannot do better).
    assert metrics.chamfer(a, b) == pytest.approx(2.0)


def test_quarter_turn_gets_full_iou_and_zero_chamfer():
    a = _l_shape()
    b = a @ _rot(90).T
    assert metrics.iou_2d(a, b) == 1.0
    assert metrics.chamfer(a, b) == pytest.approx(0.0, abs=1e-9)
    # Without the rotation search the rotated L is a different point set; with it, EMD is ~0.
    assert metrics.emd(a, b, rotation_search=False) > 0.01
    assert metrics.emd(a, b) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("deg", [90.0, 10.0, -20.0, 190.0, 260.0])
def test_emd_rotation_search_finds_a_searched_angle(deg):
    a = _l_shape()                      # 520 points: used whole, so only the rotation differs
    assert len(a) <= 1000
    b = a @ _rot(deg).T
    assert metrics.emd(a, b) == pytest.approx(0.0, abs=1e-9)
    assert metrics.emd(a, b, rotation_search=False) > 0.005


def test_emd_against_itself_is_zero_with_and_without_search():
    a = _l_shape()
    assert metrics.emd(a, a) == 0.0
    assert metrics.emd(a, a, rotation_search=False) == 0.0


def test_emd_three_points_by_hand():
    # Same line, stretched: identity matching, costs 1, 0, 1; no rotation helps (a rotation by t
    # moves each end's cost to sqrt(5 - 4 cos t) >= 1).
    a = np.array([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    b = np.array([[-2.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    assert metrics.emd(a, b, rotation_search=False) == pytest.approx(2 / 3)
    assert metrics.emd(a, b) == pytest.approx(2 / 3)
    # A vertical segment against a horizontal one: unrotated, the best matching keeps the centre
    # and sends each end a quarter circle away (sqrt 2 each); a quarter turn makes them equal.
    v = np.array([[0.0, 1.0], [0.0, 0.0], [0.0, -1.0]])
    h = np.array([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    assert metrics.emd(v, h, rotation_search=False) == pytest.approx(2 * np.sqrt(2) / 3)
    assert metrics.emd(v, h) == pytest.approx(0.0, abs=1e-12)


def test_emd_unequal_sizes_by_hand():
    # Two points against three: both of the two are matched, the third point stays unmatched.
    v2 = np.array([[0.0, 1.0], [0.0, -1.0]])
    h3 = np.array([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    # Unrotated: one end to the centre (1), the other to a side point (sqrt 2).
    for x, y in ((v2, h3), (h3, v2)):
        assert metrics.emd(x, y, rotation_search=False) == pytest.approx((1 + np.sqrt(2)) / 2)
        assert metrics.emd(x, y) == pytest.approx(0.0, abs=1e-12)


def test_emd_search_equals_brute_force_minimum():
    # The pruned search must return the minimum over all 20 explicitly rotated copies.
    rng = np.random.default_rng(3)
    for trial in range(4):
        a = rng.normal(size=(80, 2)) * rng.uniform(0.05, 0.3, size=2)
        b = (a if trial % 2 else rng.normal(size=(80, 2)) * 0.1) @ _rot(33).T
        b = b + 0.01 * rng.normal(size=b.shape)
        brute = min(metrics.emd(a @ _rot(d).T, b, rotation_search=False)
                    for d in metrics.ROTATION_ANGLES_DEG)
        assert metrics.emd(a, b) == pytest.approx(brute, rel=1e-9)
        assert metrics.emd(a, b) <= metrics.emd(a, b, rotation_search=False)


def test_small_rotation_inside_the_search_is_found():
    a = _l_shape()
    b = a @ _rot(190).T        # 180 + 10 is in the searched set
    assert metrics.iou_2d(a, b) == 1.0


def test_different_shapes_score_below_one():
    sq = _square_outline()
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    line = np.stack([np.linspace(-0.2, 0.2, 200), np.zeros(200)], 1)
    assert metrics.iou_2d(sq, line) < 0.3
    assert metrics.chamfer(sq, line) > 0.05
    circle = 0.1 * np.stack([np.cos(t), np.sin(t)], 1)
    iou_c = metrics.iou_2d(sq, circle)
    assert 0.0 < iou_c < 1.0
    assert metrics.iou_2d(sq, circle) > metrics.iou_2d(sq, line)


def test_footprint_mask_is_the_disc_dilation_of_the_pixels():
    """The IoU's mask of a point set: its pixels dilated by the radius-2 disc (13 pixels), the
    border dropped; checked by hand at a corner and against scipy's binary dilation."""
    from scipy import ndimage

    one = metrics._mask(np.array([[50.2, 49.7]]))
    assert one.sum() == 13 and one[50, 48] and one[52, 50] and one[51, 51] and not one[52, 51]
    corner = metrics._mask(np.array([[0.0, 0.0]]))
    assert corner.sum() == 6          # the disc's quarter with its two half-axes: 1 + 2 + 2 + 1
    rng = np.random.default_rng(3)
    for n in (1, 40, 2000):
        pix = rng.uniform(-2.0, 101.0, (n, 2))
        seed = np.zeros((100, 100), bool)
        ij = np.clip(np.rint(pix).astype(int), 0, 99)
        seed[ij[:, 0], ij[:, 1]] = True
        np.testing.assert_array_equal(metrics._mask(pix), ndimage.binary_dilation(seed, structure=metrics._disc()))


def test_disjoint_masks_and_symmetry():
    a = _l_shape()
    b = _square_outline()
    assert metrics.iou_2d(a, b) == pytest.approx(metrics.iou_2d(b, a), abs=0.05)


def test_uses_xy_only_for_iou_and_xyz_for_chamfer():
    a = _l_shape()
    a3 = np.concatenate([a, np.zeros((len(a), 1))], 1)
    b3 = a3.copy()
    b3[:, 2] = 0.05 * (np.arange(len(a)) % 2)          # same footprint, different heights
    assert metrics.iou_2d(a3, b3) == 1.0
    assert metrics.chamfer(a3, b3) > 0.0
    assert metrics.chamfer(a, b3) == pytest.approx(0.0, abs=1e-12)  # 2D vs 3D -> xy


def test_sampling_is_seeded():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3000, 3)), rng.normal(size=(2500, 3))
    assert metrics.chamfer(a, b, 200, 1) == metrics.chamfer(a, b, 200, 1)
    assert metrics.emd(a, b, 200, 3) == metrics.emd(a, b, 200, 3)
    assert metrics.emd(a, b, 200, 3) != metrics.emd(a, b, 200, 4)
    g = np.random.default_rng(5)
    assert np.isfinite(metrics.chamfer(a, b, 100, g))


def test_accepts_jax_keys():
    jax = pytest.importorskip("jax")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 2)), rng.normal(size=(300, 2))
    v1 = metrics.emd(a, b, 100, jax.random.key(7))
    v2 = metrics.emd(a, b, 100, jax.random.key(7))
    v3 = metrics.chamfer(a, b, 100, jax.random.PRNGKey(7))
    assert v1 == v2 and np.isfinite(v3)


def test_coverage_of_a_dense_square():
    side = 0.3
    g = np.linspace(0, side, 61)
    pts = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    cov = metrics.normalized_coverage(pts, particle_radius=0.005, reference_area=side ** 2)
    assert cov == pytest.approx(1.0, abs=1e-9)
    assert metrics.normalized_coverage(pts, 0.005, 2 * side ** 2) == pytest.approx(0.5, abs=1e-9)


def test_coverage_counts_holes_and_two_pieces():
    side = 0.3
    g = np.linspace(0, side, 61)
    pts = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    left = pts[pts[:, 0] <= 0.1 + 1e-9]
    right = pts[pts[:, 0] >= 0.2 - 1e-9]
    both = np.concatenate([left, right])
    # slots: a cell is 3 mm, r = 4 mm. Columns of the left piece: up to round((0.1 + 0.004) / 0.003)
    # = 35 (exclusive), i.e. 35; of the right piece from round((0.2 - 0.004) / 0.003) = 65 to 100,
    # i.e. 35: 70 of 100 columns, every row.
    assert metrics.normalized_coverage(both, 0.004, side ** 2) == pytest.approx(0.70, abs=1e-9)
    cov = metrics.normalized_coverage(both, 0.004, side ** 2, form="disc")
    assert cov == pytest.approx(2 / 3, abs=0.03)       # the middle third is empty
    assert metrics.normalized_coverage(np.array([[0.0, 0.0, 0.0]]), 0.01, 1.0) == 0.0


@pytest.mark.parametrize("bad, msg", [
    (np.zeros((0, 2)), "empty"),
    (np.zeros((5, 4)), "shape"),
    (np.zeros(5), "shape"),
    (np.array([[0.0, np.nan], [1.0, 1.0]]), "non-finite"),
    ("abc", "numbers"),
])
def test_bad_input_is_a_one_line_value_error(bad, msg):
    good = np.zeros((3, 2))
    for fn in (lambda x: metrics.iou_2d(x, good), lambda x: metrics.chamfer(good, x),
               lambda x: metrics.emd(x, good), lambda x: metrics.normalized_coverage(x, 0.01, 1.0)):
        with pytest.raises(ValueError, match=msg) as e:
            fn(bad)
        assert "\n" not in str(e.value)


def test_bad_parameters():
    a = np.zeros((3, 2))
    with pytest.raises(ValueError, match="particle_radius"):
        metrics.normalized_coverage(a, -1.0, 1.0)
    with pytest.raises(ValueError, match="reference_area"):
        metrics.normalized_coverage(a, 0.1, 0.0)
    with pytest.raises(ValueError, match="num_samples"):
        metrics.chamfer(a, a, 0)
    with pytest.raises(ValueError, match="key_or_seed"):
        metrics.emd(a, a, 10, "seed")


# ----------------------------------------------------------------- slot-grid coverage (published)
def test_slot_coverage_hand_computed_rectangles():
    # bbox [0, 1] x [0, 1], so span = 0.01 per axis; r = 0.012 is 1.2 cells.
    #   (0, 0):      x: low = max(round(-1.2), 0) = 0, high = round(1.2) = 1 -> [0, 1); y the same
    #                -> cell (0, 0), flat 0
    #   (1, 1):      low = round(98.8) = 99, high = min(round(101.2), 100) = 100 -> [99, 100) per axis
    #                -> flat 99 * 100 + 99 = 9999
    #   (0.5, 0.25): x: round(48.8) = 49 .. round(51.2) = 51 -> {49, 50}; y: round(23.8) = 24 ..
    #                round(26.2) = 26 -> {24, 25} -> 4924, 4925, 5024, 5025
    # 6 cells x 0.01 x 0.01 = 6e-4 of area; reference 1e-4 -> 6.
    pts = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.25]])
    assert metrics.normalized_coverage(pts, 0.012, 1e-4) == pytest.approx(6.0, rel=1e-12)
    assert metrics.normalized_coverage(pts, 0.012, 6e-4) == pytest.approx(1.0, rel=1e-12)


def test_slot_coverage_marks_one_cell_at_least_and_clips_the_flat_index():
    # r = 0.004 is 0.4 cells: low == high for every point, so each marks its low cell only.
    #   (0, 0)      -> x 0, y 0                       -> flat 0
    #   (1, 1)      -> low = round(99.6) = 100 per axis -> flat 100 * 100 + 100, clipped to 9999
    #   (0.5, 0.25) -> x round(49.6) = 50, y round(24.6) = 25 -> 5025
    #   (0.3, 1.0)  -> x 30, y 100                    -> flat 3000 + 100 = 3100 (the next row's cell 0)
    #   (0.31, 0.0) -> x round(30.6) = 31, y 0        -> flat 3100: the same cell as the point above
    # 4 distinct cells x 1e-4 = 4e-4; reference 2e-4 -> 2.
    pts = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.25], [0.3, 1.0], [0.31, 0.0]])
    assert metrics.normalized_coverage(pts, 0.004, 2e-4) == pytest.approx(2.0, rel=1e-12)
    # without the last point the count is unchanged (its cell was marked already)
    assert metrics.normalized_coverage(pts[:4], 0.004, 2e-4) == pytest.approx(2.0, rel=1e-12)


def test_slot_coverage_of_a_random_flat_cloth():
    # 3000 uniform points on a 0.6 x 0.24 m cloth, r = 0.002: a cell is 6 mm x 2.4 mm, so a point
    # marks 1 cell in x and 1 or 2 (2 with probability 2r/span_y - 1 = 2/3) in y: about 5000 marks
    # over 10^4 cells, of which 1 - exp(-0.5) ~ 0.39 are hit (0.400 in the published figure). The
    # disc form counts only cell centres within r: about 0.23.
    rng = np.random.default_rng(0)
    p = rng.uniform([0.0, 0.0], [0.6, 0.24], (3000, 2))
    slots = metrics.normalized_coverage(p, 0.002, 0.6 * 0.24)
    disc = metrics.normalized_coverage(p, 0.002, 0.6 * 0.24, form="disc")
    assert slots == pytest.approx(0.40, abs=0.015)
    assert disc == pytest.approx(0.23, abs=0.01)


def test_coverage_form_is_checked():
    with pytest.raises(ValueError, match="form"):
        metrics.normalized_coverage(np.zeros((3, 2)), 0.1, 1.0, form="circle")
