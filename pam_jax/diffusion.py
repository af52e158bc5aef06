"""Diffusion maths: noise schedules, forward noising, DDPM/DDIM reverse steps and a scanned sampler.

Everything here is pure JAX (float32), jit- and vmap-friendly. Conventions follow the widely used
epsilon-prediction DDPM/DDIM formulation (Ho et al. 2020; Song et al. 2021):

    abar_t = prod_{s<=t} (1 - beta_s)
    x_t    = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps                       (add_noise)
    x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)                (optionally clipped)

DDIM (eta >= 0), from t to prev (abar_prev = final_alpha_cumprod when prev < 0):
    sigma^2 = (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev),  std = eta * sigma
    x_prev  = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - std^2) eps_hat + std * z

DDPM posterior ("fixed_small" variance), from t to prev (abar_prev = 1 when prev < 0):
    a_t = abar_t / abar_prev,  b_t = 1 - a_t
    mean = sqrt(abar_prev) b_t / (1 - abar_t) x0_hat + sqrt(a_t) (1 - abar_prev) / (1 - abar_t) x_t
    var  = max((1 - abar_prev) / (1 - abar_t) b_t, 1e-20), noise only where t > 0.

Timestep arguments may be Python ints, traced int32 scalars, or integer arrays whose shape is a
prefix of the sample shape (one timestep per leading element, broadcast over trailing dims).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

__all__ = [
    "BETA_SCHEDULES",
    "Schedule",
    "make_schedule",
    "add_noise",
    "snr",
    "predict_x0",
    "ddim_timesteps",
    "ddim_step",
    "ddpm_step",
    "sample",
]

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
SAMPLE_METHODS = ("ddim", "ddpm")


@struct.dataclass
class Schedule:
    """A discrete noise schedule. A pytree: pass it straight into jitted functions."""

    betas: jax.Array  # (T,) float32
    alphas: jax.Array  # (T,) float32, 1 - betas
    alphas_cumprod: jax.Array  # (T,) float32, running product of alphas (in float32)
    final_alpha_cumprod: jax.Array  # () float32, abar used by DDIM when prev_timestep < 0
    num_train_timesteps: int = struct.field(pytree_node=False)


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------


def _cosine_abar(t: np.ndarray) -> np.ndarray:
    """Nichol & Dhariwal's cosine abar(t) for t in [0, 1], s = 0.008 (float64)."""
    return np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2


def make_schedule(
    num_train_timesteps: int = 100,
    beta_schedule: str = "squaredcos_cap_v2",
    *,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    set_alpha_to_one: bool = True,
    max_beta: float = 0.999,
) -> Schedule:
    """Build a schedule. Betas are computed in float64 then cast to float32; the cumulative
    product is taken in float32 (sequentially), like the common reference scheduler."""
    if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, (int, np.integer)):
        raise ValueError(f"make_schedule: num_train_timesteps must be an int, got {num_train_timesteps!r}")
    T = int(num_train_timesteps)
    if T < 1:
        raise ValueError(f"make_schedule: num_train_timesteps must be >= 1, got {T}")
    if beta_schedule == "linear":
        betas64 = np.linspace(beta_start, beta_end, T, dtype=np.float64)
    elif beta_schedule == "scaled_linear":
        betas64 = np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2
    elif beta_schedule == "squaredcos_cap_v2":
        i = np.arange(T, dtype=np.float64)
        betas64 = np.minimum(1.0 - _cosine_abar((i + 1) / T) / _cosine_abar(i / T), max_beta)
    else:
        raise ValueError(
            f"make_schedule: unknown beta_schedule {beta_schedule!r}; valid names: {', '.join(BETA_SCHEDULES)}"
        )
    betas = betas64.astype(np.float32)
    alphas = (np.float32(1.0) - betas).astype(np.float32)
    alphas_cumprod = np.cumprod(alphas, dtype=np.float32)
    final = np.float32(1.0) if set_alpha_to_one else alphas_cumprod[0]
    return Schedule(
        betas=jnp.asarray(betas),
        alphas=jnp.asarray(alphas),
        alphas_cumprod=jnp.asarray(alphas_cumprod),
        final_alpha_cumprod=jnp.asarray(final, dtype=jnp.float32),
        num_train_timesteps=T,
    )


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def schedule_from_config(cfg) -> Schedule:
    """THE schedule of a `pam_jax.config.DiffusionConfig` (every caller builds it here)."""
    return make_schedule(cfg.num_train_timesteps, cfg.beta_schedule, set_alpha_to_one=cfg.set_alpha_to_one)


def timestep_limit(frac: float, num_train_timesteps: int) -> int:
    """t_max for t ~ U{0 .. t_max - 1}: the lowest `frac` of the timesteps, rounded, at least 1
    (frac = 0.1 of T = 100 -> 10, the implicit reward's least-noisy 10%)."""
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"timestep fraction must be in (0, 1], got {frac}")
    return max(1, int(round(frac * num_train_timesteps)))


def _check_python_timestep(name: str, t, lo: int, hi: int) -> None:
    """Range-check timesteps that are concrete (Python ints / numpy); traced values pass through."""
    if isinstance(t, jax.core.Tracer):
        return
    if isinstance(t, (int, np.integer, np.ndarray)) and not isinstance(t, bool):
        a = np.asarray(t)
        if a.size and (a.min() < lo or a.max() > hi):
            raise ValueError(f"{name} must lie in [{lo}, {hi}], got values in [{a.min()}, {a.max()}]")


def _as_timestep(name: str, t, ndim: int, shape: tuple[int, ...]) -> jax.Array:
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {t.dtype}")
    t = t.astype(jnp.int32)
    if t.ndim > ndim or any(a not in (1, b) for a, b in zip(t.shape, shape[: t.ndim])):
        raise ValueError(
            f"{name} shape {tuple(t.shape)} must be a (broadcastable) prefix of the sample shape {tuple(shape)}"
        )
    return t


def _expand(v: jax.Array, ndim: int) -> jax.Array:
    """Append trailing singleton dims so a per-leading-element value broadcasts over the sample."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def _abar(schedule: Schedule, t: jax.Array, ndim: int) -> jax.Array:
    return _expand(schedule.alphas_cumprod[t], ndim)


def _noise(name: str, key, variance_noise, shape, dtype) -> jax.Array:
    if variance_noise is not None:
        z = jnp.asarray(variance_noise, dtype)
        if z.shape != tuple(shape):
            raise ValueError(f"{name}: variance_noise shape {tuple(z.shape)} != sample shape {tuple(shape)}")
        return z
    if key is None:
        raise ValueError(f"{name}: noise is needed here; pass key= or variance_noise=")
    return jax.random.normal(key, shape, dtype)


def _check_same_shape(name: str, model_output, sample) -> None:
    if tuple(model_output.shape) != tuple(sample.shape):
        raise ValueError(
            f"{name}: model_output shape {tuple(model_output.shape)} != sample shape {tuple(sample.shape)}"
        )


# --------------------------------------------------------------------------------------------
# Forward process
# --------------------------------------------------------------------------------------------


def add_noise(schedule: Schedule, x0, noise, t) -> jax.Array:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; t's shape is a prefix of x0.shape."""
    x0 = jnp.asarray(x0, jnp.float32)
    noise = jnp.asarray(noise, jnp.float32)
    if x0.shape != noise.shape:
        raise ValueError(f"add_noise: x0 shape {tuple(x0.shape)} != noise shape {tuple(noise.shape)}")
    _check_python_timestep("add_noise: t", t, 0, schedule.num_train_timesteps - 1)
    t = _as_timestep("add_noise: t", t, x0.ndim, x0.shape)
    abar = _abar(schedule, t, x0.ndim)
    return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise


def snr(schedule: Schedule, t) -> jax.Array:
    """Signal-to-noise ratio abar_t / (1 - abar_t), same shape as t (float32)."""
    _check_python_timestep("snr: t", t, 0, schedule.num_train_timesteps - 1)
    abar = schedule.alphas_cumprod[jnp.asarray(t, jnp.int32)]
    return abar / (1.0 - abar)


def predict_x0(schedule: Schedule, model_output, timestep, sample) -> jax.Array:
    """x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) (no clipping)."""
    sample = jnp.asarray(sample, jnp.float32)
    eps = jnp.asarray(model_output, jnp.float32)
    _check_same_shape("predict_x0", eps, sample)
    t = _as_timestep("predict_x0: timestep", timestep, sample.ndim, sample.shape)
    abar = _abar(schedule, t, sample.ndim)
    return (sample - jnp.sqrt(1.0 - abar) * eps) / jnp.sqrt(abar)


# --------------------------------------------------------------------------------------------
# Reverse steps
# --------------------------------------------------------------------------------------------


def ddim_timesteps(num_train_timesteps: int, num_inference_steps: int, *, steps_offset: int = 0) -> np.ndarray:
    """'Leading' spacing: (arange(n) * (T // n))[::-1] + steps_offset, as int32 (descending)."""
    T, n = int(num_train_timesteps), int(num_inference_steps)
    if T < 1:
        raise ValueError(f"ddim_timesteps: num_train_timesteps must be >= 1, got {T}")
    if not 1 <= n <= T:
        raise ValueError(f"num_inference_steps must be in [1, {T}] (num_train_timesteps), got {n}")
    step_ratio = T // n
    ts = (np.arange(n, dtype=np.int64) * step_ratio)[::-1] + int(steps_offset)
    if ts.max() > T - 1 or ts.min() < 0:
        raise ValueError(f"ddim_timesteps: steps_offset={steps_offset} moves timesteps outside [0, {T - 1}]")
    return ts.astype(np.int32)


def _eta_is_zero(eta) -> bool:
    return not isinstance(eta, jax.core.Tracer) and np.ndim(eta) == 0 and float(eta) == 0.0


def ddim_step(
    schedule: Schedule,
    model_output,
    timestep,
    sample,
    *,
    prev_timestep,
    eta=0.0,
    key=None,
    clip_sample: bool = True,
    clip_sample_range: float = 1.0,
    use_clipped_model_output: bool = False,
    variance_noise=None,
) -> jax.Array:
    """One DDIM update x_t -> x_prev for an epsilon-predicting model.

    Noise (from `variance_noise`, else drawn from `key`) is only needed when eta is not a
    concrete 0. Returns float32. The one numerical difference from the plain formula: the
    direction coefficient sqrt(1 - abar_prev - std^2) is clamped at 0 inside the root so float
    round-off at eta=1 cannot produce NaN (the exact value is >= 0).
    """
    sample = jnp.asarray(sample, jnp.float32)
    eps = jnp.asarray(model_output, jnp.float32)
    _check_same_shape("ddim_step", eps, sample)
    T = schedule.num_train_timesteps
    _check_python_timestep("ddim_step: timestep", timestep, 0, T - 1)
    _check_python_timestep("ddim_step: prev_timestep", prev_timestep, -(2**31), T - 1)
    nd, shp = sample.ndim, sample.shape
    t = _as_timestep("ddim_step: timestep", timestep, nd, shp)
    prev = _as_timestep("ddim_step: prev_timestep", prev_timestep, nd, shp)

    abar_t = _abar(schedule, t, nd)
    abar_prev = _expand(_ddim_abar_prev(schedule, prev), nd)
    z = None if _eta_is_zero(eta) else _noise("ddim_step", key, variance_noise, shp, jnp.float32)
    return _ddim_update(sample, eps, _ddim_coefficients(abar_t, abar_prev, eta), z, clip_sample=clip_sample,
                        clip_sample_range=clip_sample_range, use_clipped_model_output=use_clipped_model_output)


def _ddim_abar_prev(schedule: Schedule, prev: jax.Array) -> jax.Array:
    return jnp.where(prev >= 0, schedule.alphas_cumprod[jnp.maximum(prev, 0)], schedule.final_alpha_cumprod)


def _ddim_coefficients(abar_t, abar_prev, eta) -> tuple:
    """What a DDIM update needs from the schedule (x-independent): sqrt(1 - abar_t), sqrt(abar_t),
    sqrt(abar_prev), the direction coefficient sqrt(1 - abar_prev - std^2) and std."""
    beta_t = 1.0 - abar_t
    beta_prev = 1.0 - abar_prev
    variance = (beta_prev / beta_t) * (1.0 - abar_t / abar_prev)
    std = jnp.asarray(eta, jnp.float32) * jnp.sqrt(variance)
    return (jnp.sqrt(beta_t), jnp.sqrt(abar_t), jnp.sqrt(abar_prev),
            jnp.sqrt(jnp.maximum(1.0 - abar_prev - std**2, 0.0)), std)


def _ddim_update(sample, eps, coefs, z, *, clip_sample: bool, clip_sample_range: float = 1.0,
                 use_clipped_model_output: bool = False) -> jax.Array:
    """The DDIM arithmetic of :func:`ddim_step`, given :func:`_ddim_coefficients` (each
    broadcastable to the sample) and the noise z (None: no noise)."""
    sqrt_beta_t, sqrt_abar_t, sqrt_abar_prev, dir_coef, std = coefs
    x0_hat = (sample - sqrt_beta_t * eps) / sqrt_abar_t
    if clip_sample:
        x0_hat = jnp.clip(x0_hat, -clip_sample_range, clip_sample_range)
    if use_clipped_model_output:
        eps = (sample - sqrt_abar_t * x0_hat) / sqrt_beta_t
    prev_sample = sqrt_abar_prev * x0_hat + dir_coef * eps
    if z is not None:
        prev_sample = prev_sample + std * z
    return prev_sample


def ddpm_step(
    schedule: Schedule,
    model_output,
    timestep,
    sample,
    *,
    key=None,
    prev_timestep=None,
    clip_sample: bool = True,
    clip_sample_range: float = 1.0,
    variance_noise=None,
) -> jax.Array:
    """One ancestral DDPM update x_t -> x_prev (posterior mean + "fixed_small" variance).

    prev_timestep defaults to timestep - 1; abar_prev = 1 when prev < 0. Noise is added only
    where timestep > 0 (elementwise for array timesteps). Returns float32.
    """
    sample = jnp.asarray(sample, jnp.float32)
    eps = jnp.asarray(model_output, jnp.float32)
    _check_same_shape("ddpm_step", eps, sample)
    T = schedule.num_train_timesteps
    _check_python_timestep("ddpm_step: timestep", timestep, 0, T - 1)
    nd, shp = sample.ndim, sample.shape
    t = _as_timestep("ddpm_step: timestep", timestep, nd, shp)
    if prev_timestep is None:
        prev = t - 1
    else:
        _check_python_timestep("ddpm_step: prev_timestep", prev_timestep, -(2**31), T - 1)
        prev = _as_timestep("ddpm_step: prev_timestep", prev_timestep, nd, shp)

    abar_t = _abar(schedule, t, nd)
    abar_prev = _expand(jnp.where(prev >= 0, schedule.alphas_cumprod[jnp.maximum(prev, 0)], 1.0), nd)
    beta_t = 1.0 - abar_t
    beta_prev = 1.0 - abar_prev
    cur_alpha = abar_t / abar_prev
    cur_beta = 1.0 - cur_alpha

    x0_hat = (sample - jnp.sqrt(beta_t) * eps) / jnp.sqrt(abar_t)
    if clip_sample:
        x0_hat = jnp.clip(x0_hat, -clip_sample_range, clip_sample_range)

    mean = (jnp.sqrt(abar_prev) * cur_beta / beta_t) * x0_hat + (jnp.sqrt(cur_alpha) * beta_prev / beta_t) * sample

    # Skip noise entirely when every timestep is a concrete 0.
    if not isinstance(timestep, jax.core.Tracer) and np.all(np.asarray(timestep) == 0):
        return mean
    variance = jnp.maximum(beta_prev / beta_t * cur_beta, 1e-20)
    z = _noise("ddpm_step", key, variance_noise, shp, jnp.float32)
    return mean + _expand(t > 0, nd) * jnp.sqrt(variance) * z


# --------------------------------------------------------------------------------------------
# Sampling loop
# --------------------------------------------------------------------------------------------


def sampling_plan(schedule: Schedule, x_T, key, *, num_inference_steps: int | None = None, eta=0.0,
                  method: str = "ddim") -> tuple:
    """What :func:`sample` computes before its loop, x-independent: the timesteps (S,) int32, each
    step's noise (S, *x_T.shape) float32 drawn from that step's own key (None when DDIM's eta is a
    concrete 0), and for DDIM each step's update coefficients (:func:`_ddim_coefficients`, each
    (S,)), else None. The experimental fused sampler (benchmarks/experimental/fused.py) runs its
    own loop over the same plan."""
    if method not in SAMPLE_METHODS:
        raise ValueError(f"sample: unknown method {method!r}; valid: {', '.join(SAMPLE_METHODS)}")
    T = schedule.num_train_timesteps
    n = T if num_inference_steps is None else num_inference_steps
    timesteps = ddim_timesteps(T, n)
    ratio = T // int(n)
    shape = jnp.shape(x_T)
    keys = jax.random.split(key, len(timesteps))
    ts = jnp.asarray(timesteps, jnp.int32)
    noisy = method == "ddpm" or not _eta_is_zero(eta)
    # one draw per step from that step's key, as a step would draw it, but all before the loop
    zs = jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(keys) if noisy else None
    coefs = (_ddim_coefficients(schedule.alphas_cumprod[ts], _ddim_abar_prev(schedule, ts - ratio), eta)
             if method == "ddim" else None)
    return ts, zs, coefs


def sample(
    denoise_fn: Callable[[jax.Array, jax.Array], jax.Array],
    schedule: Schedule,
    x_T,
    key,
    *,
    num_inference_steps: int | None = None,
    eta=0.0,
    clip_sample: bool = True,
    method: str = "ddim",
    unroll: int = 1,
) -> jax.Array:
    """Run the full reverse chain from x_T in one `lax.scan`.

    denoise_fn(x, t) -> eps, with t an int32 scalar. Timesteps use "leading" spacing
    (`ddim_timesteps`) and prev = t - T // n. num_inference_steps defaults to T (every step);
    method="ddpm" with the default runs the full ancestral chain. Per-step keys are split from
    `key` (unused for DDIM with a concrete eta == 0). Everything that does not depend on x (each
    step's noise, drawn from its own key, and DDIM's abar at both timesteps) is computed for all
    steps before the loop; the loop body is the model call and the update. `unroll` steps per
    loop iteration (`lax.scan`'s unroll).
    """
    ts, zs, coefs = sampling_plan(schedule, x_T, key, num_inference_steps=num_inference_steps, eta=eta,
                                  method=method)
    ratio = schedule.num_train_timesteps // len(ts)
    x_T = jnp.asarray(x_T, jnp.float32)

    def body(x, inp):
        t, z, coef = inp
        eps = denoise_fn(x, t)
        if method == "ddim":
            eps = jnp.asarray(eps, jnp.float32)
            _check_same_shape("ddim_step", eps, x)
            x = _ddim_update(x, eps, coef, z, clip_sample=clip_sample)
        else:
            x = ddpm_step(schedule, eps, t, x, prev_timestep=t - ratio, variance_noise=z, clip_sample=clip_sample)
        return x, None

    x0, _ = jax.lax.scan(body, x_T, (ts, zs, coefs), unroll=unroll)
    return x0
