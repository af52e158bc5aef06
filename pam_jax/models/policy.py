"""The diffusion policy: point encoder + action denoiser, and its functional entry points.

Use it the functional way: `graphdef, params = init_policy(cfg, seed)` once, then jit pure
functions of `(params, ...)` that call `nnx.merge(graphdef, params)` inside.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from pam_jax import diffusion
from pam_jax.config import Config, DiffusionConfig, ModelConfig, RuntimeConfig
from pam_jax.models import kernels
from pam_jax.models.denoiser import ActionDenoiser, Context
from pam_jax.models.encoder import PointEncoder
from pam_jax.normalize import NormStats


class DiffusionPolicy(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.encoder = PointEncoder(
            num_tokens=cfg.num_tokens, knn=cfg.knn, width=cfg.width, layers=cfg.encoder_layers,
            heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, max_freq=cfg.rotary_max_freq, rngs=rngs,
        )
        self.denoiser = ActionDenoiser(
            width=cfg.width, layers=cfg.layers, heads=cfg.heads, mlp_ratio=cfg.mlp_ratio,
            action_points=cfg.action_points, max_freq=cfg.rotary_max_freq, rngs=rngs,
        )

    def group(self, points: jax.Array) -> tuple[jax.Array, jax.Array]:
        """FPS centroids and kNN neighbourhoods of normalised clouds: they depend on the cloud
        only, so models with the same `encoder.grouping` can share them (see :meth:`encode`)."""
        return self.encoder.group(points)

    def prepare(self, *, num_timesteps: int | None = None, timesteps=None) -> Context:
        """The parameter-only part of a Context (its `kv` empty): the attention matrices in the
        layout the denoiser reads, and with `num_timesteps` T the timestep conditioning table (T
        rows, computed for the static `timesteps` only, default all). It depends on the
        parameters only: make it once per parameters and pass it to :meth:`encode` for every
        observation."""
        den = self.denoiser
        cond = None if num_timesteps is None else den.conditioning_table(num_timesteps, timesteps)
        return Context((), cond, den.prepare(), den.context_weights(), self.encoder.weights())

    def encode(self, points: jax.Array, groups=None, *, num_timesteps: int | None = None,
               timesteps=None, prepared: Context | None = None) -> Context:
        """Normalised clouds (B, Np, 3) -> the Context: per-layer cross-attention keys/values
        (once per observation), from `groups` (:meth:`group` of these clouds) if given, with the
        parameter-only part from `prepared` (:meth:`prepare`), else made now from
        `num_timesteps` and `timesteps` (see :meth:`prepare`). Denoiser calls (every DDIM step,
        every Monte-Carlo sample) then only gather a row of the conditioning table."""
        if prepared is None:
            prepared = self.prepare(num_timesteps=num_timesteps, timesteps=timesteps)
        tokens, xyz = self.encoder(points, groups, prepared.encoder)
        return prepared._replace(kv=self.denoiser.context(tokens, xyz, prepared.kv_weights))

    def denoise(self, x: jax.Array, t: jax.Array, ctx: Context) -> jax.Array:
        return self.denoiser(x, t, ctx)

    def __call__(self, points: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
        return self.denoise(x, t, self.encode(points))


@dataclasses.dataclass(frozen=True)
class Policy:
    """A trained network ready for inference (restored params-only by
    :func:`pam_jax.train.restore.load_policy`): the run's config, the graphdef, the parameters
    (EMA weights when the run kept them) and the normalisation of clouds and actions."""

    cfg: Config
    graphdef: Any
    params: Any
    norm: NormStats
    step: int = 0
    run_dir: str = ""

    @property
    def stage(self) -> str:
        return self.cfg.train.stage


def init_policy(cfg: ModelConfig, seed: int = 0):
    """-> (graphdef, params). The policy holds only nnx.Param variables."""
    model = DiffusionPolicy(cfg, rngs=nnx.Rngs(seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise AssertionError("DiffusionPolicy must hold only nnx.Param state")
    return graphdef, params


def cast_params(params, dtype):
    """Floating-point leaves cast to `dtype` (a compute-dtype copy made inside a jitted graph;
    gradients flow back to the float32 originals). A no-op for float32."""
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float32:
        return params
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, params)


def num_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))


def normalize(x, center, scale):
    return (x - center) / scale


def unnormalize(x, center, scale):
    return x * scale + center


def sample_normalized(graphdef, params, points_n, key, *, num_samples: int,
                      diff: DiffusionConfig, schedule: diffusion.Schedule, action_points: int):
    """DDIM/DDPM sampling in the normalised frame: (B, Np, 3) -> (B, N, A, 3).

    The encoder (and the cross-attention keys/values) run once per observation; all N
    candidates are denoised together in each step of one lax.scan.
    """
    model = nnx.merge(graphdef, params)
    ctx = model.encode(points_n)
    b = points_n.shape[0]
    k_init, k_loop = jax.random.split(key)
    x_T = jax.random.normal(k_init, (b, num_samples, action_points, 3), points_n.dtype)
    return diffusion.sample(
        lambda x, t: model.denoise(x, t, ctx), schedule, x_T, k_loop,
        num_inference_steps=diff.num_inference_steps, eta=diff.eta, clip_sample=diff.clip_sample,
    )


@functools.partial(jax.jit, static_argnames=("graphdef", "num_samples", "diff", "action_points", "runtime"))
def sample_actions(graphdef, params, points, center, scale, key, *, num_samples: int,
                   diff: DiffusionConfig, action_points: int = 2, runtime: RuntimeConfig | None = None):
    """Raw-frame clouds (B, Np, 3) -> sampled actions (B, num_samples, A, 3) in the raw frame,
    traced with `runtime`'s kernel forms (None: the defaults)."""
    schedule = diffusion.schedule_from_config(diff)
    with kernels.using(runtime):
        x0 = sample_normalized(graphdef, params, normalize(points, center, scale), key,
                               num_samples=num_samples, diff=diff, schedule=schedule,
                               action_points=action_points)
    return unnormalize(x0, center, scale)


def noise_errors(model: DiffusionPolicy, ctx: Context, schedule: diffusion.Schedule, x0, t, eps,
                 mask=None):
    """Per-candidate denoising error e(a) = mean over points and xyz of (eps - eps_hat)^2.

    x0, eps: (B, C, A, 3) normalised actions and their noise; t broadcastable to (B, C);
    mask (B, A) drops unused action points. -> (B, C).
    """
    t = jnp.broadcast_to(t, x0.shape[:2])
    sq = (model.denoise(diffusion.add_noise(schedule, x0, eps, t), t, ctx) - eps) ** 2
    if mask is None:
        return jnp.mean(sq, axis=(-2, -1))
    m = mask[:, None, :, None].astype(sq.dtype)
    return jnp.sum(sq * m, axis=(-2, -1)) / (jnp.maximum(jnp.sum(m, axis=(-2, -1)), 1.0) * 3)
