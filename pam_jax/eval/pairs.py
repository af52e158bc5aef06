"""Held-out agreement of a learned reward with the annotator: pair accuracy on a finetune split.

For each held-out state, every candidate (the K sampled ones and the annotator's own action) is
scored by the implicit reward (a DPO run against its SL reference, M Monte-Carlo samples on the
least-noisy timesteps, as at selection time) or by the explicit reward head; a labelled pair
(code 0 or 1) counts as correct when the preferred action scores higher (a tie counts half). Pairs between two
sampled candidates ("candidates") are what reward-guided selection decides between; pairs with
the annotator's action ("vs annotator") are reported apart. Chance is 50%.
"""
from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from pam_jax import diffusion, preference
from pam_jax.data.pipeline import eval_batches
from pam_jax.data.sources import split_sizes
from pam_jax.models import kernels
from pam_jax.models.policy import normalize
from pam_jax.policy import load
from pam_jax.select import implicit_scores


def make_scorer(mode: str, sl_run, score_run, samples: int | None = None, noise: str | None = None, *,
                sl_step: int | None = None):
    """-> (score(points, candidates, key) -> (B, N) numpy, the SL config); inputs in the task frame,
    the clouds checked. The SL checkpoint is the one the scoring run was trained against.
    The implicit reward uses the scoring (DPO) run's settings (beta, timesteps; M = `samples`
    and the Monte-Carlo noise `noise` (select.REWARD_NOISE), or their stored values)."""
    if mode not in ("implicit", "explicit"):
        raise ValueError(f"mode must be 'implicit' or 'explicit', got {mode!r}")
    policy = load(sl_run, mode=mode, reward_samples=samples, reward_noise=noise, sl_step=sl_step,
                  **{"dpo" if mode == "implicit" else "reward": score_run})
    cfg, graphdef, ref_params, norm = policy.sl.cfg, policy.sl.graphdef, policy.ref_params, policy.norm
    score_graphdef, score_params = policy.scorer.graphdef, policy.score_params
    scfg = policy.selection
    schedule = diffusion.schedule_from_config(cfg.diffusion)
    t_max = diffusion.timestep_limit(scfg.reward_timestep_frac, cfg.diffusion.num_train_timesteps)
    center, scale = np.asarray(norm.center, np.float32), np.asarray(norm.scale, np.float32)

    def score(ref_params, score_params, points, candidates, key):
        pts, x0 = normalize(points, center, scale), normalize(candidates, center, scale)
        if mode == "explicit":
            rm = nnx.merge(score_graphdef, score_params)
            return rm.score(x0, rm.encode(pts))
        ref, policy = nnx.merge(graphdef, ref_params), nnx.merge(graphdef, score_params)
        return implicit_scores(policy, policy.encode(pts), ref, ref.encode(pts), schedule, x0, key,
                               samples=scfg.reward_samples, t_max=t_max, beta=scfg.beta, noise=scfg.reward_noise)

    score = jax.jit(kernels.traced(score, scfg.runtime))
    return lambda pts, cands, key: np.asarray(score(ref_params, score_params, policy.check(pts), cands, key)), cfg


def annotator_mask(candidates) -> np.ndarray:
    """(B, N, 2, 3) DPO candidates -> (B, N) bool: which are the annotator's own action.

    `preference.dpo_batch` appends the annotator's action as the last candidate; a data set that
    also stores it among the candidate points (the simulated collection does) names it a second
    time, so it is found by its coordinates, not by its index."""
    c = np.asarray(candidates)
    return np.all(np.isclose(c, c[:, -1:]), axis=(2, 3))


def count_pairs(scores, pairs, codes, annotator, right: dict, total: dict) -> None:
    """Add one batch: scores (B, N), pairs (B, P, 2), codes (B, P); `annotator` (B, N) bool marks
    the annotator's own action. A pair is right when its preferred member scores higher; a tie
    counts half."""
    for s in range(len(scores)):
        for (a, c), code in zip(pairs[s], codes[s]):
            if code not in (preference.FIRST_BETTER, preference.SECOND_BETTER):
                continue
            kind = "vs_annotator" if annotator[s][a] or annotator[s][c] else "candidates"
            diff = (scores[s, a] - scores[s, c]) * (1.0 if code == preference.FIRST_BETTER else -1.0)
            total[kind] += 1
            right[kind] += 1.0 if diff > 0 else 0.5 if diff == 0 else 0.0


def held_out_batches(dataset_dir, *, num_points: int = 0, splits=("validation", "test"), batch_size: int = 16,
                     seed: int = 0):
    """-> (split, batch) over the held-out `splits` of a finetune dataset, in record order, with
    `num_points` points per cloud (an SL run's data.num_points; 0 = the task's); each batch holds
    record_index."""
    overrides = {"num_points": num_points} if num_points > 0 else {}
    sizes = split_sizes(dataset_dir)
    for split in splits:
        if sizes.get(split):
            for batch in eval_batches(dataset_dir, split=split, batch_size=batch_size, seed=seed, **overrides):
                yield split, batch


def pair_accuracy(sl_run, score_run, dataset_dir, *, mode: str = "implicit",
                  splits=("validation", "test"), samples: int | None = None, batch_size: int = 16, seed: int = 0,
                  noise: str | None = None, scorer=None) -> dict:
    """-> {"candidates": acc, "vs_annotator": acc, "pairs": {...counts}, "states": n} over the
    held-out `splits` (whole episodes the preference stages never trained on); an accuracy is
    None when its kind has no labelled pair. `scorer`: a (score, cfg) that `make_scorer` built
    already (then the runs, `samples` and `noise` are not read)."""
    if mode not in ("implicit", "explicit"):
        raise ValueError(f"mode must be 'implicit' or 'explicit', got {mode!r}")
    score, cfg = scorer or make_scorer(mode, sl_run, score_run, samples, noise)
    right = {"candidates": 0.0, "vs_annotator": 0.0}
    total = {"candidates": 0, "vs_annotator": 0}
    states = 0
    key = jax.random.key(seed)
    batches = held_out_batches(dataset_dir, num_points=cfg.data.num_points, splits=splits,
                               batch_size=batch_size, seed=seed)
    for i, (_, batch) in enumerate(batches):
        b = preference.dpo_batch(batch)
        r = score(b["points"], b["candidates"], jax.random.fold_in(key, i))
        count_pairs(r, b["pairs"], b["rankings"], annotator_mask(b["candidates"]), right, total)
        states += len(r)
    acc = {kind: (right[kind] / total[kind] if total[kind] else None) for kind in total}
    return {**acc, "pairs": total, "states": states, "mode": mode, "splits": list(splits)}
