"""Oracle annotator: a simulated human who ranks candidate actions by trying them.

``annotate(task, state, candidates, expert_action, *, rng, ...)`` executes each of the K
candidates (and the expert's action, when given) from the saved ``state``, measures the gain
of ``task.score()``, restores ``state``, and emits preference labels in the published protocol
(docs/method.md, "Preference labels"):

* points: candidate k is points ``2k`` and ``2k+1``; the expert's action, when given, is
  appended as candidate K, i.e. points ``2K`` and ``2K+1`` (``result["points"]`` holds them).
* ranking (how the annotator works): the valid candidates are sorted by gain; the best
  remaining one is ranked, again and again, until the gains of those remaining lie within
  ``tie_tol`` of each other (hard to tell apart) or ``max_ranked`` are ranked. Refused
  candidates are never ranked and lose to every ranked one.
* ranking rows, in this order: each ranked candidate against each unranked one (ranked order,
  then candidate index), then the ranked ones among themselves; code 0 (first better), or 2
  (equal) when the gains differ by at most ``tie_tol``. Rows beyond ``num_ranking_pairs``
  (default 2K, i.e. 16 for K = 8) are dropped (``result["dropped_pairs"]`` counts them);
  missing rows are padded with ``[0, 1, 0, 1]`` and code 3 (not comparable).
* expert rows: K rows ``[2K, 2K+1, 2k, 2k+1]``, code 0 when the expert's gain beats candidate
  k's by more than ``tie_tol``, 1 when it loses by more, 2 otherwise; 3 when both were refused.
  Without an expert action they are padding rows (``[0, 1, 0, 1]``, code 3).
* label noise: each row with code 0 or 1 is flipped (0 <-> 1) with probability
  ``label_noise``, drawn from ``rng``.

So P = num_ranking_pairs + K rows (24 for K = 8).
"""
from __future__ import annotations

import numpy as np

from pam_jax.sim import parallel

__all__ = ["annotate", "candidate_gains"]

PAD = (0, 1, 0, 1)


def _as_candidates(candidates) -> np.ndarray:
    try:
        c = np.array(candidates, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("candidates: expected an array of numbers with shape (K, 2, 3)") from None
    if c.ndim != 3 or c.shape[1:] != (2, 3) or c.shape[0] < 1:
        raise ValueError(f"candidates: expected shape (K, 2, 3) with K >= 1, got {c.shape}")
    return c


def candidate_gains(task, state, candidates, *, workers: int | None = None) -> tuple[np.ndarray, list]:
    """Execute each candidate from ``state`` (``task`` is restored to it after all).
    Returns (gains (K,) with NaN for refused candidates, the K StepInfos). The candidates are
    shared out over up to ``workers`` replicas of the task (:meth:`Task.replicas`), one thread
    each (:mod:`pam_jax.sim.parallel`; None: every core); the result does not depend on it."""
    infos, _ = _try_each(task, state, _as_candidates(candidates), workers)
    return _gains(infos), infos


def _gains(infos) -> np.ndarray:
    return np.array([i.gain if i.executed else np.nan for i in infos], dtype=np.float64)


def _try_each(task, state, c: np.ndarray, workers: int | None) -> tuple[list, list]:
    """-> (the StepInfo of each action tried from ``state``, the state it left)."""
    sims = task.replicas(min(len(c), parallel.resolve_workers(workers)))

    def attempt(k: int):
        sim = sims[k % len(sims)]       # candidate k's simulator; map_ordered gives it one thread
        sim.restore_state(state)
        info = sim.step(c[k])
        return info, sim.save_state()

    try:
        tried = parallel.map_ordered(attempt, range(len(c)), workers=len(sims))
    finally:
        task.restore_state(state)
    return [i for i, _ in tried], [s for _, s in tried]


def annotate(task, state, candidates, expert_action=None, *, rng=None, label_noise: float = 0.0,
             tie_tol: float | None = None, num_ranking_pairs: int | None = None,
             max_ranked: int | None = None, workers: int | None = None) -> dict:
    """Rank ``candidates`` (K, 2, 3) from ``state`` and emit published-protocol labels.
    ``workers``: the threads that try them (:func:`candidate_gains`).

    Returns a dict with ``selected_grasp_point_indices`` (P, 4) int64,
    ``grasp_point_rankings`` (P,) int64, ``gains`` (K,) (NaN = refused), ``valid`` (K,) bool,
    ``expert_gain`` (float, NaN if refused, None if no expert), ``ranked`` (candidate indices
    in rank order), ``points`` (2K or 2K+2, 3), ``score_before``, ``reasons`` (K,),
    ``dropped_pairs`` and ``after`` (the TaskState each candidate, then the expert's action,
    left: restoring one equals executing that action from ``state``)."""
    c = _as_candidates(candidates)
    k_num = len(c)
    if not (0.0 <= float(label_noise) <= 1.0):
        raise ValueError(f"label_noise: expected a probability in [0, 1], got {label_noise!r}")
    tol = float(task.tie_tol if tie_tol is None else tie_tol)
    if not np.isfinite(tol) or tol < 0:
        raise ValueError(f"tie_tol: expected a non-negative number, got {tie_tol!r}")
    n_rank = 2 * k_num if num_ranking_pairs is None else int(num_ranking_pairs)
    if rng is None:
        rng = np.random.default_rng(0)
    expert = None
    if expert_action is not None:
        expert = np.array(expert_action, dtype=np.float64)
        if expert.shape != (2, 3):
            raise ValueError(f"expert_action: expected shape (2, 3), got {expert.shape}")

    task.restore_state(state)
    score_before = task.score()
    # the expert's action is tried with the candidates, as one more
    infos, after = _try_each(task, state, c if expert is None else np.concatenate([c, expert[None]]), workers)
    tried = _gains(infos)
    gains = tried[:k_num]
    expert_gain = None if expert is None else float(tried[k_num])
    valid = np.isfinite(gains)

    # The annotator's ranking.
    remaining = sorted(np.flatnonzero(valid).tolist(), key=lambda i: (-gains[i], i))
    ranked: list[int] = []
    while len(remaining) > 1 and (max_ranked is None or len(ranked) < max_ranked):
        if gains[remaining[0]] - gains[remaining[-1]] <= tol:
            break
        ranked.append(remaining.pop(0))
    unranked = sorted(set(range(k_num)) - set(ranked))

    def code(a: int, b: int) -> int:
        if not valid[b]:
            return 0
        return 2 if abs(gains[a] - gains[b]) <= tol else 0

    rows, codes = [], []
    for a in ranked:
        for b in unranked:
            rows.append((2 * a, 2 * a + 1, 2 * b, 2 * b + 1))
            codes.append(code(a, b))
    for i, a in enumerate(ranked):
        for b in ranked[i + 1:]:
            rows.append((2 * a, 2 * a + 1, 2 * b, 2 * b + 1))
            codes.append(code(a, b))
    dropped = max(0, len(rows) - n_rank)
    rows, codes = rows[:n_rank], codes[:n_rank]
    while len(rows) < n_rank:
        rows.append(PAD)
        codes.append(3)

    e = k_num
    for b in range(k_num):
        if expert is None:
            rows.append(PAD)
            codes.append(3)
            continue
        rows.append((2 * e, 2 * e + 1, 2 * b, 2 * b + 1))
        ev, cv = np.isfinite(expert_gain), valid[b]
        if not ev and not cv:
            codes.append(3)
        elif not cv:
            codes.append(0)
        elif not ev:
            codes.append(1)
        else:
            diff = expert_gain - gains[b]
            codes.append(0 if diff > tol else 1 if diff < -tol else 2)

    codes = np.asarray(codes, dtype=np.int64)
    if label_noise > 0:
        flip = (codes <= 1) & (rng.random(len(codes)) < label_noise)
        codes = np.where(flip, 1 - codes, codes)

    points = c.reshape(-1, 3)
    if expert is not None:
        points = np.concatenate([points, expert])
    return {
        "selected_grasp_point_indices": np.asarray(rows, dtype=np.int64).reshape(-1, 4),
        "grasp_point_rankings": codes,
        "gains": gains,
        "valid": valid,
        "expert_gain": expert_gain,
        "ranked": ranked,
        "points": points,
        "score_before": float(score_before),
        "reasons": [i.reason for i in infos[:k_num]],
        "dropped_pairs": int(dropped),
        "after": after,
    }
