"""Confidence intervals and tests for comparing methods on evaluation results; numpy/scipy only.

* :func:`mean_ci`, :func:`paired_diff_ci` -- Student-t intervals (and the paired t-test) for a
  mean and for a mean difference over the same start states (scipy's ``ttest_1samp``,
  ``ttest_rel``).
* :func:`wilson_interval`, :func:`mcnemar_exact` -- a success rate's Wilson score interval, and
  the exact McNemar test for two methods' paired success/failure outcomes (scipy's
  ``binomtest``).
* :func:`hierarchical_bootstrap`, :func:`hierarchical_bootstrap_diff` -- percentile intervals
  that count both sources of variation of a policy evaluation: the training seed (resampled
  first) and the start state (resampled second). With few seeds the seed level dominates and
  the interval is honestly wide; a single seed gives the start-state-only bootstrap.

scipy computes the intervals and tests; this module validates the input first, fixes the
degenerate cases (one value, zero spread, no discordant pair) and adds the bootstrap, which scipy
lacks. Every function raises a one-line ``ValueError`` on bad input (empty, NaN or inf, wrong
shape, ``level`` outside (0, 1)).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np
from scipy import stats as _st

__all__ = [
    "hierarchical_bootstrap_ratio",
    "MeanCI",
    "PairedDiff",
    "McNemar",
    "BootstrapCI",
    "mean_ci",
    "paired_diff_ci",
    "wilson_interval",
    "mcnemar_exact",
    "hierarchical_bootstrap",
    "hierarchical_bootstrap_diff",
]

# Elements of one bootstrap chunk's gathered values (float64: 16 MiB) plus as many indices.
_CHUNK_ELEMENTS = 1 << 21


class MeanCI(NamedTuple):
    mean: float
    half_width: float


class PairedDiff(NamedTuple):
    mean: float
    half_width: float
    p_value: float


class McNemar(NamedTuple):
    p_value: float
    a_only: int
    b_only: int


class BootstrapCI(NamedTuple):
    estimate: float
    lo: float
    hi: float


# --------------------------------------------------------------------------- validation
def _level(level) -> float:
    try:
        v = float(level)
    except (TypeError, ValueError):
        raise ValueError(f"level: expected a number in (0, 1), got {level!r}") from None
    if not 0.0 < v < 1.0:
        raise ValueError(f"level: expected a number in (0, 1), got {level!r}")
    return v


def _finite(a: np.ndarray, name: str) -> np.ndarray:
    if a.size == 0:
        raise ValueError(f"{name}: empty input")
    bad = a.size - int(np.count_nonzero(np.isfinite(a)))
    if bad:
        raise ValueError(f"{name}: {bad} non-finite values (NaN or inf)")
    return a


def _vector(x, name: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a 1-D array of numbers") from None
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {a.shape}")
    return _finite(a, name)


def _matrix(x, name: str) -> np.ndarray:
    """(seeds, start states) from a 2-D array, a list of equal-length 1-D arrays, or 1-D (1 seed)."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a (seeds, start states) array of numbers "
                         "(per-seed arrays of equal length)") from None
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"{name}: expected shape (seeds, start states), got {a.shape}")
    return _finite(a, name)


def _rows(values, name: str) -> list[np.ndarray]:
    """Per-seed 1-D arrays, possibly of different lengths."""
    if isinstance(values, np.ndarray) or not isinstance(values, Sequence) or not len(values):
        return list(_matrix(values, name))
    if not all(np.ndim(r) == 1 for r in values):
        return list(_matrix(values, name))
    rows = [_vector(r, f"{name}[{i}]") for i, r in enumerate(values)]
    return rows


def _positive_int(x, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1:
        raise ValueError(f"{name}: expected a positive int, got {x!r}")
    return int(x)


def _generator(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int or a numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed))


def _binary(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of booleans, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name}: empty input")
    if a.dtype != bool:
        try:
            f = a.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected booleans or 0/1 values") from None
        if not np.all((f == 0) | (f == 1)):
            raise ValueError(f"{name}: expected booleans or 0/1 values")
        a = f == 1
    return a


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- t intervals
def _half_width(ci) -> float:
    return float(ci.high - ci.low) / 2.0


def mean_ci(x, level: float = 0.95) -> MeanCI:
    """Mean of ``x`` and the half-width of its Student-t interval (n - 1 dof,
    ``scipy.stats.ttest_1samp(...).confidence_interval``); NaN half-width when ``x`` has one
    value, 0 when all its values are equal."""
    a = _vector(x, "x")
    lv = _level(level)
    m = float(a.mean())
    if a.size == 1:
        return MeanCI(m, float("nan"))
    if float(a.std(ddof=1)) == 0.0:
        return MeanCI(m, 0.0)
    return MeanCI(m, _half_width(_st.ttest_1samp(a, 0.0).confidence_interval(confidence_level=lv)))


def paired_diff_ci(a, b, level: float = 0.95) -> PairedDiff:
    """Mean of ``a - b`` (paired by start state), its t half-width, and the two-sided paired
    t-test p-value (``scipy.stats.ttest_rel``); one pair gives NaN for both, zero spread gives
    p = 1 (no difference) or 0."""
    x, y = _vector(a, "a"), _vector(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a, b: expected the same length (paired), got {x.size} and {y.size}")
    lv = _level(level)
    d = x - y
    m = float(d.mean())
    if d.size == 1:
        return PairedDiff(m, float("nan"), float("nan"))
    if float(d.std(ddof=1)) == 0.0:
        return PairedDiff(m, 0.0, 1.0 if m == 0.0 else 0.0)
    res = _st.ttest_rel(x, y)
    return PairedDiff(m, _half_width(res.confidence_interval(confidence_level=lv)), float(res.pvalue))


# --------------------------------------------------------------------------- success rates
def wilson_interval(k, n, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval ``(lo, hi)`` for the success rate of ``k`` successes in ``n`` trials
    (``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``)."""
    for v, name in ((k, "k"), (n, "n")):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name}: expected an int, got {v!r}")
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"k, n: expected 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = _st.binomtest(int(k), int(n)).proportion_ci(confidence_level=_level(level), method="wilson")
    return float(max(0.0, ci.low)), float(min(1.0, ci.high))


def mcnemar_exact(a_success, b_success) -> McNemar:
    """Two-sided exact McNemar test of paired binary outcomes: a binomial(0.5) test on the
    discordant pairs (``a_only``: a succeeded and b failed; ``b_only``: the reverse;
    ``scipy.stats.binomtest(a_only, a_only + b_only, 0.5)``); p = 1 when there are none."""
    a, b = _binary(a_success, "a_success"), _binary(b_success, "b_success")
    if a.shape != b.shape:
        raise ValueError(f"a_success, b_success: expected the same length (paired), "
                         f"got {a.size} and {b.size}")
    a_only = int(np.count_nonzero(a & ~b))
    b_only = int(np.count_nonzero(~a & b))
    if a_only + b_only == 0:
        return McNemar(1.0, a_only, b_only)
    return McNemar(float(_st.binomtest(a_only, a_only + b_only, 0.5).pvalue), a_only, b_only)


# --------------------------------------------------------------------------- bootstrap
def _chunks(n_boot: int, per_draw: int):
    size = max(1, min(n_boot, _CHUNK_ELEMENTS // max(1, per_draw)))
    for start in range(0, n_boot, size):
        yield min(size, n_boot - start)


def hierarchical_bootstrap(values, n_boot: int = 10000, level: float = 0.95, seed=0,
                           statistic: Callable = np.mean) -> BootstrapCI:
    """Two-level percentile bootstrap of ``statistic`` over all values: resample training seeds
    (rows of ``values``, shape (seeds, start states), or a list of per-seed 1-D arrays) with
    replacement, then each drawn seed's start states with replacement; returns
    ``(estimate on the data, lo, hi)``. ``statistic`` is a NumPy reduction called as
    ``statistic(x, axis=-1)``; per-seed arrays of different lengths need ``np.mean``."""
    rows = _rows(values, "values")
    nb = _positive_int(n_boot, "n_boot")
    lv = _level(level)
    rng = _generator(seed)
    lengths = np.array([r.size for r in rows])
    s = len(rows)
    if np.all(lengths == lengths[0]):
        v = np.stack(rows)
        n = v.shape[1]
        estimate = float(statistic(v.reshape(1, -1), axis=-1)[0])
        out = []
        for c in _chunks(nb, s * n):
            seeds = rng.integers(0, s, size=(c, s, 1))
            states = rng.integers(0, n, size=(c, s, n))
            out.append(np.asarray(statistic(v[seeds, states].reshape(c, s * n), axis=-1)))
        draws = np.concatenate(out)
    else:
        if statistic is not np.mean:
            raise ValueError("values: per-seed arrays of different lengths need statistic=np.mean")
        nmax = int(lengths.max())
        padded = np.zeros((s, nmax))
        for i, r in enumerate(rows):
            padded[i, :r.size] = r
        estimate = float(np.concatenate(rows).mean())
        pos = np.arange(nmax)
        out = []
        for c in _chunks(nb, s * nmax):
            seeds = rng.integers(0, s, size=(c, s))
            size = lengths[seeds]                                      # (c, s)
            states = (rng.random((c, s, nmax)) * size[..., None]).astype(np.int64)
            states = np.minimum(states, size[..., None] - 1)           # guard u * L rounding to L
            picked = padded[seeds[..., None], states]
            picked = np.where(pos < size[..., None], picked, 0.0)
            out.append(picked.sum(axis=(1, 2)) / size.sum(axis=1))
        draws = np.concatenate(out)
    return BootstrapCI(estimate, *_percentiles(draws, lv))


def hierarchical_bootstrap_diff(a, b, n_boot: int = 10000, level: float = 0.95,
                                seed=0, paired_seeds: bool = False) -> BootstrapCI:
    """Paired two-level bootstrap of ``mean(a) - mean(b)``, ``a`` (seeds_a, n) and ``b``
    (seeds_b, n) over the same n start states (1-D = one seed): each draw resamples the
    start states once, shared by both methods, and each method's seeds independently.

    ``paired_seeds``: row i of ``a`` and of ``b`` come from the same training seed (e.g. a
    policy fine-tuned from, or selecting over, the baseline's seed-i policy), so each draw
    resamples the seeds once, shared by both methods, as it does the start states: the
    interval then counts how the method's gain varies from seed to seed, not how much the
    seeds' absolute levels differ. Needs as many seeds on each side."""
    x, y = _matrix(a, "a"), _matrix(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"a, b: expected the same start states, got {x.shape[1]} and {y.shape[1]}")
    if paired_seeds and x.shape[0] != y.shape[0]:
        raise ValueError(f"a, b: paired_seeds needs the same training seeds, got {x.shape[0]} and {y.shape[0]}")
    nb = _positive_int(n_boot, "n_boot")
    lv = _level(level)
    rng = _generator(seed)
    (sa, n), sb = x.shape, y.shape[0]
    estimate = float(x.mean() - y.mean())
    out = []
    for c in _chunks(nb, (sa + sb) * n):
        states = rng.integers(0, n, size=(c, 1, n))
        seeds_a = rng.integers(0, sa, size=(c, sa, 1))
        seeds_b = seeds_a if paired_seeds else rng.integers(0, sb, size=(c, sb, 1))
        out.append(x[seeds_a, states].mean(axis=(1, 2)) - y[seeds_b, states].mean(axis=(1, 2)))
    return BootstrapCI(estimate, *_percentiles(np.concatenate(out), lv))


def hierarchical_bootstrap_ratio(a, b, c, n_boot: int = 10000, level: float = 0.95, seed=0) -> BootstrapCI:
    """Two-level bootstrap of ``(mean(a) - mean(b)) / (mean(c) - mean(b))``, the share of ``c``'s
    gain over ``b`` that ``a`` reaches (e.g. DeformPAM, SL and the oracle over SL's candidates:
    the selection efficiency). ``a``, ``b``, ``c``: (seeds, n) over the same seeds and start
    states, row i of each from training seed i; each draw resamples the seeds once and the start
    states once, shared by the three. A draw whose denominator is 0 gives nan and is left out."""
    x, y, z = _matrix(a, "a"), _matrix(b, "b"), _matrix(c, "c")
    if not x.shape == y.shape == z.shape:
        raise ValueError(f"a, b, c: expected the same (seeds, start states), got {x.shape}, {y.shape}, {z.shape}")
    nb = _positive_int(n_boot, "n_boot")
    lv = _level(level)
    rng = _generator(seed)
    s, n = x.shape
    den = float(z.mean() - y.mean())
    estimate = float(x.mean() - y.mean()) / den if den != 0 else float("nan")
    out = []
    for k in _chunks(nb, 3 * s * n):
        states = rng.integers(0, n, size=(k, 1, n))
        seeds = rng.integers(0, s, size=(k, s, 1))
        mb = y[seeds, states].mean(axis=(1, 2))
        d = z[seeds, states].mean(axis=(1, 2)) - mb
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append(np.where(d != 0, (x[seeds, states].mean(axis=(1, 2)) - mb) / np.where(d != 0, d, 1.0), np.nan))
    draws = np.concatenate(out)
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return BootstrapCI(estimate, float("nan"), float("nan"))
    return BootstrapCI(estimate, *_percentiles(draws, lv))
