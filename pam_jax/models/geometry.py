"""Point-set geometry in JAX: farthest-point sampling and k-nearest-neighbour grouping.

Both are static-shape and jit/vmap friendly, so the encoder stays one XLA graph.
"""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp

from pam_jax.models import kernels

FPS_METHODS = ("rows", "argmax", "pallas")   # runtime.fps chooses one ("auto": per backend); same indices


_PORTABLE = [False]


@contextlib.contextmanager
def _scoped(stack: list, value):
    """`value` on top of `stack` (a trace-time switch) for the length of a with block."""
    stack.append(value)
    try:
        yield
    finally:
        stack.pop()


def portable():
    """Within it the geometry takes plain XLA forms ("rows", "top_k"; also over a "pallas" in the
    runtime config), whatever the backend: for graphs serialised to run elsewhere (`pam-jax
    export`), which may not hold a Triton kernel (jax.export gives no compatibility guarantee for
    one, and it has no CPU lowering)."""
    return _scoped(_PORTABLE, True)


def portable_active() -> bool:
    """Whether the caller is inside :func:`portable`."""
    return _PORTABLE[-1]


_TARGET: list[str | None] = [None]


def targeting(platform: str):
    """Within it, the choices made per backend at trace time (FPS and kNN forms, Pallas lowering,
    the denoiser's padding) are those of `platform` ("cpu", "gpu") instead of the attached
    backend's: for compiling a graph for a device that is not here (benchmarks/hlo_kernels.py)."""
    return _scoped(_TARGET, platform)


def target_backend() -> str:
    """The backend the graph being traced is for: the :func:`targeting` one, else JAX's default."""
    return _TARGET[-1] or jax.default_backend()


def default_fps_method() -> str:
    """runtime.fps of the graph being traced (:func:`pam_jax.models.kernels.active`); "auto":
    "rows" on CPU (measured about 6x faster there than "argmax") and "pallas" on accelerators
    (on an H200, 3000 -> 256 points: 0.28 ms against 1.6 ms for the scan forms, same indices;
    BUILD_NOTES)."""
    chosen = kernels.active().fps
    if _PORTABLE[-1]:
        return chosen if chosen not in ("auto", "pallas") else "rows"
    if chosen != "auto":
        return chosen
    return "rows" if target_backend() == "cpu" else "pallas"


def farthest_point_sample(points: jax.Array, num_samples: int, method: str | None = None) -> jax.Array:
    """Greedy FPS on one cloud (N, 3) -> (num_samples,) int32 indices, starting at index 0; ties
    go to the lowest index. Both methods are exact and give the same indices:
      "argmax"  the plain iteration: squared distances over (N, 3), a running minimum, argmax;
      "rows"    the coordinates laid out as three rows (the distance update is three contiguous
                vector ops, no reduction over xyz) and the argmax as a max then the first index
                equal to it (two plain reductions instead of one over (value, index) pairs).
      "pallas"  the iteration inside one Pallas kernel (:func:`_fps_pallas`), so a GPU runs the
                whole loop in one launch instead of one launch per iteration; interpreted
                (slowly) on CPU, where it exists for tests.
    `method` None: :func:`default_fps_method`."""
    n = points.shape[0]
    if num_samples > n:
        raise ValueError(f"farthest_point_sample: asked for {num_samples} samples from {n} points")
    method = default_fps_method() if method is None else method
    if method not in FPS_METHODS:
        raise ValueError(f"farthest_point_sample: unknown method {method!r}: expected one of {FPS_METHODS}")
    if method == "pallas":
        return _fps_pallas(points, num_samples)
    rows = points.T  # (3, N)
    index = jnp.arange(n, dtype=jnp.int32)

    def distance_to(last):
        if method == "argmax":
            return jnp.sum((points - points[last]) ** 2, axis=-1)
        q = jax.lax.dynamic_slice_in_dim(rows, last, 1, axis=1)  # (3, 1)
        return (rows[0] - q[0]) ** 2 + (rows[1] - q[1]) ** 2 + (rows[2] - q[2]) ** 2

    def body(carry, _):
        last, min_d2 = carry
        min_d2 = jnp.minimum(min_d2, distance_to(last))
        if method == "argmax":
            nxt = jnp.argmax(min_d2).astype(jnp.int32)
        else:
            nxt = jnp.min(jnp.where(min_d2 == jnp.max(min_d2), index, n - 1))
        return (nxt, min_d2), nxt

    first = jnp.zeros((), jnp.int32)
    init = (first, jnp.full((n,), jnp.inf, points.dtype))
    _, rest = jax.lax.scan(body, init, None, length=num_samples - 1)
    return jnp.concatenate([first[None], rest])


FPS_PALLAS_WARPS = 4   # measured on an H200 (BUILD_NOTES): 4, 8 and 16 warps within 20%, 4 fastest at B = 1


def _fps_pallas(points: jax.Array, num_samples: int) -> jax.Array:
    """Greedy FPS of one cloud in one Pallas (Triton) kernel; vmap adds a grid axis over clouds.
    The cloud is padded to a power of two with copies of point 0, which is always chosen first,
    so a pad is never farther than 0 and never chosen. Per iteration: three scalar loads of the
    last chosen point, the running minimum, one argmax (first index on ties, like the scan
    forms); indices are accumulated in a vector and stored once. On an H200 this form beat
    masked sums for the query point and a max-then-min-index pick (BUILD_NOTES)."""
    from jax.experimental import pallas as pl

    n = points.shape[0]
    npad = max(16, 1 << (n - 1).bit_length())
    spad = max(16, 1 << (num_samples - 1).bit_length())
    padded = jnp.concatenate([points, jnp.broadcast_to(points[:1], (npad - n, 3))]).astype(jnp.float32)
    xs, ys, zs = padded[:, 0], padded[:, 1], padded[:, 2]

    def kernel(x_ref, y_ref, z_ref, o_ref):
        x, y, z = x_ref[...], y_ref[...], z_ref[...]
        slot = jax.lax.broadcasted_iota(jnp.int32, (spad,), 0)

        def body(i, carry):
            last, min_d2, out = carry
            qx, qy, qz = x_ref[last], y_ref[last], z_ref[last]
            min_d2 = jnp.minimum(min_d2, (x - qx) ** 2 + (y - qy) ** 2 + (z - qz) ** 2)
            nxt = jnp.argmax(min_d2).astype(jnp.int32)
            return nxt, min_d2, jnp.where(slot == i, nxt, out)

        init = (jnp.int32(0), jnp.full((npad,), jnp.inf, jnp.float32), jnp.zeros((spad,), jnp.int32))
        o_ref[...] = jax.lax.fori_loop(1, num_samples, body, init)[2]

    out = pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct((spad,), jnp.int32),
                         **_pallas_backend(FPS_PALLAS_WARPS))(xs, ys, zs)
    return out[:num_samples]


def _pallas_backend(num_warps: int) -> dict:
    """pallas_call arguments: interpreted on CPU (for tests); elsewhere Triton, named explicitly,
    since a bare pallas_call on a GPU may pick Mosaic GPU, which cannot vmap these kernels."""
    if target_backend() == "cpu":
        return {"interpret": True}
    from jax.experimental.pallas import triton as pl_triton

    return {"compiler_params": pl_triton.CompilerParams(num_warps=num_warps)}


KNN_METHODS = ("top_k", "pallas")   # runtime.knn chooses one ("auto": per backend); same indices
KNN_PALLAS_QUERIES = 4   # queries per Pallas program
KNN_PALLAS_WARPS = 8


def default_knn_method() -> str:
    """runtime.knn of the graph being traced; "auto": "top_k" on CPU and "pallas" on
    accelerators (on an H200, XLA's top-k took 1.6 ms of a 8 ms train step: BUILD_NOTES)."""
    chosen = kernels.active().knn
    if _PORTABLE[-1]:
        return "top_k"
    if chosen != "auto":
        return chosen
    return "top_k" if target_backend() == "cpu" else "pallas"


def knn(queries: jax.Array, points: jax.Array, k: int, method: str | None = None) -> jax.Array:
    """Indices (Q, k) of the k nearest `points` (N, 3) to each query (Q, 3), nearest first, ties
    to the lowest index. Squared distances as sums of squared coordinate differences (not the
    |q|^2 - 2 q.p + |p|^2 expansion, whose matmul runs in TF32 on GPUs). Methods (same indices):
      "top_k"   the distance matrix and lax.top_k;
      "pallas"  one Pallas kernel (:func:`_knn_pallas`): k rounds of argmin over the distances of
                a few queries held in registers; interpreted on CPU, where it exists for tests.
    `method` None: :func:`default_knn_method`."""
    if k > points.shape[0]:
        raise ValueError(f"knn: asked for {k} neighbours among {points.shape[0]} points")
    method = default_knn_method() if method is None else method
    if method not in KNN_METHODS:
        raise ValueError(f"knn: unknown method {method!r}: expected one of {KNN_METHODS}")
    if method == "pallas":
        return _knn_pallas(queries, points, k)
    rows = points.T   # (3, N): three contiguous rows, no reduction over xyz (as FPS's "rows")
    d2 = ((queries[:, 0, None] - rows[0]) ** 2 + (queries[:, 1, None] - rows[1]) ** 2
          + (queries[:, 2, None] - rows[2]) ** 2)
    _, idx = jax.lax.top_k(-d2, k)
    return idx


def _knn_pallas(queries: jax.Array, points: jax.Array, k: int) -> jax.Array:
    """kNN in one Pallas (Triton) kernel; the grid runs over blocks of KNN_PALLAS_QUERIES queries
    (vmap adds a grid axis over clouds). Each program holds its queries' squared distances to
    every point (padded to a power of two; pads at +inf) and takes k rounds of argmin, setting
    each chosen point to +inf: nearest first, ties to the lowest index, like lax.top_k."""
    from jax.experimental import pallas as pl

    n, q = points.shape[0], queries.shape[0]
    qb = KNN_PALLAS_QUERIES
    npad = max(16, 1 << (n - 1).bit_length())
    kpad = max(16, 1 << (k - 1).bit_length())
    qpad = -(-q // qb) * qb
    pts = jnp.pad(points.astype(jnp.float32), ((0, npad - n), (0, 0)))
    qs = jnp.pad(queries.astype(jnp.float32), ((0, qpad - q), (0, 0)))

    def kernel(px_ref, py_ref, pz_ref, qx_ref, qy_ref, qz_ref, o_ref):
        px, py, pz = px_ref[...][None, :], py_ref[...][None, :], pz_ref[...][None, :]
        qx, qy, qz = qx_ref[...][:, None], qy_ref[...][:, None], qz_ref[...][:, None]
        index = jax.lax.broadcasted_iota(jnp.int32, (qb, npad), 1)
        slot = jax.lax.broadcasted_iota(jnp.int32, (qb, kpad), 1)
        d2 = (px - qx) ** 2 + (py - qy) ** 2 + (pz - qz) ** 2
        d2 = jnp.where(index < n, d2, jnp.inf)

        def body(j, carry):
            d2, out = carry
            nearest = jnp.argmin(d2, axis=1).astype(jnp.int32)[:, None]
            return jnp.where(index == nearest, jnp.inf, d2), jnp.where(slot == j, nearest, out)

        o_ref[...] = jax.lax.fori_loop(0, k, body, (d2, jnp.zeros((qb, kpad), jnp.int32)))[1]

    whole = pl.BlockSpec((npad,), lambda i: (0,))
    block = pl.BlockSpec((qb,), lambda i: (i,))
    out = pl.pallas_call(
        kernel, grid=(qpad // qb,), in_specs=[whole] * 3 + [block] * 3,
        out_specs=pl.BlockSpec((qb, kpad), lambda i: (i, 0)),
        out_shape=jax.ShapeDtypeStruct((qpad, kpad), jnp.int32), **_pallas_backend(KNN_PALLAS_WARPS),
    )(pts[:, 0], pts[:, 1], pts[:, 2], qs[:, 0], qs[:, 1], qs[:, 2])
    return out[:q, :k]
