"""Action denoiser (3D-Diffuser-Actor style), as in DeformPAM.

Each action candidate is A=2 tokens (its two 3D points). Per layer:
  1. cross-attention from every action token to the point tokens, with 3D rotary encoding
     (queries at the noisy action xyz, keys at the point-token xyz);
  2. self-attention among the A tokens of ONE candidate (so candidates never see each other);
  3. a feed-forward block;
each sub-layer AdaLN-conditioned on the timestep embedding (sinusoidal + MLP).

The point side of the cross-attention (normalised tokens -> keys with rotary, values) does not
depend on the timestep or on the candidates, so `context()` computes it once per observation and
`__call__` reuses it for every candidate, every DDIM step and every Monte-Carlo sample.

The layers' matrices are read in one layout, `LayerWeights` (q/k/v side by side, heads and
the hidden width zero-padded on accelerators so that XLA pads nothing inside a loop), made by
`prepare()` once per parameters and kept in the Context with the keys and values. With the
width padded, the hidden state itself is kept padded through the layers (zero past the model
width), so nothing between a LayerNorm and the matmul that reads it pads either.

Everything that depends on the timestep only (the sinusoidal embedding, its MLP and the shift /
scale / gate of every AdaLN) is `conditioning(t)`: one row of width `conditioning_width` per
timestep. A sampler computes it for all timesteps at once before its loop (`Context.cond`, a
(T, M) table) and each step only gathers its row; without a table it is computed per call.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pam_jax.models.layers import (
    MLP,
    AdaLN,
    Heads,
    TimestepEmbedding,
    context_attention,
    few_inputs,
    pad_blocks,
    pad_heads_in,
    pad_heads_out,
    pad_multiples,
    rotary_columns,
    rotate,
    round_up,
    small_attention,
    to_context_layout,
)


class Context(NamedTuple):
    """What a denoiser call reuses: computed once per observation (`kv`) and once per parameters
    (`cond`, `weights`)."""

    kv: tuple                     # per layer: (keys with rotary, values), each (B, H, dp, S)
    cond: jax.Array | None = None  # (T, M) conditioning of timesteps 0 .. T-1, or None: per call
    weights: "DenoiserWeights | None" = None   # None: made per call
    kv_weights: "ContextWeights | None" = None   # the projection that makes `kv`, or None: made per call
    encoder: tuple | None = None  # the point encoder's per-layer q/k/v matrices (PointEncoder.weights)


class ContextWeights(NamedTuple):
    """Every layer's cross-attention key and value projections as one matrix
    (:meth:`ActionDenoiser.context_weights`), so the keys and values of all layers come from one
    matmul over the standardised tokens: each layer's context LayerNorm scale is folded into its
    rows and its offset into the bias, each head's d columns zero-padded to dp. Per layer the
    columns are [keys | values], H*dp each."""

    kernel: jax.Array   # (D, L*2*H*dp)
    bias: jax.Array     # (L*2*H*dp,)


class LayerWeights(NamedTuple):
    """A denoiser layer's matrices as its forward reads them (:meth:`DenoiserLayer.weights`):
    the self-attention's q, k and v side by side (one matmul instead of three), each head's d
    columns zero-padded to dp, and the hidden state's D columns zero-padded to Dp
    (:func:`~pam_jax.models.layers.pad_multiples`: on accelerators only) in the rows of every
    matrix that reads it and the columns of every matrix that writes it. The padded dimensions
    are zero in every query, key, value and hidden state, so logits and outputs are those of the
    unpadded layer. Made once per parameters, outside the sampler's loops (`Context.weights`)."""

    cross_q: tuple     # kernel (Dp, H*dp), bias (H*dp,)
    cross_out: tuple   # (H*dp, Dp), (Dp,)
    self_qkv: tuple    # (Dp, 3*H*dp), (3*H*dp,)
    self_out: tuple    # (H*dp, Dp), (Dp,)
    ffn_in: tuple      # (Dp, F), (F,)
    ffn_out: tuple     # (F, Dp), (Dp,)


class DenoiserWeights(NamedTuple):
    """`Context.weights` of the XLA forward (:meth:`ActionDenoiser.prepare`): every layer's
    :class:`LayerWeights`, and the input projection and point embedding with their columns
    zero-padded to the same hidden width Dp."""

    layers: tuple        # per layer: LayerWeights
    w_in: jax.Array      # (3, Dp)
    b_in: jax.Array      # (Dp,)
    embed: jax.Array     # (A, Dp)


def _in_heads(heads_modules, rows: int, dp: int) -> tuple[jax.Array, jax.Array]:
    """Heads projections (D -> H x d each) -> one kernel (rows, n*H*dp) and its bias."""
    padded = [pad_heads_in(m.proj.kernel[...], m.proj.bias[...], m.heads, rows, dp) for m in heads_modules]
    return jnp.concatenate([w for w, _ in padded], axis=1), jnp.concatenate([b for _, b in padded])


def _out_heads(linear: nnx.Linear, heads: int, dp: int, cols: int) -> tuple[jax.Array, jax.Array]:
    """An output projection (H*d -> D) -> its kernel with zero rows for the padded head dims and
    zero columns past D (up to `cols`)."""
    return pad_heads_out(linear.kernel[...], linear.bias[...], heads, dp, cols)


def _affine(x: jax.Array, wb: tuple) -> jax.Array:
    w, b = wb
    return x @ w + b


class DenoiserLayer(nnx.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int, max_freq: float, *, rngs: nnx.Rngs):
        self.max_freq = max_freq
        self.ctx_norm = nnx.LayerNorm(width, rngs=rngs)
        self.cross_ln = AdaLN(width, rngs=rngs)
        self.cross_q, self.cross_k, self.cross_v = (Heads(width, heads, rngs=rngs) for _ in range(3))
        self.cross_out = nnx.Linear(width, width, rngs=rngs)
        self.self_ln = AdaLN(width, rngs=rngs)
        self.self_q, self.self_k, self.self_v = (Heads(width, heads, rngs=rngs) for _ in range(3))
        self.self_out = nnx.Linear(width, width, rngs=rngs)
        self.ffn_ln = AdaLN(width, rngs=rngs)
        self.ffn = MLP(width, mlp_ratio * width, rngs=rngs)

    def adalns(self) -> tuple[AdaLN, AdaLN, AdaLN]:
        return self.cross_ln, self.self_ln, self.ffn_ln

    def weights(self, rows: int, dp: int) -> LayerWeights:
        """This layer's :class:`LayerWeights`, the hidden width padded to `rows` and the heads to `dp`."""
        heads = self.cross_q.heads
        fc1, fc2 = self.ffn.fc1, self.ffn.fc2
        wide = (0, rows - fc1.kernel.shape[0])
        return LayerWeights(_in_heads([self.cross_q], rows, dp), _out_heads(self.cross_out, heads, dp, rows),
                            _in_heads([self.self_q, self.self_k, self.self_v], rows, dp),
                            _out_heads(self.self_out, heads, dp, rows),
                            (jnp.pad(fc1.kernel[...], (wide, (0, 0))), fc1.bias[...]),
                            (jnp.pad(fc2.kernel[...], ((0, 0), wide)), jnp.pad(fc2.bias[...], wide)))

    def __call__(self, h, rot, mods, kv, w: LayerWeights):
        """h (B, N, A, Dp), zero past the model width D; rot the rotary (cos, signed sin) at the
        action xyz (:func:`~pam_jax.models.layers.rotary_columns`, each (B, N, A, 1, dp)); mods:
        the three AdaLN modulations (shift, scale, gate), each broadcastable to h and zero past
        D; kv this layer's `Context.kv`; w its LayerWeights (Dp wide) -> the next h."""
        b, n, a, _ = h.shape
        heads, d = self.cross_q.heads, self.cross_ln.width
        dp = w.cross_out[0].shape[0] // heads
        cross, self_, ffn = mods
        # 1. cross-attention to the point tokens: all N*A action tokens are independent queries
        x, gate = self.cross_ln.modulate(h, cross)
        q = rotate(_affine(x, w.cross_q).reshape(b, n, a, heads, dp), rot, d // heads)
        y = context_attention(q.reshape(b, n * a, heads, dp), *kv, dim=d // heads)
        h = h + gate * _affine(y.reshape(b, n, a, heads * dp), w.cross_out)
        # 2. self-attention within one candidate's A points
        x, gate = self.self_ln.modulate(h, self_)
        qkv = _affine(x, w.self_qkv).reshape(b, n, a, 3, heads, dp)
        q, k, v = (qkv[..., i, :, :] for i in range(3))
        y = small_attention(rotate(q, rot, d // heads), rotate(k, rot, d // heads), v, dim=d // heads)
        h = h + gate * _affine(y.reshape(b, n, a, heads * dp), w.self_out)
        # 3. feed-forward
        x, gate = self.ffn_ln.modulate(h, ffn)
        return h + gate * _affine(nnx.gelu(_affine(x, w.ffn_in)), w.ffn_out)


class ActionDenoiser(nnx.Module):
    def __init__(self, *, width: int, layers: int, heads: int, mlp_ratio: int, action_points: int,
                 max_freq: float, rngs: nnx.Rngs):
        self.max_freq, self.heads = max_freq, heads
        self.in_proj = nnx.Linear(3, width, rngs=rngs)
        self.point_embed = nnx.Param(0.02 * jax.random.normal(rngs.params(), (action_points, width)))
        self.time = TimestepEmbedding(width, rngs=rngs)
        self.layers = nnx.List(
            [DenoiserLayer(width, heads, mlp_ratio, max_freq, rngs=rngs) for _ in range(layers)]
        )
        self.out_ln = AdaLN(width, rngs=rngs)
        self.out = nnx.Linear(width, 3, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def padding(self) -> tuple[int, int]:
        """(Dp, dp): the hidden width and the head width the attention matrices are padded to."""
        head_multiple, width_multiple = pad_multiples()
        d = self.out_ln.mod.in_features
        return round_up(d, width_multiple), round_up(d // self.heads, head_multiple)

    def context(self, tokens: jax.Array, xyz: jax.Array, w: ContextWeights | None = None) -> tuple:
        """Per-layer cross-attention keys (with rotary) and values: `Context.kv`, each head padded
        as `w` (:meth:`context_weights`, default made now with :meth:`padding`'s) pads them; one
        standardisation and one matmul for every layer's keys and values."""
        w = self.context_weights() if w is None else w
        (b, s, d), n, heads = tokens.shape, len(self.layers), self.heads
        dp = w.kernel.shape[1] // (2 * n * heads)
        norm = self.layers[0].ctx_norm   # every layer's has the same epsilon; scales and offsets are in w
        mean = jnp.mean(tokens.astype(jnp.float32), -1, keepdims=True)
        var = jnp.mean(jnp.square(tokens.astype(jnp.float32) - mean), -1, keepdims=True)
        z = ((tokens - mean) * jax.lax.rsqrt(var + norm.epsilon)).astype(w.kernel.dtype)
        y = (z @ w.kernel + w.bias).reshape(b, s, n, 2, heads, dp)
        rot = rotary_columns(xyz, d // heads, self.max_freq, dp, y.dtype)
        return tuple(to_context_layout(rotate(y[:, :, i, 0], rot, d // heads), y[:, :, i, 1]) for i in range(n))

    def context_weights(self, dp: int | None = None) -> ContextWeights:
        """The :class:`ContextWeights` of :meth:`context`, heads padded to `dp` (default:
        :meth:`padding`'s): parameters only, made once per parameters (`Context.kv_weights`)."""
        dp = self.padding()[1] if dp is None else dp
        d = self.out_ln.mod.in_features
        kernels, biases = [], []
        for layer in self.layers:
            kernel, bias = _in_heads([layer.cross_k, layer.cross_v], d, dp)
            scale, offset = layer.ctx_norm.scale[...], layer.ctx_norm.bias[...]
            kernels.append(scale[:, None] * kernel)
            biases.append(offset @ kernel + bias)
        return ContextWeights(jnp.concatenate(kernels, axis=1), jnp.concatenate(biases))

    def prepare(self) -> DenoiserWeights:
        """`Context.weights`: the matrices padded as :meth:`padding` says, made once per parameters."""
        rows, dp = self.padding()
        d = self.out_ln.width
        return DenoiserWeights(tuple(layer.weights(rows, dp) for layer in self.layers),
                               *(pad_blocks(p[...], d, rows) for p in (self.in_proj.kernel, self.in_proj.bias,
                                                                       self.point_embed)))

    def _adalns(self) -> list[AdaLN]:
        return [ln for layer in self.layers for ln in layer.adalns()] + [self.out_ln]

    @property
    def conditioning_width(self) -> int:
        return sum(ln.mod.out_features for ln in self._adalns())

    def conditioning(self, t: jax.Array) -> jax.Array:
        """Timesteps (...) -> (..., M): every AdaLN's shift, scale and gate, side by side (one
        matmul for all of them). Depends on t only: hoist it out of any loop over x."""
        s = nnx.silu(self.time(t))
        mods = self._adalns()
        kernel = jnp.concatenate([ln.mod.kernel[...] for ln in mods], axis=1)
        bias = jnp.concatenate([ln.mod.bias[...] for ln in mods])
        return s @ kernel.astype(s.dtype) + bias.astype(s.dtype)

    def _split(self, cond: jax.Array):
        """(..., M) -> per layer (cross, self, ffn) modulations, and the output AdaLN's; each a
        (shift, scale, gate) triple broadcastable against (B, N, A, D) hidden states. A `cond`
        whose every D-block is zero-padded to Dp (:func:`~pam_jax.models.layers.pad_blocks`)
        gives Dp-wide ones."""
        if cond.ndim > 1:
            cond = cond[..., None, :]   # (B, N, M) -> (B, N, 1, M): shared by a candidate's A points
        d = cond.shape[-1] // len(self._adalns()) // 3
        trip = [tuple(jnp.split(cond[..., 3 * d * i: 3 * d * (i + 1)], 3, axis=-1))
                for i in range(cond.shape[-1] // (3 * d))]
        return [tuple(trip[3 * i: 3 * i + 3]) for i in range(len(self.layers))], trip[-1]

    def timestep_conditioning(self, t: jax.Array, x_shape, cond_table: jax.Array | None) -> jax.Array:
        """The conditioning of timesteps t: a row of the precomputed table, or computed now. A
        scalar t (one timestep for every candidate, as in a DDIM step) stays one row."""
        if jnp.ndim(t) not in (0, 2):
            t = jnp.broadcast_to(t, x_shape[:2])
        return self.conditioning(t) if cond_table is None else cond_table[t]

    def conditioning_table(self, num_timesteps: int, timesteps=None) -> jax.Array:
        """(T, M) conditioning of timesteps 0 .. T-1, for `Context.cond`: computed for `timesteps`
        only (a static sequence; default every one), the other rows NaN so that a lookup of a
        timestep nobody asked for fails loudly instead of conditioning on zeros."""
        if timesteps is None:
            return self.conditioning(jnp.arange(num_timesteps, dtype=jnp.int32))
        ts = np.unique(np.asarray(timesteps, np.int64))
        if ts.size == 0 or ts[0] < 0 or ts[-1] >= num_timesteps:
            raise ValueError(f"conditioning_table: timesteps must lie in [0, {num_timesteps - 1}], got {ts.tolist()}")
        rows = self.conditioning(jnp.asarray(ts, jnp.int32))
        if ts.size == num_timesteps:
            return rows
        return jnp.full((num_timesteps, rows.shape[-1]), jnp.nan, rows.dtype).at[ts].set(rows)

    def _hidden(self, x: jax.Array, t: jax.Array, ctx: Context):
        """The layers: (final hidden states (B, N, A, Dp), zero past D; the output AdaLN's
        modulation, Dp wide; the timestep conditioning (..., M) used)."""
        dtype = self.in_proj.kernel.dtype   # compute in the parameters' dtype (rotary angles: float32)
        weights = self.prepare() if ctx.weights is None else ctx.weights
        d, wide = self.out_ln.width, weights.w_in.shape[-1]
        dp = weights.layers[0].cross_out[0].shape[0] // self.heads
        cond = self.timestep_conditioning(t, x.shape, ctx.cond).astype(dtype)
        layer_mods, out_mod = self._split(pad_blocks(cond, d, wide))
        h = few_inputs(x.astype(dtype), weights.w_in, weights.b_in) + weights.embed
        rot = rotary_columns(x, d // self.heads, self.max_freq, dp, dtype)
        for layer, mods, kv, w in zip(self.layers, layer_mods, ctx.kv, weights.layers):
            h = layer(h, rot, mods, kv, w)
        return h, out_mod, cond

    def features(self, x: jax.Array, t: jax.Array, ctx: Context) -> tuple[jax.Array, jax.Array]:
        """Final hidden states (B, N, A, D) and the timestep conditioning (..., M) used.
        t: a scalar or broadcastable to (B, N)."""
        h, _, cond = self._hidden(x, t, ctx)
        return h[..., :self.out_ln.width], cond

    def __call__(self, x: jax.Array, t: jax.Array, ctx: Context) -> jax.Array:
        """Noisy actions x (B, N, A, 3), timesteps t (a scalar or broadcastable to (B, N)) ->
        epsilon (B, N, A, 3)."""
        h, out_mod, _ = self._hidden(x, t, ctx)
        y, _ = self.out_ln.modulate(h, out_mod)
        return self.out(y[..., :self.out_ln.width])
