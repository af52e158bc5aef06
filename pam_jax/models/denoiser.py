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
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from pam_jax.models.layers import (
    MLP, AdaLN, Heads, TimestepEmbedding, apply_rotary, attention, rotary_angles,
)

Context = tuple  # per layer: (keys with rotary (B, S, H, d), values (B, S, H, d))


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

    def context(self, tokens: jax.Array, xyz: jax.Array) -> tuple[jax.Array, jax.Array]:
        c = self.ctx_norm(tokens)
        k = self.cross_k(c)
        return apply_rotary(k, rotary_angles(xyz, k.shape[-1], self.max_freq)), self.cross_v(c)

    def __call__(self, h, ang, temb, kv):
        """h (B, N, A, D); ang (B, N, A, 3F) rotary angles at the action xyz; temb (B, N, 1, D)."""
        b, n, a, d = h.shape
        # 1. cross-attention to the point tokens: all N*A action tokens are independent queries
        x, gate = self.cross_ln(h, temb)
        q = apply_rotary(self.cross_q(x), ang).reshape(b, n * a, *kv[0].shape[-2:])
        y = attention(q, *kv).reshape(b, n, a, d)
        h = h + gate * self.cross_out(y)
        # 2. self-attention within one candidate's A points
        x, gate = self.self_ln(h, temb)
        q, k = apply_rotary(self.self_q(x), ang), apply_rotary(self.self_k(x), ang)
        y = attention(q, k, self.self_v(x)).reshape(b, n, a, d)
        h = h + gate * self.self_out(y)
        # 3. feed-forward
        x, gate = self.ffn_ln(h, temb)
        return h + gate * self.ffn(x)


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

    def context(self, tokens: jax.Array, xyz: jax.Array) -> Context:
        return tuple(layer.context(tokens, xyz) for layer in self.layers)

    def features(self, x: jax.Array, t: jax.Array, ctx: Context) -> tuple[jax.Array, jax.Array]:
        """Final hidden states (B, N, A, D) and the timestep embedding (B, N, 1, D)."""
        t = jnp.broadcast_to(t, x.shape[:2])
        temb = self.time(t)[:, :, None, :]
        h = self.in_proj(x) + self.point_embed[...]
        ang = rotary_angles(x, h.shape[-1] // self.heads, self.max_freq)
        for layer, kv in zip(self.layers, ctx):
            h = layer(h, ang, temb, kv)
        return h, temb

    def __call__(self, x: jax.Array, t: jax.Array, ctx: Context) -> jax.Array:
        """Noisy actions x (B, N, A, 3), timesteps t broadcastable to (B, N) -> epsilon (B, N, A, 3)."""
        h, temb = self.features(x, t, ctx)
        y, _ = self.out_ln(h, temb)
        return self.out(y)
