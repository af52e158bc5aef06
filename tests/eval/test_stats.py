"""pam_jax.eval.stats against scipy.stats, closed forms and hand-computed cases."""
import math

import numpy as np
import pytest
from scipy import stats as st

from pam_jax.eval import stats

Z95 = 1.959963984540054   # the standard normal's 0.975 quantile


# --------------------------------------------------------------------------- t intervals
@pytest.mark.parametrize("x, level", [
    ([1.0, 2.0, 4.0], 0.95),
    ([0.3, 0.9, 0.1, 0.5, 0.5, 0.7], 0.9),
    ([10.0, -3.0], 0.99),
])
def test_mean_ci_matches_scipy_t_interval(x, level):
    x = np.asarray(x)
    lo, hi = st.t.interval(level, len(x) - 1, loc=x.mean(), scale=st.sem(x))
    m, half = stats.mean_ci(x, level)
    assert m == pytest.approx(x.mean())
    assert half == pytest.approx((hi - lo) / 2, rel=1e-12)


def test_mean_ci_by_hand():
    # [1, 2, 3]: mean 2, sd 1, se 1/sqrt(3); with 2 dof the t quantile has the closed form
    # t_p = (2p - 1) / sqrt(2 p (1 - p)), here p = 0.975.
    t = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    m, half = stats.mean_ci([1, 2, 3])
    assert (m, half) == pytest.approx((2.0, t / math.sqrt(3)), rel=1e-12)


def test_mean_ci_edge_cases():
    m, half = stats.mean_ci([0.25])
    assert m == 0.25 and math.isnan(half)
    assert stats.mean_ci([2.0, 2.0, 2.0]) == (2.0, 0.0)
    with pytest.raises(ValueError, match="empty") as e:
        stats.mean_ci([])
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="non-finite"):
        stats.mean_ci([1.0, np.nan])
    with pytest.raises(ValueError, match="level"):
        stats.mean_ci([1.0, 2.0], level=1.0)
    with pytest.raises(ValueError, match="1-D"):
        stats.mean_ci(np.ones((2, 2)))


def test_paired_diff_ci_matches_scipy():
    a = np.array([0.61, 0.72, 0.55, 0.80, 0.66, 0.71, 0.59])
    b = np.array([0.58, 0.65, 0.57, 0.71, 0.60, 0.70, 0.52])
    d = a - b
    res = stats.paired_diff_ci(a, b)
    lo, hi = st.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=st.sem(d))
    assert res.mean == pytest.approx(d.mean())
    assert res.half_width == pytest.approx((hi - lo) / 2, rel=1e-12)
    assert res.p_value == pytest.approx(st.ttest_rel(a, b).pvalue, rel=1e-10)
    # Swapping the methods flips the sign and keeps the rest.
    rev = stats.paired_diff_ci(b, a)
    assert rev.mean == pytest.approx(-res.mean)
    assert rev.p_value == pytest.approx(res.p_value)
    # Pairing matters: a constant shift on top of large start-state spread is detected.
    rng = np.random.default_rng(0)
    base = rng.normal(size=20) * 5
    shifted = base + 0.1 + rng.normal(size=20) * 0.01
    assert stats.paired_diff_ci(shifted, base).p_value < 1e-10
    assert stats.paired_diff_ci(shifted, base).p_value == pytest.approx(
        st.ttest_rel(shifted, base).pvalue, rel=1e-8)


def test_paired_diff_ci_edge_cases():
    assert stats.paired_diff_ci([1.0, 2.0], [1.0, 2.0]) == (0.0, 0.0, 1.0)
    assert stats.paired_diff_ci([2.0, 3.0], [1.0, 2.0]) == (1.0, 0.0, 0.0)
    one = stats.paired_diff_ci([2.0], [1.0])
    assert one.mean == 1.0 and math.isnan(one.half_width) and math.isnan(one.p_value)
    with pytest.raises(ValueError, match="same length"):
        stats.paired_diff_ci([1.0, 2.0], [1.0])


# --------------------------------------------------------------------------- success rates
def _wilson_closed_form(k, n, z=Z95):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k, n", [(0, 10), (7, 10), (10, 10), (1, 3), (15, 30)])
def test_wilson_interval_closed_form(k, n):
    lo, hi = stats.wilson_interval(k, n)
    want_lo, want_hi = _wilson_closed_form(k, n)
    assert lo == pytest.approx(max(0.0, want_lo), abs=1e-12)
    assert hi == pytest.approx(min(1.0, want_hi), abs=1e-12)
    # Endpoints inside (0, 1) solve (k/n - p)^2 = z^2 p (1 - p) / n (the score-test boundary).
    for p in (lo, hi):
        if 0 < p < 1:
            assert (k / n - p) ** 2 == pytest.approx(Z95 ** 2 * p * (1 - p) / n, rel=1e-9)


def test_wilson_interval_hand_values():
    assert stats.wilson_interval(0, 10) == pytest.approx((0.0, Z95 ** 2 / (10 + Z95 ** 2)))
    lo, hi = stats.wilson_interval(7, 10)
    assert (lo, hi) == pytest.approx((0.3968, 0.8922), abs=5e-5)
    assert stats.wilson_interval(10, 10)[1] == 1.0
    lo90, hi90 = stats.wilson_interval(7, 10, level=0.9)
    assert lo < lo90 < hi90 < hi
    for bad in ((11, 10), (-1, 10), (0, 0), (1.5, 3)):
        with pytest.raises(ValueError):
            stats.wilson_interval(*bad)


@pytest.mark.parametrize("a_only, b_only, both, neither", [
    (5, 1, 10, 4), (0, 6, 3, 3), (3, 3, 5, 5), (1, 0, 0, 0), (12, 4, 40, 9)])
def test_mcnemar_exact_matches_binomtest(a_only, b_only, both, neither):
    a = np.array([1] * a_only + [0] * b_only + [1] * both + [0] * neither, dtype=bool)
    b = np.array([0] * a_only + [1] * b_only + [1] * both + [0] * neither, dtype=bool)
    perm = np.random.default_rng(1).permutation(len(a))
    res = stats.mcnemar_exact(a[perm], b[perm])
    assert (res.a_only, res.b_only) == (a_only, b_only)
    want = st.binomtest(a_only, a_only + b_only, 0.5).pvalue
    assert res.p_value == pytest.approx(want, rel=1e-12)


def test_mcnemar_exact_edge_cases():
    assert stats.mcnemar_exact([1, 0, 1], [1, 0, 1]) == (1.0, 0, 0)
    res = stats.mcnemar_exact([True, True], [False, False])
    assert res == (0.5, 2, 0)                       # 2 * 0.5^2
    with pytest.raises(ValueError, match="same length"):
        stats.mcnemar_exact([1, 0], [1])
    with pytest.raises(ValueError, match="0/1"):
        stats.mcnemar_exact([1, 2], [1, 0])
    with pytest.raises(ValueError, match="empty"):
        stats.mcnemar_exact([], [])


# --------------------------------------------------------------------------- bootstrap
def _single_level_bootstrap(v, n_boot, level, seed):
    """Ordinary bootstrap that pools all values and ignores the seeds."""
    v = np.asarray(v).ravel()
    rng = np.random.default_rng(seed)
    draws = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    return np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])


def test_bootstrap_one_seed_constant_collapses():
    est, lo, hi = stats.hierarchical_bootstrap(np.full((1, 30), 0.7))
    assert est == pytest.approx(0.7, abs=1e-12)
    assert lo == pytest.approx(0.7, abs=1e-12) and hi == pytest.approx(0.7, abs=1e-12)
    # 1-D input is one seed; a list of one array too.
    assert stats.hierarchical_bootstrap(np.full(30, 0.25), n_boot=200) == (0.25, 0.25, 0.25)
    assert stats.hierarchical_bootstrap([np.full(5, 1.0)], n_boot=200) == (1.0, 1.0, 1.0)


def test_bootstrap_seed_level_by_hand():
    # Seed rows constant 0 and 1: a draw picks {0,0}, {0,1} or {1,1} (prob 1/4, 1/2, 1/4) and
    # the start-state level changes nothing, so the draws are 0, 0.5, 1.
    v = np.array([[0.0] * 4, [1.0] * 4])
    est, lo, hi = stats.hierarchical_bootstrap(v, n_boot=4000, level=0.95)
    assert est == 0.5 and lo == 0.0 and hi == 1.0
    assert stats.hierarchical_bootstrap(v, n_boot=4000, level=0.4)[1:] == (0.5, 0.5)


def test_bootstrap_ragged_seeds_pool_their_start_states():
    # Rows of lengths 3 (all 0) and 5 (all 1): the mixed draw {0, 1} pools to 5/8.
    rows = [np.zeros(3), np.ones(5)]
    est, lo, hi = stats.hierarchical_bootstrap(rows, n_boot=4000, level=0.95)
    assert est == pytest.approx(5 / 8)
    assert (lo, hi) == (0.0, 1.0)
    _, lo40, hi40 = stats.hierarchical_bootstrap(rows, n_boot=4000, level=0.4)
    assert lo40 == pytest.approx(5 / 8) and hi40 == pytest.approx(5 / 8)
    with pytest.raises(ValueError, match="np.mean"):
        stats.hierarchical_bootstrap(rows, statistic=np.median)


def test_bootstrap_seed_spread_widens_the_interval():
    rng = np.random.default_rng(0)
    v = np.array([0.1, 0.5, 0.9])[:, None] + 0.05 * rng.normal(size=(3, 40))
    est, lo, hi = stats.hierarchical_bootstrap(v, n_boot=4000, seed=1)
    slo, shi = _single_level_bootstrap(v, 4000, 0.95, 1)
    assert est == pytest.approx(v.mean())
    assert lo < est < hi
    assert hi - lo > 3 * (shi - slo)


def test_bootstrap_one_seed_matches_the_t_interval():
    x = np.random.default_rng(2).normal(0.6, 0.2, size=200)
    est, lo, hi = stats.hierarchical_bootstrap(x, n_boot=5000, seed=3)
    m, half = stats.mean_ci(x)
    assert est == pytest.approx(m)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert (lo + hi) / 2 == pytest.approx(m, abs=0.2 * half)


def test_bootstrap_other_statistic_and_determinism():
    rng = np.random.default_rng(4)
    v = rng.normal(size=(4, 25))
    est, lo, hi = stats.hierarchical_bootstrap(v, n_boot=500, statistic=np.median)
    assert est == pytest.approx(np.median(v)) and lo < est < hi
    assert stats.hierarchical_bootstrap(v, n_boot=500, seed=7) == \
        stats.hierarchical_bootstrap(v, n_boot=500, seed=7)
    assert stats.hierarchical_bootstrap(v, n_boot=500, seed=7) != \
        stats.hierarchical_bootstrap(v, n_boot=500, seed=8)


def test_bootstrap_coverage_on_a_simulated_normal_case():
    # value = 0.5 + seed effect (sd 0.1) + start-state noise (sd 0.3); 10 seeds x 20 states.
    rng = np.random.default_rng(11)
    hits, reps = 0, 200
    for r in range(reps):
        v = 0.5 + 0.1 * rng.normal(size=(10, 1)) + 0.3 * rng.normal(size=(10, 20))
        _, lo, hi = stats.hierarchical_bootstrap(v, n_boot=400, seed=r)
        hits += lo <= 0.5 <= hi
    assert 0.85 <= hits / reps <= 0.995


def test_bootstrap_diff_identical_inputs_is_exactly_zero():
    v = np.random.default_rng(5).normal(size=(1, 30))
    assert stats.hierarchical_bootstrap_diff(v, v.copy()) == (0.0, 0.0, 0.0)
    assert stats.hierarchical_bootstrap_diff(v[0], v[0]) == (0.0, 0.0, 0.0)
    w = np.random.default_rng(6).normal(size=(3, 30))
    est, lo, hi = stats.hierarchical_bootstrap_diff(w, w.copy(), n_boot=2000)
    assert est == 0.0 and lo < 0.0 < hi


def test_bootstrap_diff_keeps_the_start_state_pairing():
    # Huge start-state spread shared by both methods, a small constant gain of 0.05 for a.
    rng = np.random.default_rng(7)
    states = rng.normal(size=40) * 2.0
    a = states + 0.05 + 0.01 * rng.normal(size=(3, 40))
    b = states + 0.01 * rng.normal(size=(3, 40))
    est, lo, hi = stats.hierarchical_bootstrap_diff(a, b, n_boot=4000, seed=1)
    assert est == pytest.approx(a.mean() - b.mean())
    assert 0.0 < lo < 0.05 < hi < 0.1
    # Resampling the two methods' start states independently would drown the gain.
    _, alo, ahi = stats.hierarchical_bootstrap(a, n_boot=4000, seed=2)
    _, blo, bhi = stats.hierarchical_bootstrap(b, n_boot=4000, seed=3)
    assert hi - lo < 0.1 * ((ahi - alo) + (bhi - blo))


def test_bootstrap_diff_seed_counts_may_differ():
    rng = np.random.default_rng(8)
    a = 0.7 + 0.1 * rng.normal(size=(3, 25))
    b = 0.4 + 0.1 * rng.normal(size=(1, 25))
    est, lo, hi = stats.hierarchical_bootstrap_diff(a, b, n_boot=2000)
    assert est == pytest.approx(a.mean() - b.mean())
    assert lo < est < hi and lo > 0.1
    # Constant per-seed values: only the seed level varies, so the interval spans the seed means.
    a = np.array([[0.2] * 5, [0.6] * 5])
    est, lo, hi = stats.hierarchical_bootstrap_diff(a, np.zeros((1, 5)), n_boot=4000)
    assert est == pytest.approx(0.4) and lo == pytest.approx(0.2) and hi == pytest.approx(0.6)
    with pytest.raises(ValueError, match="same start states"):
        stats.hierarchical_bootstrap_diff(np.zeros((2, 5)), np.zeros((2, 6)))


def test_bootstrap_diff_with_paired_seeds_removes_the_shared_seed_level():
    # Each seed's level (sd 0.3) is shared by the method and its baseline (a fine-tune of the same
    # SL seed); the method adds 0.05. Seeds resampled per method drown the gain; paired, they don't.
    rng = np.random.default_rng(12)
    level = 0.3 * rng.normal(size=(4, 1))
    states = rng.normal(size=(1, 30))
    b = level + states + 0.01 * rng.normal(size=(4, 30))
    a = level + states + 0.05 + 0.01 * rng.normal(size=(4, 30))
    est, lo, hi = stats.hierarchical_bootstrap_diff(a, b, n_boot=4000, paired_seeds=True)
    assert est == pytest.approx(a.mean() - b.mean())
    assert 0.0 < lo < 0.05 < hi < 0.1
    _, ulo, uhi = stats.hierarchical_bootstrap_diff(a, b, n_boot=4000)
    assert ulo < 0.0 < uhi
    # Any per-seed offset added to both methods changes nothing; a constant difference is exact.
    shifted = stats.hierarchical_bootstrap_diff(a + 5 * level, b + 5 * level, n_boot=4000, paired_seeds=True)
    assert shifted == pytest.approx((est, lo, hi), abs=1e-12)
    assert stats.hierarchical_bootstrap_diff(b + 0.1, b, n_boot=500, paired_seeds=True) == pytest.approx((0.1,) * 3)
    with pytest.raises(ValueError, match="paired_seeds needs the same training seeds"):
        stats.hierarchical_bootstrap_diff(a, b[:3], paired_seeds=True)


def test_paired_seed_bootstrap_coverage_on_a_simulated_case():
    # gain 0.05 + per-seed gain variation (sd 0.03) + start-state noise (sd 0.1), over a seed
    # level (sd 0.3) that both methods share; 8 seeds x 20 states.
    rng = np.random.default_rng(13)
    hits, reps = 0, 200
    for r in range(reps):
        b = 0.3 * rng.normal(size=(8, 1)) + 0.2 * rng.normal(size=(1, 20)) + 0.05 * rng.normal(size=(8, 20))
        a = b + 0.05 + 0.03 * rng.normal(size=(8, 1)) + 0.1 * rng.normal(size=(8, 20))
        _, lo, hi = stats.hierarchical_bootstrap_diff(a, b, n_boot=400, seed=r, paired_seeds=True)
        hits += lo <= 0.05 <= hi
    assert 0.85 <= hits / reps <= 0.995


def test_bootstrap_bad_input():
    with pytest.raises(ValueError, match="empty"):
        stats.hierarchical_bootstrap(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        stats.hierarchical_bootstrap([[1.0, np.inf]])
    with pytest.raises(ValueError, match="n_boot"):
        stats.hierarchical_bootstrap([[1.0, 2.0]], n_boot=0)
    with pytest.raises(ValueError, match="level"):
        stats.hierarchical_bootstrap_diff([[1.0]], [[1.0]], level=0.0)
    with pytest.raises(ValueError, match="shape"):
        stats.hierarchical_bootstrap(np.zeros((2, 2, 2)))


def test_core_layer_imports_nothing_from_the_package():
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(stats))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in names if m.startswith("pam_jax")]


def test_bootstrap_ratio_closed_forms():
    rng = np.random.default_rng(3)
    sl = rng.uniform(0.2, 0.4, (3, 12))
    oracle = sl + rng.uniform(0.1, 0.3, (3, 12))
    half = sl + 0.5 * (oracle - sl)          # every seed and state reaches half of the oracle's gain
    r = stats.hierarchical_bootstrap_ratio(half, sl, oracle, n_boot=500)
    assert r.estimate == pytest.approx(0.5) and r.lo == pytest.approx(0.5) and r.hi == pytest.approx(0.5)
    # a hand computation: means 0.3 (method), 0.2 (SL), 0.6 (oracle) -> 0.25
    a, b, c = [[0.2, 0.4]], [[0.1, 0.3]], [[0.5, 0.7]]
    r = stats.hierarchical_bootstrap_ratio(a, b, c, n_boot=200)
    assert r.estimate == pytest.approx(0.25) and r.lo <= 0.25 <= r.hi
    with pytest.raises(ValueError, match="same"):
        stats.hierarchical_bootstrap_ratio(sl, sl[:2], oracle)
    flat = stats.hierarchical_bootstrap_ratio(sl, sl, sl, n_boot=50)      # no oracle gain: undefined
    assert np.isnan(flat.estimate) and np.isnan(flat.lo)
