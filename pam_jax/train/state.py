"""The train state (a pytree of arrays only) and the optimiser."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import struct

from pam_jax.config import OptimConfig


@struct.dataclass
class TrainState:
    step: jax.Array          # int32 scalar: optimizer steps taken
    params: dict             # nnx.State of the policy (nnx.Param only)
    opt_state: optax.OptState
    ema_params: dict | None  # exponential moving average of params, or None

    @classmethod
    def create(cls, params, tx: optax.GradientTransformation, *, ema: bool) -> "TrainState":
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            ema_params=jax.tree.map(jnp.copy, params) if ema else None,
        )

    def apply_gradients(self, grads, tx: optax.GradientTransformation, ema_decay: float) -> "TrainState":
        updates, opt_state = tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        ema = self.ema_params
        if ema is not None:
            # warm-up (1+n)/(10+n): early on the average follows the parameters instead of
            # keeping the random initialisation for ~1/(1-decay) steps
            n = self.step.astype(jnp.float32)
            decay = jnp.minimum(ema_decay, (1.0 + n) / (10.0 + n))
            ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state, ema_params=ema)


def learning_rate(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.lr, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=cfg.lr * 0.01,
    )


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """AdamW (betas 0.9/0.95, weight decay 1e-3 by default), cosine schedule, global-norm
    clipping at `grad_clip` (0: no clipping)."""
    if not cfg.grad_clip >= 0:
        raise ValueError(f"optim.grad_clip must be >= 0 (0 = no clipping), got {cfg.grad_clip}")
    adamw = optax.adamw(learning_rate(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay)
    if cfg.grad_clip == 0:
        return adamw
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adamw)
