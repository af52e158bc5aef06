"""Preference labels and losses (DeformPAM stage 2) and the implicit reward (stage 3).

Ranking codes (published format): 0 = first better, 1 = second better, 2 = equal,
3 = not comparable. Only codes 0 and 1 enter a DPO/CPL/Bradley-Terry term; code 2 may feed the
optional SFT term; code 3 is ignored everywhere.

Per-action errors e_m(a) = mean over points and coordinates of (eps - eps_m(x_t(a), t, s))^2 for
m in {policy, reference}, computed with the same t and eps for both models.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

FIRST_BETTER, SECOND_BETTER, EQUAL, NOT_COMPARABLE = 0, 1, 2, 3
LOSSES = ("deformpam", "diffusion_dpo", "cpl")


# ---------------------------------------------------------------------------------------------
# Pairs from the published rankings (host side)

def pairs_from_rankings(indices, rankings, num_candidates: int):
    """(P, 4) point indices + (P,) codes -> candidate pairs (P, 2) int32 and codes (P,) int32.

    Row [p1_a, p1_b, p2_a, p2_b] indexes candidate *points*; points 2k and 2k+1 form candidate k.
    `num_candidates` counts the candidates the indices may name (the K sampled ones, plus the
    annotator's own action when it is appended as candidate K). A row whose points do not form a
    candidate, or name one out of range, or compares a candidate with itself, is kept as code 3
    (not comparable) with a safe index, so array shapes never change.
    """
    idx = np.asarray(indices)
    codes = np.asarray(rankings)
    if idx.ndim != 2 or idx.shape[1] != 4:
        raise ValueError(f"selected_grasp_point_indices: expected shape (P, 4), got {idx.shape}")
    if codes.shape != (idx.shape[0],):
        raise ValueError(f"grasp_point_rankings: expected shape ({idx.shape[0]},), got {codes.shape}")
    if not np.all(np.isin(codes, (0, 1, 2, 3))):
        raise ValueError(f"grasp_point_rankings: codes must be 0..3, got {sorted(set(codes.tolist()))}")
    idx = idx.astype(np.int64)
    first, second = idx[:, 0] // 2, idx[:, 2] // 2
    well_formed = (
        (idx[:, 0] % 2 == 0) & (idx[:, 1] == idx[:, 0] + 1)
        & (idx[:, 2] % 2 == 0) & (idx[:, 3] == idx[:, 2] + 1)
        & (idx.min(axis=1) >= 0) & (np.maximum(first, second) < num_candidates) & (first != second)
    )
    codes = np.where(well_formed, codes, NOT_COMPARABLE).astype(np.int32)
    pairs = np.where(well_formed[:, None], np.stack([first, second], 1), 0).astype(np.int32)
    return pairs, codes


def orient(err_1, err_2, rankings):
    """(winner, loser) values for each pair (garbage where the code is not 0/1)."""
    second_wins = rankings == SECOND_BETTER
    return jnp.where(second_wins, err_2, err_1), jnp.where(second_wins, err_1, err_2)


def _valid(rankings):
    return (rankings == FIRST_BETTER) | (rankings == SECOND_BETTER)


def _masked_mean(x, mask):
    mask = mask.astype(x.dtype)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _delta(err_policy_1, err_ref_1, err_policy_2, err_ref_2, rankings):
    pw, pl = orient(err_policy_1, err_policy_2, rankings)
    rw, rl = orient(err_ref_1, err_ref_2, rankings)
    return (pw - rw) - (pl - rl)


def _beta(beta, weight, like):
    b = jnp.asarray(beta, jnp.float32)
    if weight is not None:
        b = b * jnp.asarray(weight, jnp.float32).reshape(weight.shape + (1,) * (like.ndim - weight.ndim))
    return b


# ---------------------------------------------------------------------------------------------
# Losses (all take (B, P) arrays and return the scalar mean over valid pairs; 0 if none)

def deformpam_dpo_loss(err_policy_1, err_ref_1, err_policy_2, err_ref_2, rankings, beta, *, weight=None):
    """DeformPAM's loss: -sigmoid(-beta * Delta), averaged over pairs with code 0 or 1.

    Delta = [e_theta(a_w) - e_ref(a_w)] - [e_theta(a_l) - e_ref(a_l)]. `weight` (B,) multiplies
    beta per state (the min-SNR weight).
    """
    d = _delta(err_policy_1, err_ref_1, err_policy_2, err_ref_2, rankings)
    return _masked_mean(-jax.nn.sigmoid(-_beta(beta, weight, d) * d), _valid(rankings))


def diffusion_dpo_loss(err_policy_1, err_ref_1, err_policy_2, err_ref_2, rankings, beta, *, weight=None):
    """Diffusion-DPO (Wallace et al. 2023): -log sigmoid(-beta * Delta) over valid pairs."""
    d = _delta(err_policy_1, err_ref_1, err_policy_2, err_ref_2, rankings)
    return _masked_mean(-jax.nn.log_sigmoid(-_beta(beta, weight, d) * d), _valid(rankings))


def cpl_loss(err_policy_1, err_policy_2, rankings):
    """CPL, no reference: -log(exp(-e_w) / (exp(-e_w) + exp(-e_l))) = -log sigmoid(e_l - e_w)."""
    w, l = orient(err_policy_1, err_policy_2, rankings)
    return _masked_mean(-jax.nn.log_sigmoid(l - w), _valid(rankings))


def bradley_terry_loss(reward_1, reward_2, rankings):
    """2-way softmax cross-entropy for an explicit reward: -log sigmoid(r_w - r_l) over valid pairs."""
    w, l = orient(reward_1, reward_2, rankings)
    return _masked_mean(-jax.nn.log_sigmoid(w - l), _valid(rankings))


def sft_equal_loss(err_policy_1, err_policy_2, rankings):
    """SFT term on "equal" pairs (code 2): (e(a1) + e(a2)) / 2, averaged over those pairs."""
    return _masked_mean((err_policy_1 + err_policy_2) / 2, rankings == EQUAL)


def min_snr_weight(snr, gamma: float = 5.0):
    """min(gamma / SNR, 1) for epsilon prediction."""
    return jnp.minimum(gamma / snr, 1.0)


def preference_loss(kind: str, err_policy_1, err_ref_1, err_policy_2, err_ref_2, rankings, beta, *,
                    weight=None, sft_weight: float = 0.0):
    if kind == "deformpam":
        loss = deformpam_dpo_loss(err_policy_1, err_ref_1, err_policy_2, err_ref_2, rankings, beta, weight=weight)
    elif kind == "diffusion_dpo":
        loss = diffusion_dpo_loss(err_policy_1, err_ref_1, err_policy_2, err_ref_2, rankings, beta, weight=weight)
    elif kind == "cpl":
        loss = cpl_loss(err_policy_1, err_policy_2, rankings)
    else:
        raise ValueError(f"unknown preference loss {kind!r}: expected one of {LOSSES}")
    if sft_weight:
        loss = loss + sft_weight * sft_equal_loss(err_policy_1, err_policy_2, rankings)
    return loss


def implicit_reward(err_policy, err_ref, beta):
    """r(s, a) = -beta * mean over the last axis (the M Monte-Carlo samples) of e_theta - e_ref."""
    return -beta * jnp.mean(err_policy - err_ref, axis=-1)


# ---------------------------------------------------------------------------------------------
# Finetune batches -> DPO batches (host side)

def dpo_batch(batch: dict, *, annotator_pairs: bool = True) -> dict:
    """A finetune batch of the data pipeline -> the DPO batch of `train/preference_steps.py`.

    candidate_points (B, Kp, 3) hold K = Kp/2 candidates; the annotator's own action
    (`actions[:, 0]`) is appended as candidate K, i.e. points 2K and 2K+1, which is how the
    expert-vs-candidate comparisons name it. Pairs naming padded or invalid points become code 3,
    and so do the pairs naming the annotator's action when `annotator_pairs` is False (only the
    comparisons among the sampled candidates are trained on), whether the pairs name the
    appended copy or a copy stored among the candidate points.
    """
    cp = np.asarray(batch["candidate_points"], np.float32)
    b, kp, _ = cp.shape
    if kp % 2:
        raise ValueError(f"candidate_points: expected an even number of points (pairs), got {kp}")
    k = kp // 2
    annotator = np.asarray(batch["actions"], np.float32)[:, :1]
    cands = np.concatenate([cp.reshape(b, k, 2, 3), annotator], axis=1)
    valid_pts = np.asarray(batch.get("candidate_valid", np.ones((b, kp), bool)), bool)
    valid_cand = np.concatenate([valid_pts.reshape(b, k, 2).all(-1), np.ones((b, 1), bool)], axis=1)
    if not annotator_pairs:
        # the annotator's action wherever it is: the appended copy, and a stored copy (simulated
        # samples keep the expert as their last candidate, which the pairs then name)
        valid_cand &= ~np.all(np.abs(cands - annotator) <= 1e-6, axis=(-1, -2))
    pairs, codes = [], []
    for i in range(b):
        pr, cd = pairs_from_rankings(batch["pair_indices"][i], batch["rankings"][i], k + 1)
        ok = valid_cand[i][pr[:, 0]] & valid_cand[i][pr[:, 1]]
        pairs.append(pr)
        codes.append(np.where(ok, cd, NOT_COMPARABLE).astype(np.int32))
    return {"points": np.asarray(batch["points"], np.float32), "candidates": cands.astype(np.float32),
            "pairs": np.stack(pairs), "rankings": np.stack(codes),
            "action_mask": np.asarray(batch["action_mask"], np.float32)}


class PairBatches:
    """Wraps a finetune data source (TrainData) so that it yields DPO batches."""

    def __init__(self, data, *, annotator_pairs: bool = True):
        self.data, self.annotator_pairs = data, annotator_pairs

    def batch(self, step: int) -> dict:
        return dpo_batch(self.data.batch(step), annotator_pairs=self.annotator_pairs)

    def get_state(self) -> dict:
        return self.data.get_state()

    def set_state(self, state: dict) -> None:
        self.data.set_state(state)

    def norm_stats(self):
        return self.data.norm_stats()

    @property
    def num_records(self) -> int:
        return self.data.num_records
