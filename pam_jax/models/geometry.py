"""Point-set geometry in JAX: farthest-point sampling and k-nearest-neighbour grouping.

Both are static-shape and jit/vmap friendly, so the encoder stays one XLA graph.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp


FPS_METHODS = ("rows", "argmax", "pallas")
FPS_ENV = "PAM_JAX_FPS"          # overrides the device's default method (all give the same indices)


def default_fps_method() -> str:
    """$PAM_JAX_FPS when set; else "rows" on CPU (measured about 6x faster there, see
    BUILD_NOTES) and "argmax", the plain form, on accelerators (on an H200 the two tie; "pallas"
    is not measured on a GPU yet)."""
    chosen = os.environ.get(FPS_ENV)
    if chosen:
        if chosen not in FPS_METHODS:
            raise ValueError(f"${FPS_ENV}={chosen!r}: expected one of {FPS_METHODS}")
        return chosen
    return "rows" if jax.default_backend() == "cpu" else "argmax"


def farthest_point_sample(points: jax.Array, num_samples: int, method: str | None = None) -> jax.Array:
    """Greedy FPS on one cloud (N, 3) -> (num_samples,) int32 indices, starting at index 0; ties
    go to the lowest index. Both methods are exact and give the same indices:
      "argmax"  the plain iteration: squared distances over (N, 3), a running minimum, argmax;
      "rows"    the coordinates laid out as three rows (the distance update is three contiguous
                vector ops, no reduction over xyz) and the argmax as a max then the first index
                equal to it (two plain reductions instead of one over (value, index) pairs).
      "pallas"  the "rows" iteration inside one Pallas kernel (:func:`_fps_pallas`), so a GPU runs
                the whole loop in one launch instead of one launch per iteration; interpreted
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


def _fps_pallas(points: jax.Array, num_samples: int) -> jax.Array:
    """Greedy FPS of one cloud in one Pallas kernel (vmap adds a grid axis over clouds). The
    cloud is padded to a power of two with copies of point 0, which is always chosen first, so
    a pad is never farther than 0 and never chosen; indices are accumulated in a vector and
    stored once. Same indices and tie-breaking as the scan forms."""
    from jax.experimental import pallas as pl

    n = points.shape[0]
    npad = max(16, 1 << (n - 1).bit_length())
    spad = max(16, 1 << (num_samples - 1).bit_length())
    padded = jnp.concatenate([points, jnp.broadcast_to(points[:1], (npad - n, 3))]).astype(jnp.float32)
    xs, ys, zs = padded[:, 0], padded[:, 1], padded[:, 2]

    def kernel(x_ref, y_ref, z_ref, o_ref):
        x, y, z = x_ref[...], y_ref[...], z_ref[...]
        index = jax.lax.broadcasted_iota(jnp.int32, (npad,), 0)
        slot = jax.lax.broadcasted_iota(jnp.int32, (spad,), 0)

        def body(i, carry):
            last, min_d2, out = carry
            at = index == last
            qx, qy, qz = (jnp.sum(jnp.where(at, c, 0.0)) for c in (x, y, z))
            min_d2 = jnp.minimum(min_d2, (x - qx) ** 2 + (y - qy) ** 2 + (z - qz) ** 2)
            nxt = jnp.min(jnp.where(min_d2 == jnp.max(min_d2), index, npad)).astype(jnp.int32)
            return nxt, min_d2, jnp.where(slot == i, nxt, out)

        init = (jnp.int32(0), jnp.full((npad,), jnp.inf, jnp.float32), jnp.zeros((spad,), jnp.int32))
        o_ref[...] = jax.lax.fori_loop(1, num_samples, body, init)[2]

    out = pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct((spad,), jnp.int32),
                         interpret=jax.default_backend() == "cpu")(xs, ys, zs)
    return out[:num_samples]


def knn(queries: jax.Array, points: jax.Array, k: int) -> jax.Array:
    """Indices (Q, k) of the k nearest `points` (N, 3) to each query (Q, 3), nearest first."""
    d2 = (
        jnp.sum(queries**2, -1)[:, None]
        - 2.0 * queries @ points.T
        + jnp.sum(points**2, -1)[None, :]
    )
    _, idx = jax.lax.top_k(-d2, k)
    return idx
