"""Point encoder: set abstraction (FPS + kNN grouping + PointNet) then rotary transformer layers.

Replaces the reference's sparse 3D ResUNet + point transformer (no sparse-convolution
dependency): the cloud (Np points) becomes S tokens at farthest-point-sampled centroids, each
summarising its k nearest neighbours, then a few self-attention layers with 3D rotary encoding
mix them, and a max-pooled global feature is fused into every token (like the reference's
1024-d global feature fusion). Output: per-token features (B, S, D) and their xyz (B, S, 3).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from pam_jax.models import geometry
from pam_jax.models.layers import MLP, Heads, attention, rotary_columns, rotate

LOCAL_SCALE = 10.0  # neighbourhood offsets are ~0.05 normalised units; bring them to O(1)


class EncoderLayer(nnx.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int, max_freq: float, *, rngs: nnx.Rngs):
        self.max_freq = max_freq
        self.norm1 = nnx.LayerNorm(width, use_fast_variance=False, rngs=rngs)
        self.q, self.k, self.v = (Heads(width, heads, rngs=rngs) for _ in range(3))
        self.out = nnx.Linear(width, width, rngs=rngs)
        self.norm2 = nnx.LayerNorm(width, use_fast_variance=False, rngs=rngs)
        self.mlp = MLP(width, mlp_ratio * width, rngs=rngs)

    def weights(self) -> tuple[jax.Array, jax.Array]:
        """q, k and v side by side: a (D, 3D) kernel and its bias, for one matmul (made once per
        parameters in a Prepared, else per call)."""
        mods = (self.q, self.k, self.v)
        return (jnp.concatenate([m.proj.kernel[...] for m in mods], axis=1),
                jnp.concatenate([m.proj.bias[...] for m in mods]))

    def __call__(self, h: jax.Array, xyz: jax.Array, w: tuple | None = None) -> jax.Array:
        """h (B, S, D) tokens at xyz (B, S, 3); `w`: :meth:`weights`, else made now."""
        kernel, bias = self.weights() if w is None else w
        heads = self.q.heads
        qkv = (self.norm1(h) @ kernel + bias).reshape(*h.shape[:-1], 3 * heads, -1)
        d = qkv.shape[-1]
        qk = rotate(qkv[..., : 2 * heads, :], rotary_columns(xyz, d, self.max_freq, dtype=qkv.dtype), d)   # q and k at once
        a = attention(qk[..., :heads, :], qk[..., heads:, :], qkv[..., 2 * heads:, :])
        h = h + self.out(a.reshape(h.shape))
        return h + self.mlp(self.norm2(h))


class PointEncoder(nnx.Module):
    def __init__(self, *, num_tokens: int, knn: int, width: int, layers: int, heads: int,
                 mlp_ratio: int, max_freq: float, rngs: nnx.Rngs):
        self.num_tokens, self.knn = num_tokens, knn
        self.local = MLP(6, width, width, rngs=rngs)
        self.local_norm = nnx.LayerNorm(width, use_fast_variance=False, rngs=rngs)
        self.layers = nnx.List(
            [EncoderLayer(width, heads, mlp_ratio, max_freq, rngs=rngs) for _ in range(layers)]
        )
        self.fuse = MLP(2 * width, width, width, rngs=rngs)
        self.out_norm = nnx.LayerNorm(width, use_fast_variance=False, rngs=rngs)

    def group(self, points: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(B, Np, 3) -> centroids (B, S, 3) and neighbourhoods (B, S, k, 3) relative to them."""
        if self.num_tokens > points.shape[1] or self.knn > points.shape[1]:
            raise ValueError(
                f"point encoder needs at least max(num_tokens={self.num_tokens}, knn={self.knn}) "
                f"points, got {points.shape[1]}"
            )
        pts = jax.lax.stop_gradient(points)

        def one(p):
            centre = p[geometry.farthest_point_sample(p, self.num_tokens)]
            nbrs = p[geometry.knn(centre, p, self.knn)]
            return centre, nbrs - centre[:, None, :]

        return jax.vmap(one)(pts)

    @property
    def grouping(self) -> tuple[int, int]:
        """(num_tokens, knn): two encoders with the same grouping can share :meth:`group`'s result."""
        return self.num_tokens, self.knn

    def weights(self) -> tuple:
        """Per layer, :meth:`EncoderLayer.weights`: parameter-only, made once per parameters."""
        return tuple(layer.weights() for layer in self.layers)

    def __call__(self, points: jax.Array, groups: tuple[jax.Array, jax.Array] | None = None,
                 weights: tuple | None = None) -> tuple[jax.Array, jax.Array]:
        """Clouds (B, Np, 3) -> tokens (B, S, D) and their xyz (B, S, 3). `groups`: this cloud's
        :meth:`group` (FPS + kNN depend on the cloud only: compute them once per observation and
        share them between models), else computed here. `weights`: :meth:`weights`, else made
        per call."""
        centre, rel = self.group(points) if groups is None else groups
        feats = jnp.concatenate([rel * LOCAL_SCALE, jnp.broadcast_to(centre[:, :, None], rel.shape)], -1)
        feats = feats.astype(self.local.fc1.kernel.dtype)  # compute in the parameters' dtype; xyz stays
        h = self.local_norm(jnp.max(self.local(feats), axis=2))  # PointNet max-pool per group
        for i, layer in enumerate(self.layers):
            h = layer(h, centre, None if weights is None else weights[i])
        glob = jnp.broadcast_to(jnp.max(h, axis=1, keepdims=True), h.shape)
        h = h + self.fuse(jnp.concatenate([h, glob], axis=-1))
        return self.out_norm(h), centre
