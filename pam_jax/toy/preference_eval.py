"""Evaluation of reward-guided selection on the toy bar task with its planted preference
(:mod:`pam_jax.toy.preference_data`): how often each selection mode picks the preferred order."""
from __future__ import annotations

import jax
import numpy as np

from pam_jax.policy import Runs, bound_sl, load
from pam_jax.toy import data as toy
from pam_jax.toy.preference_data import BAD, GOOD, oracle_classes


def evaluate_selection(sl_run, dpo_run, *, scenes: int = 64, num_candidates: int = 8,
                       reward_samples: int = 10, seed: int = 777, modes=("first", "implicit"),
                       reward_run=None, sl_step: int | None = None) -> dict:
    """Fraction of fresh scenes where each selection mode picks the preferred (mode-0) order,
    and where the chosen action is a correct endpoint pair at all. `sl_run` None: the SL run the
    preference runs were trained against."""
    # every mode samples from the SL checkpoint the preference runs were trained against
    sl, step = bound_sl(Runs(sl=sl_run or "", dpo=dpo_run or "", reward=reward_run or "", sl_step=sl_step))
    out, batch = {}, None
    for mode in modes:
        kw = {"reward": reward_run} if mode == "explicit" else {"dpo": dpo_run} if mode == "implicit" else {}
        policy = load(sl, sl_step=step, mode=mode, num_candidates=num_candidates, reward_samples=reward_samples, **kw)
        if batch is None:
            batch = toy.make_batch(np.random.default_rng([seed, 1]), scenes, policy.sl.cfg.data.num_points)
        res = policy.decide_task_frame(batch["points"], jax.random.key(seed))
        cls = oracle_classes(np.asarray(res.action)[:, None], batch["actions"][:, 0], batch["length"])[:, 0]
        out[mode] = {"preferred": float(np.mean(cls == GOOD)), "correct": float(np.mean(cls != BAD))}
    return out
