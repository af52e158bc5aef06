"""The denoiser's forward pass for sampling on a GPU with one Pallas (Triton) kernel per sub-layer.

Why: in the DDIM loop each step is a few small matmuls (16 action tokens at K = 8), and XLA runs
about 57 kernels per step for them on an H200 (BUILD_NOTES, issue 12), each doing almost nothing.
Here each sub-layer is one kernel that does all of its work per (cloud, block of rows, head):

  cross  AdaLN (LayerNorm + shift/scale) -> this head's query with 3D rotary -> attention to the
         point tokens -> this head's share of the output projection;
  self   AdaLN -> this head's q, k, v with rotary -> attention among a candidate's A points ->
         its share of the output projection;
  ffn    AdaLN -> one block of the hidden units (matmul, GELU) -> its share of the second matmul.

Each kernel writes its shares side by side; one XLA fusion sums them and adds the gated residual.
So a layer is six kernels (three Pallas, three XLA) instead of about 28. With "chain"
($PAM_JAX_FUSED=chain) each kernel does the previous sub-layer's residual itself (sums its
shares, adds the gated residual and writes the new hidden state, identically in every program
of a block) and only the last residual is left to XLA: three kernels per layer.

Layout. Hidden states are (A, B, R, Dp): the A points of a candidate lie in separate slabs, so
the self-attention between a candidate's points is elementwise between slabs; R is the number of
candidates (N, or N x Monte-Carlo samples) padded to the row block. Every width is zero-padded to
a power of two (Triton's blocks): the model width D -> Dp, a head d -> dp, the MLP hidden -> a
multiple of FFN_BLOCK. Padded columns are zero in every weight, bias and hidden state; the
LayerNorm statistics count the D real columns only. The rotary rotation is folded into the
weights: rotary(q) = q * cos + q' * sin', where q' comes from the same matrix with each rotated
pair's columns swapped (`FusedLayer.cross_qs` etc.) and sin' carries the pair's sign, so the
kernels need no reshapes or concatenations.

Only for sampling (no gradients: pallas_call has no autodiff rule); training keeps the XLA path.
Off by default until a GPU run measures it ($PAM_JAX_FUSED=on or chain turns it on; the selector
reads it when it traces). On CPU the kernels run interpreted, which exists for the tests.
"""
from __future__ import annotations

import functools
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pam_jax.models import geometry
from pam_jax.models.layers import pad_heads_in, pad_heads_out, rotary_angles, round_up

FUSED_ENV = "PAM_JAX_FUSED"          # "off" (default), "on" or "chain" (see module docstring)
MODES = ("off", "on", "chain")
ROWS_ENV = "PAM_JAX_FUSED_ROWS"      # rows per program (a power of two >= 16), for benchmarks
WARPS_ENV = "PAM_JAX_FUSED_WARPS"    # Triton warps per program, for benchmarks
FFN_BLOCK = 128                      # hidden units per program of the feed-forward kernel
MAX_ROWS = 32                        # default row block for many candidates (logits: rows x tokens)
LN_EPS = 1e-6                        # nnx.LayerNorm's default, as AdaLN uses it


def mode() -> str:
    """$PAM_JAX_FUSED: "off", "on" or "chain"; "off" inside geometry.portable() (exported graphs
    hold no Triton kernel)."""
    chosen = os.environ.get(FUSED_ENV, "off")
    if chosen not in MODES:
        raise ValueError(f"${FUSED_ENV}={chosen!r}: expected one of {', '.join(MODES)}")
    return "off" if geometry.portable_active() else chosen


def enabled() -> bool:
    return mode() != "off"


def _pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def supports(num_tokens: int) -> bool:
    """The point tokens are one Triton block: their count must be a power of two."""
    return num_tokens >= 16 and num_tokens == _pow2(num_tokens)


class FusedLayer(NamedTuple):
    """One denoiser layer's weights in the fused layout (all zero-padded; `*s` = the same
    projection with each rotated pair's columns swapped, for the folded rotary)."""

    cross_q: jax.Array        # (Dp, H*dp)
    cross_qs: jax.Array
    cross_qb: jax.Array       # (H*dp,)
    cross_qsb: jax.Array
    cross_out: jax.Array      # (H*dp, Dp)
    cross_outb: jax.Array     # (Dp,)
    self_q: jax.Array
    self_qs: jax.Array
    self_k: jax.Array
    self_ks: jax.Array
    self_v: jax.Array
    self_qb: jax.Array
    self_qsb: jax.Array
    self_kb: jax.Array
    self_ksb: jax.Array
    self_vb: jax.Array
    self_out: jax.Array
    self_outb: jax.Array
    fc1: jax.Array            # (Dp, Hp)
    fc1b: jax.Array           # (Hp,)
    fc2: jax.Array            # (Hp, Dp)
    fc2b: jax.Array           # (Dp,)


class FusedWeights(NamedTuple):
    """`Context.weights` of a fused Context (the conditioning table is then padded too:
    :func:`pad_conditioning`)."""

    layers: tuple


def dims(width: int, heads: int) -> tuple[int, int]:
    """(Dp, dp): the padded model and head widths."""
    return _pow2(width), _pow2(width // heads)


def rotary_pairs(d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a head of width d (:func:`~pam_jax.models.layers.apply_rotary`'s layout): each column's
    partner (the other member of its rotated pair; itself past the 6F rotated columns), the index
    of its angle (3F = a zero angle past them) and the sign of its sine term."""
    f = d // 6
    j = np.arange(d)
    axis, half, i = j // (2 * f), (j // f) % 2, j % f
    rotated = j < 6 * f
    partner = np.where(rotated, axis * 2 * f + (1 - half) * f + i, j)
    angle = np.where(rotated, axis * f + i, 3 * f)
    sign = np.where(rotated, np.where(half == 0, -1.0, 1.0), 0.0)
    return partner, angle, sign.astype(np.float32)


def prepare(den) -> FusedWeights:
    """The denoiser's layers in the fused layout (once per parameters, outside the loops)."""
    width, heads = den.out_ln.mod.in_features, den.heads
    d = width // heads
    dpad, hpad = dims(width, heads)
    partner, _, _ = rotary_pairs(d)
    out = []
    def heads_in(m, columns=None):
        return pad_heads_in(m.proj.kernel[...], m.proj.bias[...], heads, dpad, hpad, columns)

    def heads_out(linear):
        return pad_heads_out(linear.kernel[...], linear.bias[...], heads, hpad, dpad)

    for layer in den.layers:
        cq, cqs = heads_in(layer.cross_q), heads_in(layer.cross_q, partner)
        sq, sqs = heads_in(layer.self_q), heads_in(layer.self_q, partner)
        sk, sks = heads_in(layer.self_k), heads_in(layer.self_k, partner)
        sv, co, so = heads_in(layer.self_v), heads_out(layer.cross_out), heads_out(layer.self_out)
        fc1, fc2 = layer.ffn.fc1, layer.ffn.fc2
        hidden = fc1.kernel.shape[1]
        hp = round_up(hidden, FFN_BLOCK)
        out.append(FusedLayer(
            cq[0], cqs[0], cq[1], cqs[1], co[0], co[1],
            sq[0], sqs[0], sk[0], sks[0], sv[0], sq[1], sqs[1], sk[1], sks[1], sv[1], so[0], so[1],
            jnp.pad(fc1.kernel[...], ((0, dpad - width), (0, hp - hidden))), jnp.pad(fc1.bias[...], (0, hp - hidden)),
            jnp.pad(fc2.kernel[...], ((0, hp - hidden), (0, dpad - width))), jnp.pad(fc2.bias[...], (0, dpad - width)),
        ))
    return FusedWeights(tuple(out))


def pad_conditioning(cond: jax.Array, width: int) -> jax.Array:
    """(..., 3n*D) AdaLN modulations (:meth:`ActionDenoiser.conditioning`) -> (..., 3n*Dp): each
    shift / scale / gate zero-padded to Dp, so a kernel reads one as block k of width Dp."""
    dpad = _pow2(width)
    c = cond.reshape(*cond.shape[:-1], -1, width)
    return jnp.pad(c, [(0, 0)] * (c.ndim - 1) + [(0, dpad - width)]).reshape(*cond.shape[:-1], -1)


def unpad_conditioning(cond: jax.Array, width: int) -> jax.Array:
    dpad = _pow2(width)
    c = cond.reshape(*cond.shape[:-1], -1, dpad)[..., :width]
    return c.reshape(*cond.shape[:-1], -1)


def _power_of_two_env(name: str, default: int, least: int) -> int:
    chosen = os.environ.get(name)
    if not chosen:
        return default
    if not chosen.isdigit() or int(chosen) < least or _pow2(int(chosen)) != int(chosen):
        raise ValueError(f"${name}={chosen!r}: expected a power of two >= {least}")
    return int(chosen)


def _row_block(rows: int) -> int:
    """Rows per program: enough for `rows` candidates, at least 16 (Triton's smallest matmul),
    at most MAX_ROWS (each program holds rows x tokens attention logits)."""
    return _power_of_two_env(ROWS_ENV, min(MAX_ROWS, max(16, _pow2(rows))), 16)


def _backend() -> dict:
    return geometry._pallas_backend(_power_of_two_env(WARPS_ENV, 4, 1))


# ---------------------------------------------------------------------------------------------
# kernels: refs hold one program's blocks; every matmul accumulates in float32

def _dot(a, b):
    return jnp.dot(a.astype(b.dtype), b, preferred_element_type=jnp.float32)


def _modulated(x, shift, scale, width: int):
    """AdaLN on a (rows, Dp) block whose columns past `width` are padding: LayerNorm over the
    real columns, then * (1 + scale) + shift (zero in the padding)."""
    real = jax.lax.broadcasted_iota(jnp.int32, x.shape, 1) < width
    x = jnp.where(real, x, 0.0)
    centred = jnp.where(real, x - jnp.sum(x, axis=1, keepdims=True) / width, 0.0)
    var = jnp.sum(centred * centred, axis=1, keepdims=True) / width
    return centred * jax.lax.rsqrt(var + LN_EPS) * (1.0 + scale) + shift


def _softmax_rows(logits):
    e = jnp.exp(logits - jnp.max(logits, axis=1, keepdims=True))
    return e / jnp.sum(e, axis=1, keepdims=True)


def _cross_kernel(hidden, shift_ref, scale_ref, cos_ref, sin_ref, wq_ref, wqs_ref, bq_ref, bqs_ref,
                  k_ref, v_ref, wo_ref, o_ref, *, points: int, width: int, root: float):
    shift, scale = shift_ref[0].astype(jnp.float32), scale_ref[0].astype(jnp.float32)
    keys, values = k_ref[0, 0], v_ref[0, 0]           # (dp, S) each
    for a in range(points):
        x = _modulated(hidden(a), shift, scale, width)
        q = _dot(x, wq_ref[...]) + bq_ref[...].astype(jnp.float32)
        qs = _dot(x, wqs_ref[...]) + bqs_ref[...].astype(jnp.float32)
        q = q * cos_ref[a, 0] + qs * sin_ref[a, 0]
        p = _softmax_rows(_dot(q, keys) / root)       # (rows, S)
        y = jax.lax.dot_general(p.astype(values.dtype), values, (((1,), (1,)), ((), ())),
                                preferred_element_type=jnp.float32)
        o_ref[0, a, 0] = _dot(y, wo_ref[...]).astype(o_ref.dtype)


def _self_kernel(hidden, shift_ref, scale_ref, cos_ref, sin_ref, wq_ref, wqs_ref, wk_ref, wks_ref, wv_ref,
                 bq_ref, bqs_ref, bk_ref, bks_ref, bv_ref, wo_ref, o_ref, *, points: int, width: int,
                 root: float):
    shift, scale = shift_ref[0].astype(jnp.float32), scale_ref[0].astype(jnp.float32)
    b = lambda ref: ref[...].astype(jnp.float32)  # noqa: E731
    qs, ks, vs = [], [], []
    for a in range(points):
        x = _modulated(hidden(a), shift, scale, width)
        cos, sin = cos_ref[a, 0], sin_ref[a, 0]
        qs.append((_dot(x, wq_ref[...]) + b(bq_ref)) * cos + (_dot(x, wqs_ref[...]) + b(bqs_ref)) * sin)
        ks.append((_dot(x, wk_ref[...]) + b(bk_ref)) * cos + (_dot(x, wks_ref[...]) + b(bks_ref)) * sin)
        vs.append(_dot(x, wv_ref[...]) + b(bv_ref))
    for a in range(points):   # softmax over the candidate's A points, elementwise between slabs
        logits = [jnp.sum(qs[a] * k, axis=1, keepdims=True) / root for k in ks]
        top = logits[0]
        for z in logits[1:]:
            top = jnp.maximum(top, z)
        e = [jnp.exp(z - top) for z in logits]
        total, y = e[0], e[0] * vs[0]
        for ej, vj in zip(e[1:], vs[1:]):
            total, y = total + ej, y + ej * vj
        o_ref[0, a, 0] = _dot(y / total, wo_ref[...]).astype(o_ref.dtype)


def _ffn_kernel(hidden, shift_ref, scale_ref, w1_ref, b1_ref, w2_ref, o_ref, *, points: int, width: int):
    shift, scale = shift_ref[0].astype(jnp.float32), scale_ref[0].astype(jnp.float32)
    for a in range(points):
        x = _modulated(hidden(a), shift, scale, width)
        u = _dot(x, w1_ref[...]) + b1_ref[...].astype(jnp.float32)
        g = 0.5 * u * (1.0 + jnp.tanh(0.7978845608028654 * (u + 0.044715 * u * u * u)))   # GELU (tanh), as nnx.gelu
        o_ref[0, a, 0] = _dot(g, w2_ref[...]).astype(o_ref.dtype)


# ---------------------------------------------------------------------------------------------
# the forward pass

def _call(body, h, cond, chunk: int, operands, specs, groups: int, rows: int, pending=None):
    """Run kernel `body(hidden, shift_ref, scale_ref, *operand_refs, out_ref)` over the grid
    (clouds, row blocks, groups) -> shares (groups, A, B, R, Dp). `cond` (Bc, Rc, 3n*Dp) with Bc
    in {1, B}, Rc in {1, R}; `chunk` = which AdaLN (its shift is block 3*chunk, its scale
    3*chunk + 1). `hidden(a)` gives slab a of the block's hidden state in float32: read from `h`,
    or, with `pending` = (shares, chunk, bias) of the previous sub-layer, `h` plus its gated
    residual, also written out -> (shares, new hidden state)."""
    from jax.experimental import pallas as pl

    a, b, r, dpad = h.shape
    bc, rc = cond.shape[:2]
    crow = rows if rc > 1 else 1
    cmap = lambda k: (lambda i, j, g: (i if bc > 1 else 0, j if rc > 1 else 0, k))  # noqa: E731
    slab = pl.BlockSpec((a, 1, rows, dpad), lambda i, j, g: (0, i, j, 0))
    shares_spec = pl.BlockSpec((1, a, 1, rows, dpad), lambda i, j, g: (g, 0, i, j, 0))
    shares_shape = jax.ShapeDtypeStruct((groups, a, b, r, dpad), h.dtype)
    mods = [pl.BlockSpec((1, crow, dpad), cmap(3 * chunk)), pl.BlockSpec((1, crow, dpad), cmap(3 * chunk + 1))]
    if pending is None:
        def kernel(h_ref, *refs):
            body(lambda i: h_ref[i, 0].astype(jnp.float32), *refs)

        return pl.pallas_call(kernel, grid=(b, r // rows, groups), in_specs=[slab] + mods + specs,
                              out_specs=shares_spec, out_shape=shares_shape, **_backend(),
                              )(h, cond, cond, *operands)
    prev, prev_chunk, prev_bias = pending
    before = prev.shape[0]

    def kernel(h_ref, prev_ref, gate_ref, bias_ref, *refs):
        *refs, out_ref, new_ref = refs

        def hidden(i):
            total = prev_ref[0, i, 0].astype(jnp.float32)
            for k in range(1, before):
                total = total + prev_ref[k, i, 0].astype(jnp.float32)
            x = h_ref[i, 0].astype(jnp.float32) + gate_ref[0].astype(jnp.float32) * (
                total + bias_ref[...].astype(jnp.float32))
            new_ref[i, 0] = x.astype(new_ref.dtype)   # the same values from every program of the block
            return x

        body(hidden, *refs, out_ref)

    in_specs = [slab, pl.BlockSpec((before, a, 1, rows, dpad), lambda i, j, g: (0, 0, i, j, 0)),
                pl.BlockSpec((1, crow, dpad), cmap(3 * prev_chunk + 2)),
                pl.BlockSpec((dpad,), lambda i, j, g: (0,))] + mods + specs
    return pl.pallas_call(kernel, grid=(b, r // rows, groups), in_specs=in_specs,
                          out_specs=[shares_spec, slab], out_shape=[shares_shape, jax.ShapeDtypeStruct(h.shape, h.dtype)],
                          **_backend())(h, prev, cond, prev_bias, cond, cond, *operands)


def _gate(cond, chunk: int, dpad: int):
    """The gate of AdaLN `chunk`, broadcastable against (A, B, R, Dp)."""
    return cond[None, :, :, (3 * chunk + 2) * dpad: (3 * chunk + 3) * dpad]


def features(den, x: jax.Array, t: jax.Array, ctx) -> tuple[jax.Array, jax.Array]:
    """:meth:`ActionDenoiser.features` with a fused Context (`ctx.weights` a FusedWeights, the
    conditioning table padded): -> hidden states (B, N, A, D) and the (unpadded) conditioning."""
    from jax.experimental import pallas as pl

    b, n, a, _ = x.shape
    width, heads = den.out_ln.mod.in_features, den.heads
    d = width // heads
    dpad, hpad = dims(width, heads)
    dtype = den.in_proj.kernel.dtype
    if ctx.cond is None:
        cond = pad_conditioning(den.timestep_conditioning(t, x.shape, None), width)
    else:
        cond = den.timestep_conditioning(t, x.shape, ctx.cond)
    cond = cond.astype(dtype)
    rows = _row_block(n)
    r = round_up(n, rows)
    # (Bc, Rc, M): one row for every candidate (a DDIM step), or one per candidate (Monte Carlo)
    cond3 = cond[None, None] if cond.ndim == 1 else jnp.pad(jnp.broadcast_to(cond, (b, n, cond.shape[-1])),
                                                            ((0, 0), (0, r - n), (0, 0)))
    to_slabs = lambda y: jnp.pad(jnp.moveaxis(y, 2, 0), ((0, 0), (0, 0), (0, r - n), (0, 0)))  # noqa: E731
    h = den.in_proj(x.astype(dtype)) + den.point_embed[...]
    h = to_slabs(jnp.pad(h, ((0, 0), (0, 0), (0, 0), (0, dpad - width))))      # (A, B, R, Dp)
    _, angle, sign = rotary_pairs(d)
    ang = rotary_angles(x, d, den.max_freq)                                     # (B, N, A, 3F)
    ang = jnp.pad(ang, ((0, 0), (0, 0), (0, 0), (0, 1)))[..., angle]           # (B, N, A, d)
    pad_head = ((0, 0), (0, 0), (0, 0), (0, hpad - d))
    cos = to_slabs(jnp.pad(jnp.cos(ang), pad_head, constant_values=1.0))
    sin = to_slabs(jnp.pad(jnp.sin(ang) * sign, pad_head))
    root = math.sqrt(d)
    slab = pl.BlockSpec((a, 1, rows, hpad), lambda i, j, g: (0, i, j, 0))
    col = pl.BlockSpec((dpad, hpad), lambda i, j, g: (0, g))
    bias = pl.BlockSpec((hpad,), lambda i, j, g: (g,))
    row = pl.BlockSpec((hpad, dpad), lambda i, j, g: (g, 0))
    sublayers = []   # (kernel body, AdaLN chunk, operands, their specs, groups, output bias)
    for li, (w, (keys, values)) in enumerate(zip(ctx.weights.layers, ctx.kv)):
        kv = pl.BlockSpec((1, 1, hpad, keys.shape[-1]), lambda i, j, g: (i, g, 0, 0))
        sublayers += [
            (functools.partial(_cross_kernel, points=a, width=width, root=root), 3 * li,
             [cos, sin, w.cross_q, w.cross_qs, w.cross_qb, w.cross_qsb, keys, values, w.cross_out],
             [slab, slab, col, col, bias, bias, kv, kv, row], heads, w.cross_outb),
            (functools.partial(_self_kernel, points=a, width=width, root=root), 3 * li + 1,
             [cos, sin, w.self_q, w.self_qs, w.self_k, w.self_ks, w.self_v,
              w.self_qb, w.self_qsb, w.self_kb, w.self_ksb, w.self_vb, w.self_out],
             [slab, slab, col, col, col, col, col, bias, bias, bias, bias, bias, row], heads, w.self_outb),
            (functools.partial(_ffn_kernel, points=a, width=width), 3 * li + 2, [w.fc1, w.fc1b, w.fc2],
             [pl.BlockSpec((dpad, FFN_BLOCK), lambda i, j, g: (0, g)),
              pl.BlockSpec((FFN_BLOCK,), lambda i, j, g: (g,)),
              pl.BlockSpec((FFN_BLOCK, dpad), lambda i, j, g: (g, 0))], w.fc1.shape[1] // FFN_BLOCK, w.fc2b),
        ]
    chain = mode() == "chain"
    pending = None
    for body, chunk, operands, specs, groups, out_bias in sublayers:
        if chain and pending is not None:
            shares, h = _call(body, h, cond3, chunk, operands, specs, groups, rows, pending)
        else:
            shares = _call(body, h, cond3, chunk, operands, specs, groups, rows)
        pending = (shares, chunk, out_bias)
        if not chain:
            h = h + _gate(cond3, chunk, dpad) * (jnp.sum(shares, axis=0) + out_bias)
    if chain:
        h = h + _gate(cond3, pending[1], dpad) * (jnp.sum(pending[0], axis=0) + pending[2])
    h = jnp.moveaxis(h, 0, 2)[:, :n, :, :width]
    return h, unpad_conditioning(cond, width)
