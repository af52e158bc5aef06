"""The explicit reward head (a baseline to the implicit reward).

As in the reference code: the same attention network evaluated at t=0 on the (clean) action,
then an MLP to a scalar per candidate. The backbone starts from the supervised policy.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from pam_jax.config import ModelConfig
from pam_jax.models.denoiser import Context
from pam_jax.models.layers import MLP
from pam_jax.models.policy import DiffusionPolicy


class RewardModel(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.policy = DiffusionPolicy(cfg, rngs=rngs)
        self.head = MLP(cfg.width, cfg.width, 1, rngs=rngs)

    def encode(self, points: jax.Array) -> Context:
        return self.policy.encode(points)

    def score(self, actions: jax.Array, ctx: Context) -> jax.Array:
        """Normalised actions (B, N, A, 3) -> rewards (B, N)."""
        t0 = jnp.zeros(actions.shape[:2], jnp.int32)
        h, _ = self.policy.denoiser.features(actions, t0, ctx)
        return self.head(jnp.mean(h, axis=2))[..., 0]

    def __call__(self, points: jax.Array, actions: jax.Array) -> jax.Array:
        return self.score(actions, self.encode(points))


def init_reward_model(cfg: ModelConfig, seed: int = 0, policy_params=None):
    """-> (graphdef, params); the backbone takes `policy_params` (a supervised policy) if given."""
    model = RewardModel(cfg, rngs=nnx.Rngs(seed))
    if policy_params is not None:
        nnx.update(model.policy, policy_params)
    graphdef, params = nnx.split(model, nnx.Param)
    return graphdef, params
