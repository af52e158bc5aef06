"""Step functions of the preference stages: DPO fine-tuning and the explicit reward head.

DPO batch (process-local numpy, then sharded on the data axis):
  points (B, Np, 3); candidates (B, C, A, 3); pairs (B, P, 2) int32 candidate indices;
  rankings (B, P) int32 codes; action_mask (B, A).
One t ~ U{0 .. train_timestep_frac*T - 1} is drawn per state and shared by all of its pairs; every action point gets its own eps;
the policy and the frozen reference see the same t and eps; the cloud is grouped (FPS + kNN)
once for both, and each model encodes it once.
`preference.pair_noise` says how eps is drawn (PAIR_NOISE):
  per_pair       the paper's: each action of each pair gets fresh noise, so a candidate in
                 several pairs is noised anew in each (2P denoiser evaluations per state);
  per_candidate  one eps per candidate, its error computed once and reused by every pair it is
                 in (C evaluations per state: cheaper, but the pairs of one state share noise).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from pam_jax import diffusion, preference
from pam_jax.batches import PreferenceBatch
from pam_jax.config import PreferenceConfig, RuntimeConfig
from pam_jax.models.policy import cast_params, noise_errors, normalize
from pam_jax.normalize import NormStats
from pam_jax.train.state import TrainState
from pam_jax.train.steps import jit_step, run_constants, step_key

PAIR_NOISE = ("per_pair", "per_candidate")


def _pair_values(per_candidate, pairs):
    """(B, C) values, (B, P, 2) indices -> two (B, P) arrays."""
    return (jnp.take_along_axis(per_candidate, pairs[..., 0], axis=1),
            jnp.take_along_axis(per_candidate, pairs[..., 1], axis=1))


def _pair_stats(score_1, score_2, rankings):
    """Fraction of valid pairs (codes 0/1) whose winner has the higher score, and their count."""
    valid = (rankings == 0) | (rankings == 1)
    w, l = preference.orient(score_1, score_2, rankings)
    acc = jnp.sum(jnp.where(valid, w > l, False)) / jnp.maximum(jnp.sum(valid), 1)
    return {"pair_accuracy": acc, "valid_pairs": jnp.sum(valid)}


def pair_errors(policy, ctx_pol, ref, ctx_ref, schedule: diffusion.Schedule, x0, pairs, t, key, *,
                pair_noise: str = "per_pair", mask=None):
    """Denoising errors of both actions of every pair under both models -> (pol_1, pol_2, ref_1,
    ref_2), each (B, P). x0 (B, C, A, 3) normalised candidates, pairs (B, P, 2), t (B, 1) (one per
    state, shared by its pairs); eps from `key` as `pair_noise` says (PAIR_NOISE); the reference
    sees the same t and eps as the policy. The policy's errors carry its gradient."""
    b, n_pairs = pairs.shape[:2]
    if pair_noise == "per_pair":
        # the two actions of every pair side by side: (B, 2P, A, 3), action k of pair p at 2p + k
        x0 = jnp.take_along_axis(x0, pairs.reshape(b, 2 * n_pairs)[:, :, None, None], axis=1)
    elif pair_noise != "per_candidate":
        raise ValueError(f"unknown preference.pair_noise {pair_noise!r}: expected one of {PAIR_NOISE}")
    eps = jax.random.normal(key, x0.shape, x0.dtype)
    e_pol = noise_errors(policy, ctx_pol, schedule, x0, t, eps, mask)
    e_ref = jax.lax.stop_gradient(noise_errors(ref, ctx_ref, schedule, x0, t, eps, mask))
    if pair_noise == "per_pair":
        return e_pol[:, 0::2], e_pol[:, 1::2], e_ref[:, 0::2], e_ref[:, 1::2]
    return (*_pair_values(e_pol, pairs), *_pair_values(e_ref, pairs))


def dpo_loss(params, ref_params, graphdef, schedule: diffusion.Schedule, batch, key, *,
             pcfg: PreferenceConfig, norm: NormStats, compute_dtype: str = "float32"):
    """`compute_dtype` "bfloat16": both networks run on bfloat16 copies of their (float32)
    parameters; errors, loss and gradients stay float32."""
    batch = PreferenceBatch.from_dict(batch)
    center, scale = jnp.asarray(norm.center), jnp.asarray(norm.scale)
    points = normalize(batch.points, center, scale)
    x0 = normalize(batch.candidates, center, scale)
    k_t, k_eps = jax.random.split(key)
    t_max = diffusion.timestep_limit(pcfg.train_timestep_frac, schedule.num_train_timesteps)
    t = jax.random.randint(k_t, (x0.shape[0], 1), 0, t_max)
    policy = nnx.merge(graphdef, cast_params(params, compute_dtype))
    ref = nnx.merge(graphdef, cast_params(ref_params, compute_dtype))
    groups = policy.group(points)   # FPS + kNN: once per cloud, shared by the policy and the reference
    pp1, pp2, pr1, pr2 = pair_errors(policy, policy.encode(points, groups), ref, ref.encode(points, groups),
                                     schedule, x0, batch.pairs, t, k_eps, pair_noise=pcfg.pair_noise,
                                     mask=batch.action_mask)
    weight = (preference.min_snr_weight(diffusion.snr(schedule, t[:, 0]), pcfg.min_snr_gamma)
              if pcfg.min_snr_gamma > 0 else None)
    loss = preference.preference_loss(pcfg.loss, pp1, pr1, pp2, pr2, batch.rankings, pcfg.beta,
                                      weight=weight, sft_weight=pcfg.sft_weight)
    # the winner should have the lower error relative to the reference
    return loss, _pair_stats(pr1 - pp1, pr2 - pp2, batch.rankings)


def reward_loss(params, graphdef, batch, *, norm: NormStats):
    batch = PreferenceBatch.from_dict(batch)
    center, scale = jnp.asarray(norm.center), jnp.asarray(norm.scale)
    model = nnx.merge(graphdef, params)
    r = model(normalize(batch.points, center, scale), normalize(batch.candidates, center, scale))
    r1, r2 = _pair_values(r, batch.pairs)
    return preference.bradley_terry_loss(r1, r2, batch.rankings), _pair_stats(r1, r2, batch.rankings)


def make_dpo_step(graphdef, tx: optax.GradientTransformation, schedule, mesh, ref_params, *,
                  pcfg: PreferenceConfig, norm: NormStats, seed: int, ema_decay: float,
                  compute_dtype: str = "float32", runtime: RuntimeConfig | None = None):
    """-> step(state, batch) -> (state, metrics) against the frozen reference `ref_params`; traced
    with `runtime`'s kernel forms."""

    def step(state: TrainState, batch, key_data, center, scale, ref):
        key = step_key(key_data, state.step)
        (loss, aux), grads = jax.value_and_grad(dpo_loss, has_aux=True)(
            state.params, ref, graphdef, schedule, batch, key, pcfg=pcfg, norm=NormStats(center, scale),
            compute_dtype=compute_dtype)
        return state.apply_gradients(grads, tx, ema_decay), {
            "loss": loss, "grad_norm": optax.tree.norm(grads), **aux}

    return jit_step(step, mesh, *run_constants(seed, norm), ref_params, runtime=runtime)


def make_reward_step(graphdef, tx: optax.GradientTransformation, mesh, *, norm: NormStats,
                     ema_decay: float, runtime: RuntimeConfig | None = None):
    def step(state: TrainState, batch, center, scale):
        (loss, aux), grads = jax.value_and_grad(reward_loss, has_aux=True)(
            state.params, graphdef, batch, norm=NormStats(center, scale))
        return state.apply_gradients(grads, tx, ema_decay), {
            "loss": loss, "grad_norm": optax.tree.norm(grads), **aux}

    return jit_step(step, mesh, *run_constants(None, norm), runtime=runtime)
