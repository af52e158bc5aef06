"""The explicit reward model (a baseline to the implicit reward).

The attention network of the policy (point encoder + action denoiser) evaluated at t=0 on the
(clean) action, pooled over the action's points, then a head to one scalar per candidate:
``head="linear"`` (the paper's baseline: one linear layer) or ``"mlp"``. The network starts
fresh (the paper's baseline) or from a supervised policy's weights (``init_reward_model``'s
``policy_params``; stronger than the paper's).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from pam_jax.config import ModelConfig
from pam_jax.models.denoiser import Context
from pam_jax.models.layers import MLP
from pam_jax.models.policy import DiffusionPolicy

HEADS = ("linear", "mlp")
INITS = ("fresh", "sl")


class RewardModel(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, head: str = "mlp", rngs: nnx.Rngs):
        if head not in HEADS:
            raise ValueError(f"unknown reward head {head!r}: expected one of {HEADS}")
        self.policy = DiffusionPolicy(cfg, rngs=rngs)
        self.head = (nnx.Linear(cfg.width, 1, rngs=rngs) if head == "linear"
                     else MLP(cfg.width, cfg.width, 1, rngs=rngs))

    def encode(self, points: jax.Array, groups=None, **conditioning) -> Context:
        return self.policy.encode(points, groups, **conditioning)

    def score(self, actions: jax.Array, ctx: Context) -> jax.Array:
        """Normalised actions (B, N, A, 3) -> rewards (B, N)."""
        t0 = jnp.zeros(actions.shape[:2], jnp.int32)
        h, _ = self.policy.denoiser.features(actions, t0, ctx)
        return self.head(jnp.mean(h, axis=2))[..., 0]

    def __call__(self, points: jax.Array, actions: jax.Array) -> jax.Array:
        return self.score(actions, self.encode(points))


def init_reward_model(cfg: ModelConfig, seed: int = 0, policy_params=None, *, head: str = "mlp"):
    """-> (graphdef, params); the backbone takes `policy_params` (a supervised policy) if given,
    else keeps its fresh initialisation."""
    model = RewardModel(cfg, head=head, rngs=nnx.Rngs(seed))
    if policy_params is not None:
        nnx.update(model.policy, policy_params)
    graphdef, params = nnx.split(model, nnx.Param)
    return graphdef, params
