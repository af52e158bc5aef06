"""Evaluation of reward-guided selection on the toy bar task with its planted preference
(:mod:`pam_jax.toy.preference_data`): how often each selection mode picks the preferred order."""
from __future__ import annotations

import jax
import numpy as np

from pam_jax.select import SelectConfig, make_selector
from pam_jax.toy import data as toy
from pam_jax.toy.preference_data import BAD, GOOD, oracle_classes
from pam_jax.train.restore import load_policy


def evaluate_selection(sl_run, dpo_run, *, scenes: int = 64, num_candidates: int = 8,
                       reward_samples: int = 10, seed: int = 777, modes=("first", "implicit"),
                       reward_run=None) -> dict:
    """Fraction of fresh scenes where each selection mode picks the preferred (mode-0) order,
    and where the chosen action is a correct endpoint pair at all."""
    sl = load_policy(sl_run)
    dpo = load_policy(dpo_run) if dpo_run else None
    cfg = sl.cfg
    batch = toy.make_batch(np.random.default_rng([seed, 1]), scenes, cfg.data.num_points)
    ends = batch["actions"][:, 0]
    out = {}
    for mode in modes:
        scorer = load_policy(reward_run) if mode == "explicit" else dpo
        scfg = SelectConfig.from_config(sl.cfg, scorer.cfg if scorer else None, mode=mode,
                                        num_candidates=num_candidates, reward_samples=reward_samples)
        sel = make_selector(sl.graphdef, cfg.diffusion, sl.norm, scfg,
                            score_graphdef=scorer.graphdef if mode == "explicit" else None)
        res = sel(sl.params, scorer.params if scorer else None, batch["points"], jax.random.key(seed))
        cls = oracle_classes(np.asarray(res.action)[:, None], ends, batch["length"])[:, 0]
        out[mode] = {"preferred": float(np.mean(cls == GOOD)), "correct": float(np.mean(cls != BAD))}
    return out
