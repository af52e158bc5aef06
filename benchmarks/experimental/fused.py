"""Forms of the selector never timed on a GPU, kept outside the package: the fused Pallas
denoiser (runtime.fused "on" or "chain", its knobs runtime.fused_rows / fused_warps) and the two
networks stacked (runtime.stack_models). Importing this module registers its selector builder
with :data:`pam_jax.select.EXPERIMENTAL`; `make_selector` then routes a SelectConfig whose
runtime asks for one of these forms here. The model knows nothing of them: :class:`FusedPolicy`
wraps a DiffusionPolicy, replacing its `prepare` and `denoise`.

The fused denoiser: the forward pass for sampling on a GPU with one Pallas (Triton) kernel per
sub-layer. Why: in the DDIM loop each step is a few small matmuls (16 action tokens at K = 8),
and XLA runs about 44 kernels per step for them compiled for an H200 (57 traced on one for an
older layout; BUILD_NOTES), each doing almost nothing.
Here each sub-layer is one kernel that does all of its work per (cloud, block of rows, head):

  cross  AdaLN (LayerNorm + shift/scale) -> this head's query with 3D rotary -> attention to the
         point tokens -> this head's share of the output projection;
  self   AdaLN -> this head's q, k, v with rotary -> attention among a candidate's A points ->
         its share of the output projection;
  ffn    AdaLN -> one block of the hidden units (matmul, GELU) -> its share of the second matmul.

Each kernel writes its shares side by side; one XLA fusion sums them and adds the gated residual.
So a layer is six kernels (three Pallas, three XLA) instead of about 28. With "chain"
(runtime.fused="chain") each kernel does the previous sub-layer's residual itself (sums its
shares, adds the gated residual and writes the new hidden state, identically in every program
of a block): three kernels per layer. The chain form also folds in the work around the layers:
the first kernel computes the hidden state from the noisy actions (input projection and point
embedding), every attention kernel computes its rotary cos / sin from the actions' coordinates,
and one last kernel adds the last residual and applies the output AdaLN and projection, so a
denoiser call is 3L + 1 kernels plus the slab layout of the actions and the conditioning row.
The selector's DDIM loop (:func:`sample`) keeps the actions in the slab layout from step to
step, lets the kernels read the step's conditioning row by the loop counter, and applies the
DDIM update in the output kernel: a step is 3L + 1 kernels and the counter's increment.

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
Off by default until a GPU run measures it. On CPU the kernels run interpreted, which exists for
the tests. XLA cannot partition a Pallas call: these forms do not run under a mesh.

Stacked networks: in implicit selection, the reference and the DPO policy are encoded and scored
as one batched computation over a stacked copy of both (made by prepare), instead of one after
the other: half the kernel launches for those parts on a GPU (on CPU it saves nothing).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pam_jax import diffusion
from pam_jax import select as select_lib
from pam_jax.config import DiffusionConfig
from pam_jax.models import geometry, kernels
from pam_jax.models.denoiser import Context
from pam_jax.models.layers import (
    few_inputs,
    layer_norm,
    pad_blocks,
    pad_heads_in,
    pad_heads_out,
    rotary_pairs,
    rotary_rotation,
    rotary_table,
    round_up,
)
from pam_jax.models.policy import cast_params, noise_errors, normalize, unnormalize
from pam_jax.normalize import NormStats

MODES = ("off", "on", "chain")       # runtime.fused (see module docstring)
FFN_BLOCK = 128                      # hidden units per program of the feed-forward kernel
EPS_WIDTH = 16                       # the output projection's 3 columns, padded for a Triton matmul
MAX_ROWS = 32                        # default row block for many candidates (logits: rows x tokens)


def mode() -> str:
    """runtime.fused of the graph being traced (:func:`pam_jax.models.kernels.active`): "off",
    "on" or "chain"; "off" inside geometry.portable() (exported graphs hold no Triton kernel)."""
    chosen = kernels.active().fused
    if chosen not in MODES:
        raise ValueError(f"runtime.fused={chosen!r}: expected one of {', '.join(MODES)}")
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


class FusedIO(NamedTuple):
    """What the "chain" form's kernels read around the layers (the "on" form reads the first
    three): the input projection (its rows the x, y, z weights and a zero row), the point embedding, the output projection (its columns
    padded to EPS_WIDTH), and the rotary frequencies per head column (row k: the column's
    frequency if it rotates with axis k, else 0) and the sign of its sine term."""

    w_in: jax.Array      # (4, Dp)
    b_in: jax.Array      # (Dp,)
    embed: jax.Array     # (A, Dp)
    w_out: jax.Array     # (Dp, EPS_WIDTH)
    b_out: jax.Array     # (EPS_WIDTH,)
    freqs: jax.Array     # (4, dp) float32
    sign: jax.Array      # (dp,) float32


class FusedWeights(NamedTuple):
    """`Context.weights` of a fused Context (the conditioning table is then padded too:
    :func:`pad_conditioning`)."""

    layers: tuple
    io: FusedIO


def dims(width: int, heads: int) -> tuple[int, int]:
    """(Dp, dp): the padded model and head widths."""
    return _pow2(width), _pow2(width // heads)


def prepare(den) -> FusedWeights:
    """The denoiser's layers in the fused layout (once per parameters, outside the loops)."""
    width, heads = den.out_ln.mod.in_features, den.heads
    d = width // heads
    dpad, hpad = dims(width, heads)
    partner = rotary_pairs(d)[0]
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
    freq, sign = rotary_table(d, den.max_freq, hpad)
    wide = (0, dpad - width)
    io = FusedIO(jnp.pad(den.in_proj.kernel[...], ((0, 1), wide)), jnp.pad(den.in_proj.bias[...], wide),
                 jnp.pad(den.point_embed[...], ((0, 0), wide)),
                 jnp.pad(den.out.kernel[...], (wide, (0, EPS_WIDTH - 3))), jnp.pad(den.out.bias[...], (0, EPS_WIDTH - 3)),
                 jnp.asarray(np.pad(freq, ((0, 1), (0, 0)))), jnp.asarray(sign))
    return FusedWeights(tuple(out), io)


def pad_conditioning(cond: jax.Array, width: int) -> jax.Array:
    """(..., 3n*D) AdaLN modulations (:meth:`ActionDenoiser.conditioning`) -> (..., 3n*Dp): each
    shift / scale / gate zero-padded to Dp, so a kernel reads one as block k of width Dp."""
    return pad_blocks(cond, width, _pow2(width))


def unpad_conditioning(cond: jax.Array, width: int) -> jax.Array:
    dpad = _pow2(width)
    c = cond.reshape(*cond.shape[:-1], -1, dpad)[..., :width]
    return c.reshape(*cond.shape[:-1], -1)


def _row_block(rows: int) -> int:
    """Rows per program: runtime.fused_rows, else enough for `rows` candidates, at least 16
    (Triton's smallest matmul), at most MAX_ROWS (each program holds rows x tokens attention
    logits)."""
    return kernels.active().fused_rows or min(MAX_ROWS, max(16, _pow2(rows)))


def _backend() -> dict:
    return geometry._pallas_backend(kernels.active().fused_warps)


# ---------------------------------------------------------------------------------------------
# kernels: refs hold one program's blocks; every matmul accumulates in float32

def _dot(a, b):
    return jnp.dot(a.astype(b.dtype), b, preferred_element_type=jnp.float32)


def _modulated(x, shift, scale, width: int):
    """AdaLN on a (rows, Dp) block whose columns past `width` are zero padding: LayerNorm over the
    real columns (:func:`~pam_jax.models.layers.layer_norm`, as the XLA path's AdaLN), then
    * (1 + scale) + shift (zero in the padding)."""
    return layer_norm(x, width) * (1.0 + scale) + shift


def _softmax_rows(logits):
    e = jnp.exp(logits - jnp.max(logits, axis=1, keepdims=True))
    return e / jnp.sum(e, axis=1, keepdims=True)


def _cross_kernel(hidden, rot, shift, scale, wq_ref, wqs_ref, bq_ref, bqs_ref, k_ref, v_ref, wo_ref,
                  o_ref, *, points: int, width: int, root: float):
    keys, values = k_ref[0, 0], v_ref[0, 0]           # (dp, S) each
    for a in range(points):
        x = _modulated(hidden(a), shift, scale, width)
        cos, sin = rot(a)
        q = _dot(x, wq_ref[...]) + bq_ref[...].astype(jnp.float32)
        qs = _dot(x, wqs_ref[...]) + bqs_ref[...].astype(jnp.float32)
        q = q * cos + qs * sin
        p = _softmax_rows(_dot(q, keys) / root)       # (rows, S)
        y = jax.lax.dot_general(p.astype(values.dtype), values, (((1,), (1,)), ((), ())),
                                preferred_element_type=jnp.float32)
        o_ref[0, a, 0] = _dot(y, wo_ref[...]).astype(o_ref.dtype)


def _self_kernel(hidden, rot, shift, scale, wq_ref, wqs_ref, wk_ref, wks_ref, wv_ref, bq_ref, bqs_ref,
                 bk_ref, bks_ref, bv_ref, wo_ref, o_ref, *, points: int, width: int, root: float):
    b = lambda ref: ref[...].astype(jnp.float32)  # noqa: E731
    qs, ks, vs = [], [], []
    for a in range(points):
        x = _modulated(hidden(a), shift, scale, width)
        cos, sin = rot(a)
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


def _ffn_kernel(hidden, rot, shift, scale, w1_ref, b1_ref, w2_ref, o_ref, *, points: int, width: int):
    for a in range(points):
        x = _modulated(hidden(a), shift, scale, width)
        u = _dot(x, w1_ref[...]) + b1_ref[...].astype(jnp.float32)
        g = 0.5 * u * (1.0 + jnp.tanh(0.7978845608028654 * (u + 0.044715 * u * u * u)))   # GELU (tanh), as nnx.gelu
        o_ref[0, a, 0] = _dot(g, w2_ref[...]).astype(o_ref.dtype)


def _out_kernel(hidden, rot, shift, scale, w_ref, b_ref, o_ref, *, points: int, width: int):
    """The output AdaLN and projection: epsilon in the first 3 of EPS_WIDTH columns."""
    for a in range(points):
        y = _modulated(hidden(a), shift, scale, width)
        o_ref[0, a, 0] = (_dot(y, w_ref[...]) + b_ref[...].astype(jnp.float32)).astype(o_ref.dtype)


def _step_kernel(hidden, rot, shift, scale, w_ref, b_ref, x_ref, z_ref, c_ref, step_ref, o_ref, *, points: int,
                 width: int, noisy: bool, clip: float | None):
    """The output AdaLN and projection, then the DDIM update of the block's actions (slabs
    (A, 4, 1, rows): x, y, z and a zero row) with this step's coefficients (row `step` of c_ref:
    sqrt(1 - abar_t), sqrt(abar_t), sqrt(abar_prev), the direction coefficient, std) and noise,
    as diffusion._ddim_update computes it."""
    f32 = jnp.float32
    s = step_ref[0]
    sqrt_beta, sqrt_abar, sqrt_abar_prev, direction, std = (c_ref[s, j] for j in range(5))
    for a in range(points):
        y = _modulated(hidden(a), shift, scale, width)
        eps = (_dot(y, w_ref[...]) + b_ref[...].astype(f32)).astype(w_ref.dtype).astype(f32)   # (rows, EPS_WIDTH)
        column = jax.lax.broadcasted_iota(jnp.int32, eps.shape, 1)
        for k in range(3):
            e = jnp.sum(jnp.where(column == k, eps, 0.0), axis=1)
            x = x_ref[a, k, 0]
            x0 = (x - sqrt_beta * e) / sqrt_abar
            if clip is not None:
                x0 = jnp.clip(x0, -clip, clip)
            new = sqrt_abar_prev * x0 + direction * e
            if noisy:
                new = new + std * z_ref[s, a, k, 0]
            o_ref[a, k, 0] = new
        o_ref[a, 3, 0] = jnp.zeros_like(x_ref[a, 3, 0])


# ---------------------------------------------------------------------------------------------
# the forward pass

def _whole(arr):
    """The BlockSpec of an array every program reads whole."""
    from jax.experimental import pallas as pl

    return pl.BlockSpec(arr.shape, lambda i, j, g: (0,) * arr.ndim)


def _positions(points: int, rows: int):
    """The BlockSpec of a row block of the action slabs (A, 4, B, R)."""
    from jax.experimental import pallas as pl

    return pl.BlockSpec((points, 4, 1, rows), lambda i, j, g: (0, 0, i, j))


def _call(body, source, cond, chunk: int, operands, specs, groups: int, rows: int, *, pending=None,
          rotary=None, out_width: int | None = None, out=None, alias: int | None = None):
    """Run kernel `body(hidden, rot, shift, scale, *operand_refs, out_ref)` over the grid
    (clouds, row blocks, groups) -> outputs (groups, A, B, R, out_width or Dp) ("shares"), or
    with `out` = (ShapeDtypeStruct, BlockSpec) that output instead.

    `hidden(a)` gives slab a of the block's hidden state in float32, from `source`:
      ("hidden", h)            h (A, B, R, Dp);
      ("actions", xs, io)      computed from the noisy actions xs (A, 4, B, R) (x, y, z, 0) with
                               the input projection and point embedding of `io` (FusedIO), and
                               written out (-> (shares, hidden state));
    with `pending` = (shares, chunk, bias) of the previous sub-layer, h plus its gated residual,
    written out too unless `out_width` or `out` is given (the output kernels only read it).
    `rot(a)` gives (cos, sin') (rows, dp): from `rotary` = ("tables", cos, sin) slabs
    (A, B, R, dp), or ("positions", xs, freqs, sign), computed in the kernel from the actions.
    The AdaLN modulations (`chunk`: shift block 3*chunk, scale 3*chunk + 1, gate 3*chunk + 2,
    each Dp wide) come from `cond`: ("rows", c) with c (Bc, Rc, 3n*Dp), Bc in {1, B}, Rc in
    {1, R}; or ("table", table, step): row step[0] of the (S, 3n*Dp) table, read in the kernel
    (a DDIM loop passes its counter, so no XLA op slices the row). `alias`: the index of an
    operand the (first) output overwrites in place (a loop's carry: no copy per iteration)."""
    from jax.experimental import pallas as pl

    kind = source[0]
    if kind == "hidden":
        h = source[1]
        a, b, r, dpad = h.shape
        dtype = h.dtype
    else:
        xs, io = source[1], source[2]
        a, _, b, r = xs.shape
        dpad, dtype = io.w_in.shape[1], io.w_in.dtype
    writes = kind == "actions" or (pending is not None and out_width is None and out is None)
    slab = pl.BlockSpec((a, 1, rows, dpad), lambda i, j, g: (0, i, j, 0))
    position = _positions(a, rows)
    specs_in, args = [], []
    if kind == "hidden":
        specs_in, args = [slab], [h]
    else:
        specs_in = [position, _whole(io.w_in), _whole(io.b_in), _whole(io.embed)]
        args = [xs, io.w_in, io.b_in, io.embed]
    if pending is not None:
        prev, prev_chunk, prev_bias = pending
        specs_in += [pl.BlockSpec((prev.shape[0], a, 1, rows, dpad), lambda i, j, g: (0, 0, i, j, 0)), _whole(prev_bias)]
        args += [prev, prev_bias]
    if cond[0] == "rows":   # one block per modulation: (gate of the pending sub-layer,) shift, scale
        c = cond[1]
        bc, rc = c.shape[:2]
        crow = rows if rc > 1 else 1
        cmap = lambda k: (lambda i, j, g: (i if bc > 1 else 0, j if rc > 1 else 0, k))  # noqa: E731
        blocks = ([3 * pending[1] + 2] if pending is not None else []) + [3 * chunk, 3 * chunk + 1]
        specs_in += [pl.BlockSpec((1, crow, dpad), cmap(k)) for k in blocks]
        args += [c] * len(blocks)
        n_cond = len(blocks)
    else:                   # the whole table and the step index
        specs_in += [_whole(cond[1]), _whole(cond[2])]
        args += [cond[1], cond[2]]
        n_cond = 2
    n_rot = 0
    if rotary is not None and rotary[0] == "tables":
        head = pl.BlockSpec((a, 1, rows, rotary[1].shape[-1]), lambda i, j, g: (0, i, j, 0))
        specs_in, args, n_rot = specs_in + [head, head], args + list(rotary[1:]), 2
    elif rotary is not None:
        specs_in += [position, _whole(rotary[2]), _whole(rotary[3])]
        args, n_rot = args + list(rotary[1:]), 3
    specs_in += list(specs)
    if out is not None:
        out_shape, out_specs = [out[0]], [out[1]]
    else:
        width = out_width or dpad
        out_specs = [pl.BlockSpec((1, a, 1, rows, width), lambda i, j, g: (g, 0, i, j, 0))]
        out_shape = [jax.ShapeDtypeStruct((groups, a, b, r, width), dtype)]
    if writes:
        out_specs.append(slab)
        out_shape.append(jax.ShapeDtypeStruct((a, b, r, dpad), dtype))
    f32 = jnp.float32

    def kernel(*refs):
        refs = list(refs)

        def take(k):
            got = refs[:k]
            del refs[:k]
            return got

        inputs = take(1 if kind == "hidden" else 4)
        prev_ref, bias_ref = take(2) if pending is not None else (None, None)
        cond_refs = take(n_cond)
        rot_refs = take(n_rot)
        operand_refs = take(len(operands))
        out_ref, new_ref = refs[0], (refs[1] if writes else None)

        if cond[0] == "rows":
            mods = [ref[0].astype(f32) for ref in cond_refs]
            gate = mods.pop(0) if pending is not None else None
            shift, scale = mods
        else:
            table_ref, step = cond_refs[0], cond_refs[1][0]
            mod = lambda k: table_ref[step, pl.ds(k * dpad, dpad)].astype(f32)  # noqa: E731
            gate = mod(3 * pending[1] + 2) if pending is not None else None
            shift, scale = mod(3 * chunk), mod(3 * chunk + 1)

        def hidden(i):
            if kind == "hidden":
                x = inputs[0][i, 0].astype(f32)
            else:   # x @ W_in + b_in + the point embedding, as the plain path adds them
                x_ref, w_ref, b_ref, e_ref = inputs
                x = x_ref[i, 0, 0].astype(f32)[:, None] * w_ref[0].astype(f32)
                for k in (1, 2):
                    x = x + x_ref[i, k, 0].astype(f32)[:, None] * w_ref[k].astype(f32)
                x = x + b_ref[...].astype(f32) + e_ref[i].astype(f32)
            if prev_ref is not None:
                total = prev_ref[0, i, 0].astype(f32)
                for k in range(1, prev_ref.shape[0]):
                    total = total + prev_ref[k, i, 0].astype(f32)
                x = x + gate * (total + bias_ref[...].astype(f32))
            if new_ref is not None:
                new_ref[i, 0] = x.astype(new_ref.dtype)   # the same values from every program of the block
            return x

        def rot(i):
            if n_rot == 2:
                return rot_refs[0][i, 0], rot_refs[1][i, 0]
            x_ref, f_ref, s_ref = rot_refs
            return rotary_rotation(lambda k: x_ref[i, k, 0].astype(f32)[:, None], f_ref, s_ref[...])

        body(hidden, rot, shift, scale, *operand_refs, out_ref)

    aliases = {} if alias is None else {len(args) + alias: 0}
    outs = pl.pallas_call(kernel, grid=(b, r // rows, groups), in_specs=specs_in, out_specs=out_specs,
                          out_shape=out_shape, input_output_aliases=aliases, **_backend())(*args, *operands)
    return tuple(outs) if writes else outs[0]


def _gate(cond, chunk: int, dpad: int):
    """The gate of AdaLN `chunk`, broadcastable against (A, B, R, Dp)."""
    return cond[None, :, :, (3 * chunk + 2) * dpad: (3 * chunk + 3) * dpad]


def features(den, x: jax.Array, t: jax.Array, ctx) -> tuple[jax.Array, jax.Array]:
    """:meth:`ActionDenoiser.features` with a fused Context (`ctx.weights` a FusedWeights, the
    conditioning table padded): -> hidden states (B, N, A, D) and the (unpadded) conditioning."""
    return _forward(den, x, t, ctx, out=False)


def epsilon(den, x: jax.Array, t: jax.Array, ctx) -> jax.Array:
    """:meth:`ActionDenoiser.__call__` with a fused Context in the "chain" form: -> epsilon
    (B, N, A, 3), the output AdaLN and projection being one more kernel."""
    return _forward(den, x, t, ctx, out=True)


def _forward(den, x, t, ctx, *, out: bool):
    b, n, a, _ = x.shape
    width = den.out_ln.mod.in_features
    dpad = dims(width, den.heads)[0]
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
    io = ctx.weights.io
    chain = mode() == "chain"
    if chain:   # the kernels compute the input projection and the rotary tables from the actions
        xs = _action_slabs(x, r)
        source, rotary = ("actions", xs, io), ("positions", xs, io.freqs, io.sign)
    else:
        # the input projection and point embedding as prepared for the chain kernels: already Dp wide
        h = to_slabs(few_inputs(x.astype(dtype), io.w_in[:3], io.b_in) + io.embed)  # (A, B, R, Dp)
        cos, sin = rotary_rotation(lambda k: x[..., k:k + 1].astype(jnp.float32), io.freqs, io.sign)   # (B, N, A, dp)
        source, rotary = ("hidden", h), ("tables", to_slabs(cos), to_slabs(sin))
    h, pending = _layers(den, ctx, source, rotary, ("rows", cond3), rows, chain)
    if out:   # the last residual, the output AdaLN (chunk 3L) and projection: one more kernel
        eps = _call(functools.partial(_out_kernel, points=a, width=width), ("hidden", h), ("rows", cond3),
                    3 * len(ctx.weights.layers), *_out_operands(io), 1, rows, pending=pending, out_width=EPS_WIDTH)
        return jnp.moveaxis(eps[0, ..., :3], 0, 2)[:, :n]
    if chain:
        h = h + _gate(cond3, pending[1], dpad) * (jnp.sum(pending[0], axis=0) + pending[2])
    h = jnp.moveaxis(h, 0, 2)[:, :n, :, :width]
    return h, unpad_conditioning(cond, width)


def _action_slabs(x, r: int):
    """Actions (..., B, N, A, 3) -> slabs (..., A, 4, B, R) float32: x, y, z and a zero row, the
    candidates padded to R rows (the layout the chain kernels read)."""
    lead = x.ndim - 4
    y = jnp.moveaxis(x.astype(jnp.float32), (lead + 2, lead + 3), (lead, lead + 1))
    return jnp.pad(y, [(0, 0)] * (lead + 1) + [(0, 1), (0, 0), (0, r - x.shape[-3])])


def _out_operands(io) -> tuple:
    return [io.w_out, io.b_out], [_whole(io.w_out), _whole(io.b_out)]


def _layers(den, ctx, source, rotary, cond, rows: int, chain: bool):
    """The denoiser's layers, one kernel per sub-layer -> (hidden state slabs, the last
    sub-layer's pending residual in the chain form, else None)."""
    from jax.experimental import pallas as pl

    a = den.point_embed.shape[0]
    width, heads = den.out_ln.mod.in_features, den.heads
    dpad, hpad = dims(width, heads)
    root = math.sqrt(width // heads)
    col = pl.BlockSpec((dpad, hpad), lambda i, j, g: (0, g))
    bias = pl.BlockSpec((hpad,), lambda i, j, g: (g,))
    row = pl.BlockSpec((hpad, dpad), lambda i, j, g: (g, 0))
    sublayers = []   # (kernel body, AdaLN chunk, operands, their specs, groups, output bias, rotates)
    for li, (w, (keys, values)) in enumerate(zip(ctx.weights.layers, ctx.kv)):
        kv = pl.BlockSpec((1, 1, hpad, keys.shape[-1]), lambda i, j, g: (i, g, 0, 0))
        sublayers += [
            (functools.partial(_cross_kernel, points=a, width=width, root=root), 3 * li,
             [w.cross_q, w.cross_qs, w.cross_qb, w.cross_qsb, keys, values, w.cross_out],
             [col, col, bias, bias, kv, kv, row], heads, w.cross_outb, True),
            (functools.partial(_self_kernel, points=a, width=width, root=root), 3 * li + 1,
             [w.self_q, w.self_qs, w.self_k, w.self_ks, w.self_v,
              w.self_qb, w.self_qsb, w.self_kb, w.self_ksb, w.self_vb, w.self_out],
             [col, col, col, col, col, bias, bias, bias, bias, bias, row], heads, w.self_outb, True),
            (functools.partial(_ffn_kernel, points=a, width=width), 3 * li + 2, [w.fc1, w.fc1b, w.fc2],
             [pl.BlockSpec((dpad, FFN_BLOCK), lambda i, j, g: (0, g)),
              pl.BlockSpec((FFN_BLOCK,), lambda i, j, g: (g,)),
              pl.BlockSpec((FFN_BLOCK, dpad), lambda i, j, g: (g, 0))], w.fc1.shape[1] // FFN_BLOCK, w.fc2b, False),
        ]
    pending, h = None, source[1]
    for body, chunk, operands, specs, groups, out_bias, rotates in sublayers:
        rot = rotary if rotates else None
        if chain:   # each kernel adds the previous sub-layer's residual (the first makes the state)
            shares, h = _call(body, source if pending is None else ("hidden", h), cond, chunk, operands, specs,
                              groups, rows, pending=pending, rotary=rot)
            pending = (shares, chunk, out_bias)
        else:
            shares = _call(body, ("hidden", h), cond, chunk, operands, specs, groups, rows, rotary=rot)
            h = h + _gate(cond[1], chunk, dpad) * (jnp.sum(shares, axis=0) + out_bias)
    return h, pending


def sample(den, ctx, schedule, x_T: jax.Array, key, *, num_inference_steps: int, eta, clip_sample: bool,
           unroll: int = 1) -> jax.Array:
    """:func:`pam_jax.diffusion.sample` (DDIM) with the "chain" kernels, the loop kept in their
    layout: the actions stay slabs (A, 4, B, R) from step to step, the kernels read the step's
    conditioning row from the table by the loop counter, and the output kernel applies the DDIM
    update itself. A step is then 3L + 1 kernels and the counter's increment, nothing else.
    x_T (B, N, A, 3) -> x_0 (B, N, A, 3) float32; the same plan (timesteps, noise per step,
    coefficients) as the plain sampler, so the same result up to float rounding."""
    from jax.experimental import pallas as pl

    from pam_jax import diffusion

    b, n, a, _ = x_T.shape
    width = den.out_ln.mod.in_features
    dtype = den.in_proj.kernel.dtype
    ts, zs, coefs = diffusion.sampling_plan(schedule, x_T, key, num_inference_steps=num_inference_steps, eta=eta)
    steps = ts.shape[0]
    table = (pad_conditioning(den.conditioning(ts), width) if ctx.cond is None else ctx.cond[ts]).astype(dtype)
    rows = _row_block(n)
    r = round_up(n, rows)
    noisy = zs is not None
    z_slabs = _action_slabs(zs, r) if noisy else jnp.zeros((1, a, 4, b, r), jnp.float32)
    coef = jnp.stack([jnp.broadcast_to(jnp.asarray(c, jnp.float32), (steps,)) for c in coefs], -1)   # (S, 5)
    io = ctx.weights.io
    position = _positions(a, rows)
    noise = pl.BlockSpec((z_slabs.shape[0], a, 4, 1, rows), lambda i, j, g: (0, 0, 0, i, j))
    step_body = functools.partial(_step_kernel, points=a, width=width, noisy=noisy,
                                  clip=1.0 if clip_sample else None)

    def body(i, xs):
        step = jnp.reshape(i, (1,)).astype(jnp.int32)
        cond = ("table", table, step)
        h, pending = _layers(den, ctx, ("actions", xs, io), ("positions", xs, io.freqs, io.sign), cond, rows, True)
        operands, specs = _out_operands(io)
        return _call(step_body, ("hidden", h), cond, 3 * len(ctx.weights.layers),
                     operands + [xs, z_slabs, coef, step], specs + [position, noise, _whole(coef), _whole(step)],
                     1, rows, pending=pending, out=(jax.ShapeDtypeStruct(xs.shape, jnp.float32), position),
                     alias=len(operands))   # the new actions overwrite xs (each program its own block)

    xs = jax.lax.fori_loop(0, steps, body, _action_slabs(x_T, r), unroll=unroll)
    return jnp.moveaxis(xs[:, :3], (0, 1), (2, 3))[:, :n]


# ---------------------------------------------------------------------------------------------
# the network as the experimental selector runs it, and that selector

class FusedPolicy:
    """A DiffusionPolicy whose `prepare` makes the fused Context (when runtime.fused is on and
    the token count is a power of two) and whose `denoise` runs the fused kernels on such a
    Context; everything else is the wrapped policy's."""

    def __init__(self, policy):
        self.policy = policy

    def __getattr__(self, name):
        return getattr(self.__dict__["policy"], name)

    def prepare(self, *, num_timesteps: int | None = None, timesteps=None) -> Context:
        policy = self.policy
        if not enabled() or not supports(policy.encoder.num_tokens):
            return policy.prepare(num_timesteps=num_timesteps, timesteps=timesteps)
        den = policy.denoiser
        width = den.out_ln.mod.in_features
        cond = None if num_timesteps is None else den.conditioning_table(num_timesteps, timesteps)
        return Context((), None if cond is None else pad_conditioning(cond, width), prepare(den),
                       den.context_weights(dims(width, den.heads)[1]), policy.encoder.weights())

    def encode(self, points, groups=None, *, num_timesteps: int | None = None, timesteps=None,
               prepared: Context | None = None) -> Context:
        if prepared is None:
            prepared = self.prepare(num_timesteps=num_timesteps, timesteps=timesteps)
        return self.policy.encode(points, groups, prepared=prepared)

    def denoise(self, x, t, ctx: Context):
        den = self.policy.denoiser
        if not isinstance(ctx.weights, FusedWeights):
            return den(x, t, ctx)
        if mode() == "chain":
            return epsilon(den, x, t, ctx)
        h, cond = features(den, x, t, ctx)
        y, _ = den.out_ln.modulate(h, den._split(cond)[1])
        return den.out(y[..., :den.out_ln.width])


def stacked_implicit_scores(graphdef, params, ctx, schedule, x0, key, *, samples: int, t_max: int,
                            beta: float, noise: str = "shared_t"):
    """:func:`pam_jax.select.implicit_scores` with both networks in one pass: `params` and `ctx`
    hold the reference's and the policy's, stacked on a leading axis (reference first), and each
    denoiser call runs both as one batched computation (half the kernel launches)."""

    def errors(p, c, xs, t, eps):
        return noise_errors(FusedPolicy(nnx.merge(graphdef, p)), c, schedule, xs, t, eps)

    def difference(xs, t, eps):
        e = jax.vmap(errors, in_axes=(0, 0, None, None, None))(params, ctx, xs, t, eps)
        return e[1] - e[0]

    return select_lib._monte_carlo(difference, x0, key, samples=samples, t_max=t_max, beta=beta, noise=noise)


def make_selector(graphdef, diff: DiffusionConfig, norm: NormStats, scfg, *, score_graphdef=None,
                  scorer: Callable | None = None, mesh=None, shard: str = "obs") -> select_lib.Selector:
    """:func:`pam_jax.select.make_selector` with scfg.runtime's experimental forms (fused
    denoiser, stacked networks); the same arguments and results (validated there)."""
    if mesh is not None:
        raise ValueError("runtime.fused / runtime.stack_models: the experimental forms do not run under a mesh "
                         "(XLA cannot partition a Pallas call)")
    rt = scfg.runtime
    schedule = diffusion.schedule_from_config(diff)
    cast = lambda p: cast_params(p, scfg.compute_dtype)  # noqa: E731
    t_max = diffusion.timestep_limit(scfg.reward_timestep_frac, diff.num_train_timesteps)
    T = diff.num_train_timesteps
    mc_steps = np.arange(t_max)
    ref_steps = diffusion.ddim_timesteps(T, scfg.num_inference_steps)
    if scfg.mode == "implicit":
        ref_steps = np.union1d(ref_steps, mc_steps)
    center, scale = np.asarray(norm.center, np.float32), np.asarray(norm.scale, np.float32)
    n = scfg.num_candidates
    stacked = scfg.mode == "implicit" and rt.stack_models
    signature = (scfg.mode, scfg.num_inference_steps, t_max, scfg.compute_dtype, f"fused {rt.fused}",
                 "stacked" if stacked else "apart")
    net = lambda p: FusedPolicy(nnx.merge(graphdef, p))  # noqa: E731

    def prepare(ref_params, score_params) -> select_lib.Prepared:
        ref_params = cast(ref_params)
        ref_ctx = net(ref_params).prepare(num_timesteps=T, timesteps=ref_steps)
        score, score_ctx = score_params, None
        if scfg.mode == "implicit":
            score = cast(score_params)
            score_ctx = net(score).prepare(num_timesteps=T, timesteps=mc_steps)
            if stacked:   # both networks on a leading axis, the reference first
                score, score_ctx = jax.tree.map(lambda *a: jnp.stack(a), (ref_params, ref_ctx), (score, score_ctx))
        elif scfg.mode == "explicit":
            score = cast(score_params)   # the reward model reads t = 0 only: a one-row table
            score_ctx = nnx.merge(score_graphdef, score).policy.prepare(num_timesteps=1)
        return select_lib.Prepared(ref_params, ref_ctx, score, score_ctx, signature)

    def decide(prep, points, key) -> select_lib.Selection:
        if not isinstance(prep, select_lib.Prepared):
            raise TypeError(f"decide: expected the Prepared of this selector's prepare(), got {type(prep).__name__}")
        if prep.signature != signature:
            raise ValueError(f"decide: prepared for another selector (mode, steps, MC timesteps, dtype, forms) "
                             f"{prep.signature}, this one is {signature}: prepare it again")
        k_init, k_loop, k_score = jax.random.split(key, 3)
        pts = normalize(points, center, scale)
        ref = net(prep.ref)
        groups = ref.group(pts)
        if stacked:   # both encoders in one batched pass; the DDIM loop reads the reference's half
            both = jax.vmap(lambda p, c: net(p).encode(pts, groups, prepared=c))(prep.score, prep.score_ctx)
            ctx_ref = prep.ref_ctx._replace(kv=jax.tree.map(lambda a: a[0], both.kv))
        else:
            ctx_ref = ref.encode(pts, groups, prepared=prep.ref_ctx)
        x_T = jax.random.normal(k_init, (pts.shape[0], n, 2, 3), pts.dtype)
        loop = dict(num_inference_steps=scfg.num_inference_steps, eta=scfg.eta, clip_sample=diff.clip_sample,
                    unroll=scfg.unroll)
        if isinstance(ctx_ref.weights, FusedWeights) and mode() == "chain":
            x0 = sample(ref.denoiser, ctx_ref, schedule, x_T, k_loop, **loop)   # the loop in the kernels' layout
        else:
            x0 = diffusion.sample(lambda x, t: ref.denoise(x, t, ctx_ref), schedule, x_T, k_loop, **loop)
        if scfg.snap_rows:
            x0 = normalize(select_lib.snap_to_cloud(unnormalize(x0, center, scale), points, scfg.snap_rows),
                           center, scale)
        mc = dict(samples=scfg.reward_samples, t_max=t_max, beta=scfg.beta, noise=scfg.reward_noise)
        if stacked:
            scores = stacked_implicit_scores(graphdef, prep.score, both, schedule, x0, k_score, **mc)
        elif scfg.mode == "implicit":
            policy = net(prep.score)
            ctx_pol = policy.encode(pts, groups, prepared=prep.score_ctx)
            scores = select_lib.implicit_scores(policy, ctx_pol, ref, ctx_ref, schedule, x0, k_score, **mc)
        elif scfg.mode == "explicit":
            rm = nnx.merge(score_graphdef, prep.score)
            shared = rm.policy.encoder.grouping == ref.encoder.grouping
            scores = rm.score(x0, rm.policy.encode(pts, groups if shared else None, prepared=prep.score_ctx))
        elif scfg.mode == "custom":
            scores = scorer(prep.score, points, unnormalize(x0, center, scale))
        elif scfg.mode == "first":
            scores = jnp.broadcast_to(-jnp.arange(n, dtype=x0.dtype), x0.shape[:2])
        else:
            scores = jax.random.uniform(k_score, x0.shape[:2])
        scores = scores.astype(jnp.float32)
        idx = jnp.argmax(scores, axis=-1)
        chosen = jnp.take_along_axis(x0, idx[:, None, None, None], axis=1)[:, 0]
        return select_lib.Selection(unnormalize(chosen, center, scale), idx, unnormalize(x0, center, scale), scores)

    def select(ref_params, score_params, points, key):
        return decide(prepare(ref_params, score_params), points, key)

    select, prepare, decide = (kernels.traced(f, rt) for f in (select, prepare, decide))
    return select_lib.Selector(jax.jit(select), jax.jit(prepare), jax.jit(decide))


if make_selector not in select_lib.EXPERIMENTAL:
    select_lib.EXPERIMENTAL.append(make_selector)
