"""Step functions: pure functions of (state, batch) compiled once over the device mesh."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from pam_jax import diffusion
from pam_jax.batches import SupervisedBatch
from pam_jax.config import RuntimeConfig
from pam_jax.models import kernels
from pam_jax.models.policy import cast_params, normalize
from pam_jax.normalize import NormStats
from pam_jax.train import sharding
from pam_jax.train.state import TrainState


def draw_pose(key, actions, action_valid):
    """One valid annotated pose per sample: actions (B, M, A, 3), valid (B, M) -> (B, A, 3)."""
    logits = jnp.where(action_valid, 0.0, -jnp.inf)
    m = jax.random.categorical(key, logits, axis=-1)
    return jnp.take_along_axis(actions, m[:, None, None, None], axis=1)[:, 0]


def supervised_loss(params, graphdef, schedule: diffusion.Schedule, batch, key, *,
                    replicas: int, norm: NormStats, compute_dtype: str = "float32"):
    """Epsilon-prediction MSE; each drawn pose is replicated `replicas` times with independent noise.

    The encoder runs once per observation: the K noisy replicas are the candidate axis of the
    denoiser. `action_mask` (B, A) removes action points that the primitive does not use.
    `compute_dtype` "bfloat16" runs the network on a bfloat16 copy of the float32 parameters.
    """
    batch = SupervisedBatch.from_dict(batch)
    model = nnx.merge(graphdef, cast_params(params, compute_dtype))
    center, scale = jnp.asarray(norm.center), jnp.asarray(norm.scale)
    points = normalize(batch.points, center, scale)
    actions = normalize(batch.actions, center, scale)
    k_pose, k_t, k_eps = jax.random.split(key, 3)
    x0 = draw_pose(k_pose, actions, batch.action_valid)
    b = x0.shape[0]
    x0 = jnp.broadcast_to(x0[:, None], (b, replicas, *x0.shape[1:]))
    t = jax.random.randint(k_t, (b, replicas), 0, schedule.num_train_timesteps)
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    eps_hat = model(points, diffusion.add_noise(schedule, x0, eps, t), t)
    mask = batch.action_mask[:, None, :, None]
    sq = jnp.sum(mask * (eps_hat - eps) ** 2)
    return sq / (jnp.maximum(jnp.sum(mask), 1.0) * replicas * 3)


def make_supervised_step(graphdef, tx: optax.GradientTransformation, schedule, mesh, *,
                         replicas: int, norm: NormStats, seed: int, ema_decay: float,
                         compute_dtype: str = "float32", runtime: RuntimeConfig | None = None) -> "BoundStep":
    """-> step(state, batch) -> (state, metrics); state replicated and donated, batch sharded;
    traced with `runtime`'s kernel forms."""

    def step(state: TrainState, batch, key_data, center, scale):
        key = step_key(key_data, state.step)
        loss, grads = jax.value_and_grad(supervised_loss)(
            state.params, graphdef, schedule, batch, key, replicas=replicas, norm=NormStats(center, scale),
            compute_dtype=compute_dtype)
        new_state = state.apply_gradients(grads, tx, ema_decay)
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    return jit_step(step, mesh, *run_constants(seed, norm), runtime=runtime)


def run_constants(seed: int | None, norm: NormStats) -> tuple:
    """What a step reads of its run besides the state and the batch, as host arrays: the seed's
    key data (when the step draws noise; `seed` None: no key; :func:`step_key` rebuilds the key)
    and the normalisation's centre and scale."""
    arrays = (np.asarray(norm.center, np.float32), np.asarray(norm.scale, np.float32))
    return arrays if seed is None else (np.asarray(jax.random.key_data(jax.random.key(seed))), *arrays)


def step_key(key_data, step):
    """The noise key of training step `step`: the seed's key (from :func:`run_constants`' key data)
    folded with the step, so a resumed run draws what an uninterrupted one does."""
    return jax.random.fold_in(jax.random.wrap_key_data(key_data), step)


class BoundStep:
    """A jitted `step(state, batch, *bound)`, called as `step(state, batch)` (and lowered the same
    way). The run's constants (the seed's key, the normalisation, a frozen reference model) are
    arguments of the compiled program, not constants folded into it: runs that differ only in
    them (the training seeds of a study, data sets with other statistics) share one executable,
    and the persistent compilation cache serves every run after the first."""

    def __init__(self, jitted, bound: tuple):
        self.jitted, self.bound = jitted, bound

    def __call__(self, state, batch):
        return self.jitted(state, batch, *self.bound)

    def lower(self, state, batch):
        return self.jitted.lower(state, batch, *self.bound)


def jit_step(step, mesh, *bound, runtime: RuntimeConfig | None = None) -> BoundStep:
    """jit `step(state, batch, *bound)` on the mesh: state replicated and donated, batch on the
    data axis, the bound arguments replicated; traced with `runtime`'s kernel forms."""
    repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    jitted = jax.jit(kernels.traced(step, runtime), in_shardings=(repl, data) + (repl,) * len(bound),
                     out_shardings=(repl, repl), donate_argnums=0)
    return BoundStep(jitted, sharding.put_replicated(bound, mesh))
