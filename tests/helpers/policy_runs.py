"""Run folders for inference tests without training: tiny_config's networks at random (perturbed)
weights, saved as the checkpoint a trained run leaves (its record and its EMA parameters)."""
import pathlib

import jax
import numpy as np

from helpers.tiny import tiny_config
from pam_jax.config import override
from pam_jax.models.build import build_model
from pam_jax.normalize import NormStats
from pam_jax.train.checkpoint import Checkpointer
from pam_jax.train.loop import checkpoint_meta
from pam_jax.train.restore import load_policy, parent_record, save_reference

NORM = NormStats((0.0, 0.0, 0.0), (0.5, 0.5, 0.5))
STAGE_SETS = {"supervised": (), "dpo": ("train.stage=dpo", "data.source=toy_preference"),
              "reward": ("train.stage=reward", "data.source=toy_preference")}


def policy_run(path: pathlib.Path, stage: str = "supervised", seed: int = 0, *sets, step: int = 6,
               parent: tuple | None = None, keep_copy: bool = False) -> str:
    """A run folder of `stage` whose weights are a random init moved by 0.1 * N(0, 1) (seeded),
    saved as checkpoint `step` (call again for more steps). `parent` = (SL run folder, step): a
    preference run records it as training does (and with `keep_copy` keeps its parameters)."""
    cfg = override(tiny_config(path), [*STAGE_SETS[stage], "preference.num_candidates=4",
                                       "preference.reward_samples=4", *sets])
    _, params = build_model(cfg)
    leaves, tree = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    params = jax.tree.unflatten(tree, [np.asarray(x) + 0.1 * rng.standard_normal(x.shape).astype(np.float32)
                                       for x in leaves])
    extra = {}
    if parent is not None:
        sl = load_policy(parent[0], step=parent[1])
        extra["parent"] = parent_record(sl, path)
        if keep_copy:
            save_reference(path, sl, extra["parent"])
    ckpt = Checkpointer(pathlib.Path(path) / "checkpoints")
    ckpt.save(step, {"ema_params": params}, checkpoint_meta(cfg, NORM, {}, **extra))
    ckpt.close()
    return str(path)
