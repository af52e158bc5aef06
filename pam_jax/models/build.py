"""The network a config trains: the diffusion policy, or the explicit reward model."""
from __future__ import annotations

from pam_jax.config import Config
from pam_jax.models.policy import init_policy
from pam_jax.models.reward import init_reward_model


def build_model(cfg: Config):
    """(graphdef, params) of the network a run of `cfg` trains (for restoring checkpoints)."""
    if cfg.train.stage == "reward":
        return init_reward_model(cfg.model, cfg.train.seed, head=cfg.preference.reward_head)
    return init_policy(cfg.model, cfg.train.seed)
