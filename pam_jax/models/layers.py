"""Shared layers: timestep embedding, AdaLN modulation, 3D rotary encoding, attention, MLP."""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pam_jax.models import geometry, kernels


def sinusoidal_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """(...,) timesteps -> (..., dim) sin/cos features at geometric frequencies."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[..., None] * freqs
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, [(0, 0)] * (emb.ndim - 1) + [(0, 1)])
    return emb


class TimestepEmbedding(nnx.Module):
    """Sinusoidal features followed by an MLP."""

    def __init__(self, width: int, *, rngs: nnx.Rngs):
        self.width = width
        self.fc1 = nnx.Linear(width, width, rngs=rngs)
        self.fc2 = nnx.Linear(width, width, rngs=rngs)

    def __call__(self, t: jax.Array) -> jax.Array:
        return self.fc2(nnx.silu(self.fc1(sinusoidal_embedding(t, self.width))))


LN_EPS = 1e-6   # nnx.LayerNorm's default epsilon


def layer_norm(x: jax.Array, width: int | None = None, eps: float = LN_EPS) -> jax.Array:
    """LayerNorm over the last axis without scale or offset, statistics in float32, the result
    in x's dtype. With `width` below x's last dimension, x is a `width`-wide row followed by
    zero padding: the statistics count the `width` real columns and the padding stays zero.

    Two passes (the mean, then the mean square of the centred row), not E[x^2] - E[x]^2 as
    nnx.LayerNorm computes it by default: a GPU runs the two-pass form, its modulation and the
    producer of x as one kernel (XLA's Triton normalization fusion), where the one-pass form is
    a reduction kernel of its own (BUILD_NOTES)."""
    d = x.shape[-1]
    width = d if width is None else width
    xf = x.astype(jnp.float32)
    centred = xf - jnp.sum(xf, axis=-1, keepdims=True) / width
    if width < d:
        centred = jnp.where(jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1) < width, centred, 0.0)
    var = jnp.sum(centred * centred, axis=-1, keepdims=True) / width
    return (centred * jax.lax.rsqrt(var + eps)).astype(x.dtype)


class AdaLN(nnx.Module):
    """LayerNorm whose shift/scale/gate come from the timestep embedding (zero-initialised)."""

    def __init__(self, width: int, *, rngs: nnx.Rngs):
        self.width = width
        self.mod = nnx.Linear(width, 3 * width, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def modulation(self, temb: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(shift, scale, gate) from the timestep embedding: depends on the timestep only."""
        return tuple(jnp.split(self.mod(nnx.silu(temb)), 3, axis=-1))

    def modulate(self, x: jax.Array, mod) -> tuple[jax.Array, jax.Array]:
        """(modulated normalised x, gate) for a (shift, scale, gate) that broadcasts against x.
        x may be zero-padded past the model width, and then so are shift and scale
        (:func:`layer_norm`): the padding stays zero."""
        shift, scale, gate = mod
        return layer_norm(x, self.width) * (1.0 + scale) + shift, gate

    def __call__(self, x: jax.Array, temb: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Returns (modulated normalised x, gate); temb broadcasts against x."""
        return self.modulate(x, self.modulation(temb))


def rotary_angles(xyz: jax.Array, head_dim: int, max_freq: float) -> jax.Array:
    """(..., 3) positions -> (..., 3 * F) angles with F = head_dim // 6 frequencies per axis.

    Frequencies are geometric from 1 to `max_freq` radians per (normalised) unit.
    """
    f = head_dim // 6
    if f == 0:
        raise ValueError(f"3D rotary encoding needs head_dim >= 6, got {head_dim}")
    freqs = np.float32(max_freq) ** (np.arange(f, dtype=np.float32) / np.float32(max(f - 1, 1)))
    return (xyz[..., :, None] * freqs).reshape(*xyz.shape[:-1], 3 * f)


def apply_rotary(x: jax.Array, angles: jax.Array) -> jax.Array:
    """Rotate feature pairs of x (..., H, dh) by angles (..., 3F); dims past 6F pass through. The
    definition: the models run :func:`rotate`, the same rotation as elementwise arithmetic.

    For each axis a and frequency i, the pair (x[a, 0, i], x[a, 1, i]) is rotated by angle[a, i],
    so q.k depends only on the difference of the two positions.
    """
    n_ang = angles.shape[-1]
    rot, rest = x[..., : 2 * n_ang], x[..., 2 * n_ang :]
    rot = rot.reshape(*rot.shape[:-1], 3, 2, n_ang // 3)
    ang = angles.reshape(*angles.shape[:-1], 1, 3, n_ang // 3)  # head axis broadcast
    cos, sin = jnp.cos(ang).astype(x.dtype), jnp.sin(ang).astype(x.dtype)  # angles stay float32
    x1, x2 = rot[..., 0, :], rot[..., 1, :]
    out = jnp.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-2)
    return jnp.concatenate([out.reshape(*x.shape[:-1], 2 * n_ang), rest], axis=-1)


def rotary_pairs(d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a head of width d (:func:`apply_rotary`'s layout): each column's partner (the other
    member of its rotated pair; itself past the 6F rotated columns), the index of its angle (3F =
    a zero angle past them) and the sign of its sine term (0 past them)."""
    f = d // 6
    j = np.arange(d)
    axis, half, i = j // (2 * f), (j // f) % 2, j % f
    rotated = j < 6 * f
    partner = np.where(rotated, axis * 2 * f + (1 - half) * f + i, j)
    angle = np.where(rotated, axis * f + i, 3 * f)
    sign = np.where(rotated, np.where(half == 0, -1.0, 1.0), 0.0)
    return partner, angle, sign.astype(np.float32)


def rotary_table(head_dim: int, max_freq: float, padded: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per column of a head padded to `padded` (default head_dim): its frequency on the row of
    the axis it rotates with (3, padded), 0 elsewhere and past the 6F rotated columns, and the
    sign of its sine term (padded,) (:func:`rotary_pairs`). Host constants."""
    padded = head_dim if padded is None else padded
    _, angle, sign = rotary_pairs(head_dim)
    per_axis = rotary_angles(np.eye(3, dtype=np.float32), head_dim, max_freq)   # (3, 3F): e_k's angles
    freq = np.pad(np.pad(per_axis, ((0, 0), (0, 1)))[:, angle], ((0, 0), (0, padded - head_dim)))
    return freq, np.pad(sign, (0, padded - head_dim))


def rotary_columns(xyz: jax.Array, head_dim: int, max_freq: float, padded: int | None = None,
                   dtype=None) -> tuple[jax.Array, jax.Array]:
    """(..., 3) positions -> (cos, signed sin), each (..., 1, padded), for :func:`rotate`. Each
    column's angle is its axis's coordinate times its frequency (:func:`rotary_table`; the
    product :func:`rotary_angles` forms); columns past the 6F rotated ones, and the zero padding
    up to `padded`, get cos 1 and sin 0. The angles are float32; cos and sin are cast to `dtype`
    (default float32). The size-1 axis broadcasts over heads."""
    freq, sign = rotary_table(head_dim, max_freq, padded)
    xyz = xyz.astype(jnp.float32)[..., None, :]
    cos, sin = rotary_rotation(lambda k: xyz[..., k:k + 1], freq, sign)
    dtype = dtype or jnp.float32
    return cos.astype(dtype), sin.astype(dtype)


def rotary_rotation(coordinate, freqs, sign):
    """(cos, signed sin) of the rotary angles, each column's angle one product x_axis * frequency
    (`freqs` (>= 3, dp): row k the column's frequency if it rotates with axis k, else 0
    (:func:`rotary_table`); `sign` its sine term's sign, 0 past the rotated columns):
    `coordinate(k)` gives axis k's coordinates as a column broadcastable against (..., dp). The
    arithmetic of :func:`rotary_columns` and of the experimental fused kernels, which read the
    coordinates from refs."""
    ang = coordinate(0) * freqs[0]
    for k in (1, 2):
        ang = ang + coordinate(k) * freqs[k]
    return jnp.cos(ang), jnp.sin(ang) * sign


def rotate(x: jax.Array, rot: tuple[jax.Array, jax.Array], head_dim: int) -> jax.Array:
    """:func:`apply_rotary` of heads x (..., H, dp) (head_dim real columns, then zero padding) as
    elementwise arithmetic, rot = :func:`rotary_columns` at the tokens' positions:

        apply_rotary(x, rotary_angles(xyz)) == x * cos + x[..., partner] * signed_sin,

    partner (:func:`rotary_pairs`) a constant permutation swapping each rotated pair's columns. A
    GPU fuses this into the kernel that reads the result, where apply_rotary's slices, stack and
    concatenation are a kernel launch of their own (one per rotated projection and step)."""
    partner = np.concatenate([rotary_pairs(head_dim)[0], np.arange(head_dim, x.shape[-1])])
    cos, sin = rot
    return x * cos + x[..., partner] * sin


def few_inputs(x: jax.Array, w: jax.Array, y: jax.Array) -> jax.Array:
    """x @ w + y for a layer with a few inputs (the 3 coordinates of a point), as a sum of
    products: elementwise work XLA fuses into the ops that read the result, where a matmul of
    inner size 3 is a kernel launch of its own on a GPU."""
    for i in range(x.shape[-1]):
        y = y + x[..., i:i + 1] * w[i]
    return y


def attention(q: jax.Array, k: jax.Array, v: jax.Array, dim: int | None = None) -> jax.Array:
    """q (..., Lq, H, d), k/v (..., Lk, H, d) -> (..., Lq, H, d); softmax in float32; logits
    divided by sqrt(dim), default d (zero-padded heads pass their unpadded width)."""
    logits = jnp.einsum("...qhd,...khd->...hqk", q, k) / math.sqrt(dim or q.shape[-1])
    w = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    return jnp.einsum("...hqk,...khd->...qhd", w, v)


SMALL_ATTENTION = 4   # token counts up to this go through small_attention's elementwise form (runtime.small_attention)


def small_attention(q: jax.Array, k: jax.Array, v: jax.Array, dim: int | None = None) -> jax.Array:
    """:func:`attention` among a few tokens (L <= runtime.small_attention, default
    SMALL_ATTENTION; a candidate's A action points),
    written out per token pair: the L^2 logits are sums over d of one product each (sibling
    reductions a GPU runs as one kernel) and the softmax over L and the weighted sum of values are
    plain elementwise ops, instead of two batched matmuls around a softmax of a few elements
    (about six kernels per call on an H200, each doing almost nothing)."""
    n = q.shape[-3]
    if n > kernels.active().small_attention:
        return attention(q, k, v, dim)
    root = math.sqrt(dim or q.shape[-1])
    qs, ks, vs = ([x[..., i, :, :] for i in range(n)] for x in (q, k, v))
    out = []
    for qi in qs:
        logits = [jnp.sum(qi * kj, axis=-1, keepdims=True).astype(jnp.float32) / root for kj in ks]
        top = functools.reduce(jnp.maximum, logits)
        e = [jnp.exp(x - top) for x in logits]
        total = functools.reduce(jnp.add, e)
        out.append(functools.reduce(jnp.add, [(ej / total).astype(v.dtype) * vj for ej, vj in zip(e, vs)]))
    return jnp.stack(out, axis=-3)


def to_context_layout(k: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Keys and values (B, S, H, d) -> both (B, H, d, S): the layout :func:`context_attention`
    reads, so that a loop calling it many times does not transpose them on every call."""
    return jnp.moveaxis(k, 1, -1), jnp.moveaxis(v, 1, -1)


def context_attention(q: jax.Array, k: jax.Array, v: jax.Array, dim: int | None = None) -> jax.Array:
    """:func:`attention` against keys/values stored by :func:`to_context_layout`:
    q (B, L, H, d), k/v (B, H, d, S) -> (B, L, H, d)."""
    logits = jnp.einsum("bqhd,bhdk->bhqk", q, k) / math.sqrt(dim or q.shape[-1])
    w = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bhdk->bqhd", w, v)


# Zero-padding of the denoiser's matrices (see denoiser.LayerWeights). On a GPU, XLA pads a
# matmul's contraction of 240 (or a 60-wide head) to a multiple it likes, and it does so inside
# the DDIM loop, for the weights too, on every step (6 pad kernels per step, BUILD_NOTES); padded
# once before the loop, nothing is left to pad. On CPU nothing needs it.
PAD_MULTIPLES = (16, 64)       # (head width, model width) when padding


def pad_multiples() -> tuple[int, int]:
    """(head, width) multiples the denoiser pads its attention matrices to; (1, 1) = none.
    runtime.pad: "on", "off", or "auto" (pad on accelerators)."""
    mode = kernels.active().pad
    on = mode == "on" or (mode == "auto" and geometry.target_backend() != "cpu")
    return PAD_MULTIPLES if on else (1, 1)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pad_blocks(y: jax.Array, width: int, padded: int) -> jax.Array:
    """(..., k*width) -> (..., k*padded): each block of `width` columns zero-padded to `padded`
    (the hidden state is one block, the AdaLN modulations 3 per AdaLN)."""
    if padded == width:
        return y
    z = y.reshape(*y.shape[:-1], -1, width)
    return jnp.pad(z, [(0, 0)] * (z.ndim - 1) + [(0, padded - width)]).reshape(*y.shape[:-1], -1)


def pad_heads_in(kernel: jax.Array, bias: jax.Array, heads: int, rows: int, dp: int, columns=None):
    """A heads projection (D, H*d) and its bias -> (rows, H*dp) and (H*dp,): each head's d
    columns reordered by `columns` (d,) if given, then zero-padded to dp; the D input rows
    zero-padded to `rows`."""
    d_in, hd = kernel.shape
    d = hd // heads
    w, b = kernel.reshape(d_in, heads, d), bias.reshape(heads, d)
    if columns is not None:
        w, b = w[..., columns], b[..., columns]
    w = jnp.pad(w, ((0, rows - d_in), (0, 0), (0, dp - d))).reshape(rows, heads * dp)
    return w, jnp.pad(b, ((0, 0), (0, dp - d))).reshape(heads * dp)


def pad_heads_out(kernel: jax.Array, bias: jax.Array, heads: int, dp: int, cols: int | None = None):
    """An output projection (H*d, D) and its bias -> (H*dp, cols) and (cols,): zero rows for the
    padded head dims, zero columns past D (cols default D)."""
    hd, d_out = kernel.shape
    d, cols = hd // heads, cols or d_out
    w = jnp.pad(kernel.reshape(heads, d, d_out), ((0, 0), (0, dp - d), (0, cols - d_out)))
    return w.reshape(heads * dp, cols), jnp.pad(bias, (0, cols - d_out))


class MLP(nnx.Module):
    def __init__(self, width: int, hidden: int, out: int | None = None, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(width, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, out or width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(nnx.gelu(self.fc1(x)))


class Heads(nnx.Module):
    """A linear projection to (..., H, d)."""

    def __init__(self, width: int, heads: int, *, rngs: nnx.Rngs):
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.proj = nnx.Linear(width, width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.proj(x)
        return y.reshape(*y.shape[:-1], self.heads, y.shape[-1] // self.heads)
