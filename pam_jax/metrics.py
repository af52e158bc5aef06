"""Shape metrics of DeformPAM's evaluation (docs/method.md, "Evaluation"); numpy/scipy only.

All functions take point sets as arrays of shape ``(N, 2)`` or ``(N, 3)`` (metres; only the
columns named below are used) and raise a one-line ``ValueError`` on bad input (not an array of
numbers, wrong shape, empty, NaN or inf).

Rotation search. :func:`iou_2d`, :func:`chamfer` and :func:`emd` rotate the first set ``a`` about
the z axis (through the origin, after zero-meaning) and keep the best value over
:data:`ROTATION_ANGLES_DEG`, the 20 angles ``q * 90 + d`` for ``q`` in {0, 1, 2, 3} and ``d`` in
{-20, -10, 0, 10, 20} degrees, i.e. every combination of a quarter turn with a small -20..20
degree correction in 10 degree steps (the official evaluation takes the max IoU, the min Chamfer
and the min EMD over them). ``emd(..., rotation_search=False)`` gives the unrotated value.

* :func:`iou_2d` -- xy only. Both sets are zero-meaned separately. For each rotation of ``a`` the
  two sets are scaled *jointly* and isotropically into the pixel range [0, 99] (one scale factor
  for x and y, chosen from the joint bounding box of the rotated ``a`` and ``b``, so that the
  larger side spans 0..99 and the shapes keep their aspect ratio), every point is drawn as a
  filled disc of radius 2 px (pixels whose centre lies within 2 px of the point's pixel) on a
  100 x 100 mask, and intersection / union of the two masks is taken.
* :func:`chamfer` -- ``num_samples`` points are drawn from each set without replacement (a set
  with at most ``num_samples`` points is used whole), each sample is zero-meaned, and the
  mean Euclidean nearest-neighbour distance from ``a`` to ``b`` plus the one from ``b`` to ``a``
  is minimised over the rotations of ``a``. Uses xyz when both sets have 3 columns, else xy.
* :func:`emd` -- the same sampling and zero-meaning, then the optimal one-to-one assignment
  (``scipy.optimize.linear_sum_assignment`` on Euclidean distances); the mean matched distance,
  minimised over the rotations of ``a``. When the two samples differ in size (a set smaller than
  ``num_samples``), every point of the smaller one is matched to a distinct point of the larger
  one. The search is exact but skips work: every rotation first gets a cheap lower bound on its
  EMD (row then column reduction of its cost matrix, a feasible point of the assignment dual),
  the assignments are solved in increasing order of that bound, and the search stops once the
  next bound is no smaller than the best EMD found. One 1000 x 1000 assignment takes roughly
  0.1-0.3 s on one CPU core, so a search costs 1 to 20 of them: few when ``a`` is close to a
  rotation of ``b``, all 20 when the shapes are unrelated.
* :func:`normalized_coverage` -- the cloth's covered area on a 100 x 100 grid spanning the xy
  bounding box of ``points``, divided by ``reference_area``, the area of the flat reference
  (e.g. this same function's covered area for the flat cloth with ``reference_area=1``; the
  reference must be measured with the same ``form``). ``form="slots"`` (the default) is the
  definition of DeformPAM's published evaluation: per point and per axis, with
  ``span = (max - min) / 100`` and ``offset = coordinate - min``, the cells
  ``[low, max(high, low + 1))`` with ``low = max(round((offset - r) / span), 0)`` and
  ``high = min(round((offset + r) / span), 100)`` are marked (a rectangle of cells, at least
  one), the flat index ``x * 100 + y`` is clipped to 9999 (so an index 100 on the y axis lands on
  the next row's first cell, and 100 on the x axis on the last cell, as in the published code),
  and the covered area is the number of marked cells x ``span_x`` x ``span_y``. ``round`` is
  round-half-to-even, as numpy's. ``form="disc"``: a cell counts when its centre lies within
  ``particle_radius`` of some point. A degenerate bounding box (all points on a line or at one
  spot) has area 0 and gives coverage 0 in both forms.

``key_or_seed`` may be an int, a ``numpy.random.Generator``, or a JAX PRNG key (raw uint32 or
typed); the same value always gives the same samples.
"""
from __future__ import annotations

import sys

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

__all__ = [
    "ROTATION_ANGLES_DEG",
    "iou_2d",
    "chamfer",
    "emd",
    "normalized_coverage",
    "COVERAGE_FORMS",
]

COVERAGE_FORMS = ("slots", "disc")

ROTATION_ANGLES_DEG: tuple[float, ...] = tuple(
    float(q * 90 + d) for q in range(4) for d in (-20, -10, 0, 10, 20))

_MASK_SIZE = 100
_DISC_RADIUS_PX = 2
_GRID = 100


# --------------------------------------------------------------------------- validation
def _points(x, name: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected an array of numbers with shape (N, 2) or (N, 3)") from None
    if a.ndim != 2 or a.shape[1] not in (2, 3):
        raise ValueError(f"{name}: expected shape (N, 2) or (N, 3), got {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name}: empty point set")
    bad = a.size - int(np.count_nonzero(np.isfinite(a)))
    if bad:
        raise ValueError(f"{name}: {bad} non-finite values (NaN or inf)")
    return a


def _positive(x, name: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a positive number, got {x!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name}: expected a positive finite number, got {x!r}")
    return v


def _num_samples(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"num_samples: expected a positive int, got {n!r}")
    return int(n)


def _rng(key_or_seed) -> np.random.Generator:
    if isinstance(key_or_seed, np.random.Generator):
        return key_or_seed
    if isinstance(key_or_seed, (int, np.integer)) and not isinstance(key_or_seed, bool):
        if key_or_seed < 0:
            raise ValueError(f"key_or_seed: expected a non-negative seed, got {key_or_seed}")
        return np.random.default_rng(int(key_or_seed))
    # A JAX key: typed keys expose their words through jax.random.key_data.
    jax = sys.modules.get("jax")
    if jax is not None:
        try:
            if jax.dtypes.issubdtype(key_or_seed.dtype, jax.dtypes.prng_key):
                key_or_seed = jax.random.key_data(key_or_seed)
        except AttributeError:
            pass
    try:
        words = np.asarray(key_or_seed)
    except Exception:  # noqa: BLE001 - anything unreadable is bad input
        words = None
    if words is None or words.size == 0 or not np.issubdtype(words.dtype, np.integer):
        raise ValueError("key_or_seed: expected an int seed, a numpy Generator or a JAX PRNG key")
    return np.random.default_rng(words.astype(np.uint64).ravel().tolist())


# --------------------------------------------------------------------------- helpers
def _rotation(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, -s], [s, c]])


def _rotate_z(p: np.ndarray, deg: float) -> np.ndarray:
    out = p.copy()
    out[:, :2] = p[:, :2] @ _rotation(deg).T
    return out


def _sample(p: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    s = p[rng.choice(p.shape[0], size=n, replace=False)] if p.shape[0] > n else p
    return s - s.mean(axis=0)


def _common_columns(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if a.shape[1] == 3 and b.shape[1] == 3:
        return a, b
    return a[:, :2], b[:, :2]


_DISC = None


def _disc() -> np.ndarray:
    global _DISC
    if _DISC is None:
        r = _DISC_RADIUS_PX
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        _DISC = (xx * xx + yy * yy) <= r * r
    return _DISC


def _mask(pix: np.ndarray) -> np.ndarray:
    """The pixels within :data:`_DISC_RADIUS_PX` of a point of ``pix`` (N, 2) on the
    :data:`_MASK_SIZE` grid: the points' pixels dilated by the disc, pixels past the border
    dropped (what ``scipy.ndimage.binary_dilation`` with the disc gives, as shifted ORs)."""
    r, n = _DISC_RADIUS_PX, _MASK_SIZE
    m = np.zeros((n + 2 * r, n + 2 * r), dtype=bool)
    # Round away float noise first, so that a shifted or quarter-turned copy of a set lands
    # on exactly the same pixels as the original.
    ij = np.clip(np.rint(np.round(pix, 6)).astype(np.int64), 0, n - 1)
    m[ij[:, 0] + r, ij[:, 1] + r] = True
    out = np.zeros((n, n), dtype=bool)
    for di, dj in np.argwhere(_disc()):
        out |= m[di:di + n, dj:dj + n]
    return out


# --------------------------------------------------------------------------- metrics
def iou_2d(a, b) -> float:
    """2D IoU of two point sets' xy footprints, maximised over :data:`ROTATION_ANGLES_DEG`.

    Returns a float in [0, 1]; identical sets (or ``a`` a quarter-turn of ``b``) give 1.0.
    """
    a = _points(a, "a")[:, :2]
    b = _points(b, "b")[:, :2]
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    best = 0.0
    for deg in ROTATION_ANGLES_DEG:
        ar = a @ _rotation(deg).T
        both = np.concatenate([ar, b])
        lo = both.min(axis=0)
        span = float((both.max(axis=0) - lo).max())
        scale = (_MASK_SIZE - 1) / span if span > 0 else 0.0
        ma = _mask((ar - lo) * scale)
        mb = _mask((b - lo) * scale)
        union = np.count_nonzero(ma | mb)
        best = max(best, np.count_nonzero(ma & mb) / union)
    return float(best)


def chamfer(a, b, num_samples: int = 1000, key_or_seed=0) -> float:
    """Symmetric Chamfer distance (metres, sum of both mean NN distances), minimised over
    :data:`ROTATION_ANGLES_DEG`, on ``num_samples`` zero-meaned samples of each set."""
    a, b = _common_columns(_points(a, "a"), _points(b, "b"))
    n = _num_samples(num_samples)
    rng = _rng(key_or_seed)
    sa, sb = _sample(a, n, rng), _sample(b, n, rng)
    tree_b = cKDTree(sb)
    best = np.inf
    for deg in ROTATION_ANGLES_DEG:
        ra = _rotate_z(sa, deg)
        d_ab = tree_b.query(ra)[0].mean()
        d_ba = cKDTree(ra).query(sb)[0].mean()
        best = min(best, d_ab + d_ba)
    return float(best)


def _assignment_lower_bound(cost: np.ndarray) -> float:
    """A lower bound on the mean cost of the optimal assignment of ``cost`` (rows <= columns):
    row minima, then (square only) column minima of the row-reduced matrix; the larger of that
    and the column-first order. Both are feasible dual solutions, hence valid bounds."""
    u = cost.min(axis=1)
    if cost.shape[0] != cost.shape[1]:
        return float(u.mean())
    v = (cost - u[:, None]).min(axis=0)
    v2 = cost.min(axis=0)
    u2 = (cost - v2[None, :]).min(axis=1)
    return float(max(u.mean() + v.mean(), v2.mean() + u2.mean()))


def _assignment_cost(cost: np.ndarray) -> float:
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def emd(a, b, num_samples: int = 1000, key_or_seed=0, *, rotation_search: bool = True) -> float:
    """Earth mover's distance (metres): mean distance of the optimal one-to-one matching
    between ``num_samples`` zero-meaned samples of each set, minimised over
    :data:`ROTATION_ANGLES_DEG` (``rotation_search=False``: no rotation)."""
    a, b = _common_columns(_points(a, "a"), _points(b, "b"))
    n = _num_samples(num_samples)
    rng = _rng(key_or_seed)
    sa, sb = _sample(a, n, rng), _sample(b, n, rng)
    # Rows = the smaller sample, so that every row is matched (and the bound's orientation holds).
    swap = sa.shape[0] > sb.shape[0]

    def cost_at(deg: float) -> np.ndarray:
        c = cdist(_rotate_z(sa, deg), sb)
        return c.T if swap else c

    if not rotation_search:
        return _assignment_cost(cost_at(0.0))
    bounds = [_assignment_lower_bound(cost_at(deg)) for deg in ROTATION_ANGLES_DEG]
    best = np.inf
    for k in np.argsort(bounds, kind="stable"):
        if bounds[k] >= best * (1.0 + 1e-12):     # this and every later rotation cannot win
            break
        best = min(best, _assignment_cost(cost_at(ROTATION_ANGLES_DEG[k])))
    return float(best)


def _slot_cells(p: np.ndarray, r: float, lo: np.ndarray, span: np.ndarray) -> int:
    """Number of distinct flat cells the slot-grid rule marks (module docstring)."""
    cell = span / _GRID
    offset = p - lo
    low = np.maximum(np.round((offset - r) / cell), 0).astype(np.int64)               # (N, 2)
    high = np.minimum(np.round((offset + r) / cell), _GRID).astype(np.int64)
    high = np.maximum(high, low + 1)                                                    # at least one cell
    # every point marks the rectangle [low_x, high_x) x [low_y, high_y) of a (101 x 101) index
    # grid (indices run 0..100): a 2D difference array, summed, gives the marked (x, y) pairs
    diff = np.zeros((_GRID + 2, _GRID + 2), np.int64)
    np.add.at(diff, (low[:, 0], low[:, 1]), 1)
    np.add.at(diff, (high[:, 0], low[:, 1]), -1)
    np.add.at(diff, (low[:, 0], high[:, 1]), -1)
    np.add.at(diff, (high[:, 0], high[:, 1]), 1)
    marked = np.cumsum(np.cumsum(diff, axis=0), axis=1)[:_GRID + 1, :_GRID + 1] > 0
    x, y = np.nonzero(marked)
    flat = np.minimum(x * _GRID + y, _GRID * _GRID - 1)
    return int(np.unique(flat).size)


def normalized_coverage(points, particle_radius: float, reference_area: float, *, form: str = "slots") -> float:
    """Covered xy area of ``points`` on a 100 x 100 grid over their xy bounding box, divided by
    ``reference_area`` (see the module docstring). ``form``: ``"slots"`` (the published
    definition, default) or ``"disc"``."""
    if form not in COVERAGE_FORMS:
        raise ValueError(f"form: expected one of {COVERAGE_FORMS}, got {form!r}")
    p = _points(points, "points")[:, :2]
    r = _positive(particle_radius, "particle_radius")
    ref = _positive(reference_area, "reference_area")
    lo, hi = p.min(axis=0), p.max(axis=0)
    span = hi - lo
    area = float(span[0] * span[1])
    if area <= 0.0:
        return 0.0
    if form == "slots":
        return float(_slot_cells(p, r, lo, span) * area / (_GRID * _GRID) / ref)
    cell = span / _GRID
    centres = [lo[k] + (np.arange(_GRID) + 0.5) * cell[k] for k in range(2)]
    gx, gy = np.meshgrid(*centres, indexing="ij")
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    dist = cKDTree(p).query(grid, distance_upper_bound=r)[0]
    covered = np.count_nonzero(dist <= r) / grid.shape[0]
    return float(covered * area / ref)
