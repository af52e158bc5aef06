"""Simulated data in the published DeformPAM layout: expert episodes and preference rounds.

Two writers turn the simulated tasks (:mod:`pam_jax.sim`) into sample folders that the one
TFDS builder (``pam_jax.data_builders.deformpam``, :func:`pam_jax.data.build.build`) reads exactly
like the released data:

* :func:`write_expert_episodes` -> ``<data task>_supervised`` samples: one per state of
  scripted-expert episodes (cloud, executed action, all of the expert's alternatives);
* :func:`write_preference_round` -> ``<data task>_finetune`` samples: one per state where K
  candidates (the policy's, in real use) were ranked by the oracle annotator.

Task names. The simulator says ``rope`` / ``granular`` / ``cloth``; the data side (and the
published configs) say ``rope`` / ``nut`` / ``tshirt_short``. Both writers accept either name
and return ``data_task``, the name to pass to ``build(out_root, task=data_task, ...)``
(the registry, :mod:`pam_jax.tasks`, maps the names).

Frame (what is written). The cloud is written exactly as :meth:`Task.observe` returns it: the
simulator's world frame, which is the table frame of the real data (metres, table plane
z = 0, +z up), *not* centred and *not* scaled; every action, alternative and candidate point is
written in the same frame. This is what the published ``processed_begin`` clouds are and what
:func:`pam_jax.data.layout.write_sample` documents: the task frame (bounding-box centring of
the cleaned cloud, xy multiplied by the task factor, 1.75 for rope and T-shirt, 3.0 for nuts)
is produced at load time by :func:`pam_jax.pointcloud.preprocess`, for the cloud and its
actions together. Writing a centred or scaled cloud would apply the xy factor twice. The
only difference from the simulator's values is the float16 storage of the cloud (as in the
published files, about 0.1 mm at 0.45 m); actions and candidates are stored in YAML at full
precision. A policy deployed in the simulator sees the same world-frame cloud and returns
world-frame actions, so ``candidates_fn`` below works in this frame too.

The annotator's own action. The preference protocol (METHOD.md, :mod:`pam_jax.sim.oracle`,
:func:`pam_jax.preference.dpo_batch`) names the annotator's action as candidate K, i.e. points
2K and 2K+1, one past the K sampled candidates. The layout reader and writer accept those two
indices, and the pipeline maps them onto the candidate that ``dpo_batch`` appends from
``actions[:, 0]``. With ``expert_in_candidates=False`` exactly 2K points are stored (the
published form). By default (``True``) the expert's action is *also* stored as a last
candidate (2K + 2 points), which keeps the samples self-contained for tools that read only
``pose_virtual``; ``dpo_batch`` then sees it twice (the appended copy is named by no pair).

Every sample is written with :func:`pam_jax.data.layout.write_sample`, which assembles it
under a hidden name and renames it into place, so a crash never leaves a half sample that
the builder would read. Each sample also carries a ``sim`` block in its metadata (seed, step,
scores, gains; ignored by the builder) for inspection.
"""
from __future__ import annotations

import pathlib
import time
from typing import Callable

import numpy as np

from pam_jax import tasks as tasks_lib
from pam_jax.data import layout
from pam_jax.sim import make_task
from pam_jax.sim.experts import expert_actions
from pam_jax.sim.oracle import annotate, candidate_gains

__all__ = ["write_expert_episodes", "write_preference_round"]

EXECUTE_MODES = ("random", "first", "best", "expert")
IF_EXISTS = ("error", "skip", "overwrite")
NAMESPACE = "pam_jax"

_RNG_EXPERT = 0x5E1          # stream tags for np.random.default_rng([episode_seed, tag])
_RNG_PREFERENCE = 0xF1


# --------------------------------------------------------------------------- helpers


def _check_count(v, name: str, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
    return int(v)


def _open_task(task: str, num_points):
    name = tasks_lib.sim_task_name(task)
    if num_points is not None:
        _check_count(num_points, "num_points", 1)
    t = make_task(name, obs_points=num_points)
    spec = tasks_lib.get_task(name)
    # The two sides must agree on the primitive and on the pose rows, or the builder would
    # filter the samples out or read the wrong rows.
    if t.action_type not in spec.action_types or tuple(t.pose_rows) != tuple(spec.rows):
        raise RuntimeError(f"sim task {name!r} (action {t.action_type!r}, rows {t.pose_rows}) "
                           f"does not match data task {spec.name!r} ({spec.action_types}, "
                           f"rows {spec.rows})")
    return t, spec


def _sample_id(data_task: str, kind: str, episode: int, step: int) -> str:
    return f"{data_task}_{kind}_ep{episode:05d}_step{step:02d}"


def _exists(out_root, sample_id: str, if_exists: str) -> bool:
    """True when the sample is already there and should be skipped."""
    if not (out_root / sample_id).exists():
        return False
    if if_exists == "skip":
        return True
    if if_exists == "error":
        raise FileExistsError(f"{out_root / sample_id}: sample exists "
                              "(pass if_exists='skip' to keep it or 'overwrite' to replace it)")
    return False


def _f(x) -> float | None:
    """A YAML-friendly float (None for NaN/inf/None)."""
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def _progress(total: int, desc: str, unit: str, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False)


def _check_candidates(c, state_desc: str) -> np.ndarray:
    try:
        a = np.array(c, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"candidates_fn at {state_desc}: expected an array of numbers with shape "
                         "(K, 2, 3)") from None
    if a.ndim != 3 or a.shape[1:] != (2, 3) or a.shape[0] < 1:
        raise ValueError(f"candidates_fn at {state_desc}: expected shape (K, 2, 3) with K >= 1, "
                         f"got {a.shape}")
    return a


# --------------------------------------------------------------------------- supervised


def write_expert_episodes(task: str, out_root, *, episodes: int, seed: int = 0,
                          max_alternatives: int = 10, num_points: int | None = None,
                          max_steps: int | None = None, if_exists: str = "error",
                          progress: bool = True) -> dict:
    """Run scripted-expert episodes and write every state as a supervised sample.

    Episode ``i`` (``episode_idx = seed + i``) starts from ``reset(seed + i)``; at each step the
    task is observed (``num_points`` points, default the task's 3000 / 3500), the expert gives
    up to ``max_alternatives`` alternatives (M, 2, 3), the first is executed, and the state is
    written as ``<out_root>/<data_task>_supervised_ep<episode>_step<t>/`` with the cloud in the
    world (= table) frame (see the module docstring), ``action_poses`` from the executed action
    and ``multiple_action_poses`` from all M alternatives (executed one first). An episode ends
    at success, at the task's step limit, or after ``max_steps`` steps. The state reached at the
    end is not written (it has no action). ``if_exists``: 'error' (default), 'skip' (keep the
    existing sample; the simulation is deterministic, so a rerun resumes) or 'overwrite'.

    Returns ``{"task", "data_task", "kind", "out_root", "samples", "skipped_existing",
    "episodes", "successes", "success_rate", "final_scores", "steps", "write_seconds",
    "write_seconds_per_sample", "sim_seconds", "records"}``; ``records`` has one dict per state
    (sample_id, episode_idx, step, action (2, 3), alternatives (M, 2, 3), score_before,
    score_after, written)."""
    episodes = _check_count(episodes, "episodes")
    seed = _check_count(seed, "seed")
    _check_count(max_alternatives, "max_alternatives", 1)
    if max_steps is not None:
        _check_count(max_steps, "max_steps", 1)
    if if_exists not in IF_EXISTS:
        raise ValueError(f"if_exists: expected one of {IF_EXISTS}, got {if_exists!r}")
    out_root = pathlib.Path(out_root)
    t, spec = _open_task(task, num_points)
    out_root.mkdir(parents=True, exist_ok=True)
    limit = t.step_limit if max_steps is None else min(t.step_limit, max_steps)

    records, final_scores, steps = [], [], []
    written = skipped = successes = 0
    write_s = sim_s = 0.0
    bar = _progress(episodes, f"{t.name} expert episodes", "episode", progress)
    try:
        for i in range(episodes):
            ep = seed + i
            t0 = time.perf_counter()
            t.reset(ep)
            rng = np.random.default_rng([ep, _RNG_EXPERT])
            sim_s += time.perf_counter() - t0
            while not t.done and t.steps_taken < limit:
                t0 = time.perf_counter()
                step = t.steps_taken
                cloud = t.observe()
                alts = expert_actions(t, rng, max_alternatives)
                info = t.step(alts[0])
                sim_s += time.perf_counter() - t0
                sid = _sample_id(spec.name, "supervised", ep, step)
                rec = {"sample_id": sid, "episode_idx": ep, "step": step,
                       "action": np.asarray(info.action, np.float64), "alternatives": alts,
                       "score_before": info.score_before, "score_after": info.score_after,
                       "executed": bool(info.executed), "written": False}
                records.append(rec)
                if _exists(out_root, sid, if_exists):
                    skipped += 1
                    continue
                t0 = time.perf_counter()
                layout.write_sample(
                    out_root, sid, points=cloud, episode_idx=ep, action_type=t.action_type,
                    action=info.action, multiple_actions=alts, rows=t.pose_rows,
                    namespace=NAMESPACE, tag=f"sim_{t.name}_supervised",
                    overwrite=(if_exists == "overwrite"),
                    extra_metadata={"sim": {
                        "task": t.name, "seed": ep, "step": step, "frame": "world",
                        "score_before": _f(info.score_before), "score_after": _f(info.score_after),
                        "executed": bool(info.executed), "reason": info.reason}})
                write_s += time.perf_counter() - t0
                written += 1
                rec["written"] = True
            ok = t.success()
            successes += int(ok)
            final_scores.append(float(t.score()))
            steps.append(int(t.steps_taken))
            bar.update(1)
            bar.set_postfix(samples=written, success=f"{successes}/{i + 1}")
    finally:
        bar.close()
    return {
        "task": t.name, "data_task": spec.name, "kind": "supervised", "out_root": str(out_root),
        "samples": written, "skipped_existing": skipped, "episodes": episodes,
        "successes": successes, "success_rate": successes / episodes if episodes else 0.0,
        "final_scores": final_scores, "steps": steps,
        "write_seconds": write_s,
        "write_seconds_per_sample": write_s / written if written else None,
        "sim_seconds": sim_s, "records": records,
    }


# --------------------------------------------------------------------------- preference


def _choose(mode: str, labels: dict, rng: np.random.Generator) -> int:
    """Index of the candidate to execute, -1 for the expert's action."""
    valid = np.flatnonzero(labels["valid"])
    if mode == "expert" or len(valid) == 0:
        return -1
    if mode == "first":
        return int(valid[0])
    if mode == "best":
        g = labels["gains"]
        return int(valid[np.argmax(g[valid])])
    return int(rng.choice(valid))


def _execute_unrecorded(t, mode: str, cands: np.ndarray, rng: np.random.Generator,
                        max_alternatives: int, workers: int | None = None) -> np.ndarray:
    """The action executed at a rollout step that is not recorded (no oracle ranking): the
    candidate ``mode`` would pick among those the task accepts, else the expert's."""
    if mode != "expert":
        ok = np.flatnonzero([t.check_action(c).ok for c in cands])
        if len(ok):
            if mode == "first":
                return cands[ok[0]]
            if mode == "random":
                return cands[int(rng.choice(ok))]
            gains, _ = candidate_gains(t, t.save_state(), cands[ok], workers=workers)
            return cands[ok[int(np.argmax(np.where(np.isfinite(gains), gains, -np.inf)))]]
    return expert_actions(t, rng, max_alternatives)[0]


def write_preference_round(task: str, out_root, *, states: int,
                           candidates_fn: Callable[[np.ndarray], np.ndarray], seed: int = 0,
                           label_noise: float = 0.0, max_alternatives: int = 10,
                           num_points: int | None = None, warmup_steps: int = 0,
                           steps_per_episode: int | None = 10, stride: int | None = None,
                           max_steps: int | None = None, execute: str = "random",
                           expert_in_candidates: bool = True, if_exists: str = "error",
                           progress: bool = True, workers: int | None = None) -> dict:
    """Collect ``states`` preference-labelled states and write each as a finetune sample.

    Episodes ``e = 0, 1, ...`` (``episode_idx = seed + e``) start from ``reset(seed + e)``
    followed by 0..``warmup_steps`` expert steps (drawn per episode; default none). The policy
    then rolls out over the whole horizon (the task's step limit, or ``max_steps``): at every
    step it is asked for K candidates, ``candidates_fn(cloud (N, 3)) -> (K, 2, 3)``, in the
    world frame (the trained policy in real use), and one of them is executed (``execute``
    below). ``candidates_fn`` may instead return a pair (as sampled, as executed), both
    (K, 2, 3): the policy's pick snapping. The oracle then tries and ranks the candidates as
    executed, the sample stores them as sampled (what the preference stage learns from), and
    the rollout executes them as executed. Every ``stride``-th step, from a random offset in ``[0, stride)`` drawn per episode,
    the state is also recorded, until ``steps_per_episode`` states of the episode are: by
    default about 10 states per episode spread over the whole horizon, as in the paper
    (``stride=None`` = ceil(horizon / ``steps_per_episode``); ``steps_per_episode=None`` with
    a stride: every stride-th step to the end). The old early-horizon behaviour is
    ``warmup_steps=3, steps_per_episode=4, stride=1``: 0-3 expert steps, then 4 consecutive
    states.

    At a recorded state the expert gives its alternatives (the first is the annotator's
    action), the state is saved and the oracle (:func:`pam_jax.sim.oracle.annotate`,
    ``label_noise``) tries and ranks the candidates with the expert appended as candidate K.
    The sample holds the cloud, the candidate points (see the module docstring for
    ``expert_in_candidates``), the P = 3K pair rows and codes, the expert's action as
    ``action_poses`` and its alternatives as ``multiple_action_poses``. The action executed to
    move on, as on the robot (``execute``): 'random' valid candidate (default), 'first' valid
    candidate, 'best' by the oracle's gain, or 'expert'; the expert when no candidate is valid.
    An episode ends at success, at the end of the horizon, or once it has given its states.
    ``workers``: the threads the oracle tries candidates on (:mod:`pam_jax.sim.parallel`; None:
    every core); the samples do not depend on it.

    Returns ``{"task", "data_task", "kind", "out_root", "samples", "skipped_existing",
    "states", "episodes" (those that gave states), "episodes_run", "successes" (of those
    episodes, at their end), "rollout_steps" (policy steps run), "stride", "horizon",
    "label_counts" (codes of the written rows), "dropped_pairs", "write_seconds",
    "write_seconds_per_sample", "annotate_seconds", "records"}``; each record holds
    sample_id, episode_idx, step, candidates (K, 2, 3), expert (2, 3), candidate_points (the
    stored (2K[+2], 3)), pair_indices (P, 4), rankings (P,), gains, expert_gain, executed."""
    states = _check_count(states, "states")
    seed = _check_count(seed, "seed")
    _check_count(max_alternatives, "max_alternatives", 1)
    _check_count(warmup_steps, "warmup_steps")
    if steps_per_episode is not None:
        _check_count(steps_per_episode, "steps_per_episode", 1)
    if stride is not None:
        _check_count(stride, "stride", 1)
    if steps_per_episode is None and stride is None:
        raise ValueError("steps_per_episode, stride: give at least one (states per episode or steps between them)")
    if max_steps is not None:
        _check_count(max_steps, "max_steps", 1)
    if not callable(candidates_fn):
        raise ValueError("candidates_fn: expected a callable cloud (N, 3) -> (K, 2, 3)")
    if not (np.isfinite(label_noise) and 0.0 <= float(label_noise) <= 1.0):
        raise ValueError(f"label_noise: expected a probability in [0, 1], got {label_noise!r}")
    if execute not in EXECUTE_MODES:
        raise ValueError(f"execute: expected one of {EXECUTE_MODES}, got {execute!r}")
    if if_exists not in IF_EXISTS:
        raise ValueError(f"if_exists: expected one of {IF_EXISTS}, got {if_exists!r}")
    out_root = pathlib.Path(out_root)
    t, spec = _open_task(task, num_points)
    out_root.mkdir(parents=True, exist_ok=True)

    horizon = t.step_limit if max_steps is None else min(t.step_limit, max_steps)
    every = stride if stride is not None else max(1, -(-horizon // steps_per_episode))
    records = []
    written = skipped = successes = dropped = episodes_used = rollout_steps = 0
    counts = {c: 0 for c in layout.RANKING_CODES}
    write_s = annotate_s = 0.0
    ep_count = 0
    max_episodes = 10 * states + 10      # guard: every episode could end during its warm-up
    bar = _progress(states, f"{t.name} preference states", "state", progress)
    try:
        while len(records) < states and ep_count < max_episodes:
            ep = seed + ep_count
            ep_count += 1
            t.reset(ep)
            rng = np.random.default_rng([ep, _RNG_PREFERENCE])
            for _ in range(int(rng.integers(0, warmup_steps + 1))):
                if t.done:
                    break
                t.step(expert_actions(t, rng, max_alternatives)[0])
            offset = t.steps_taken + (int(rng.integers(0, every)) if every > 1 else 0)
            in_ep = 0
            while (not t.done and t.steps_taken < horizon and len(records) < states
                   and (steps_per_episode is None or in_ep < steps_per_episode)):
                step = t.steps_taken
                cloud = t.observe()
                out = candidates_fn(cloud.copy())
                raw, done_as = out if isinstance(out, tuple) else (out, out)
                cands = _check_candidates(raw, f"episode {ep} step {step}")
                acts = _check_candidates(done_as, f"episode {ep} step {step} (as executed)")
                if acts.shape != cands.shape:
                    raise ValueError(f"candidates_fn at episode {ep} step {step}: the executed candidates' shape "
                                     f"{acts.shape} differs from the candidates' {cands.shape}")
                rollout_steps += 1
                if step < offset or (step - offset) % every:
                    t.step(_execute_unrecorded(t, execute, acts, rng, max_alternatives, workers))
                    continue
                k = len(cands)
                alts = expert_actions(t, rng, max_alternatives)
                expert = alts[0]
                state = t.save_state()
                t0 = time.perf_counter()
                lab = annotate(t, state, acts, expert, rng=rng, label_noise=label_noise, workers=workers)
                annotate_s += time.perf_counter() - t0
                rows = lab["selected_grasp_point_indices"].copy()
                codes = lab["grasp_point_rankings"].copy()
                points = cands.reshape(-1, 3)
                if expert_in_candidates:
                    points = np.concatenate([points, expert])           # candidate K = expert
                dropped += int(lab["dropped_pairs"])
                choice = _choose(execute, lab, rng)
                sid = _sample_id(spec.name, "finetune", ep, step)
                rec = {"sample_id": sid, "episode_idx": ep, "step": step, "candidates": cands, "executed_candidates": acts,
                       "expert": expert, "alternatives": alts, "candidate_points": points,
                       "pair_indices": rows, "rankings": codes, "gains": lab["gains"],
                       "expert_gain": lab["expert_gain"], "ranked": list(lab["ranked"]),
                       "executed": choice, "written": False}
                records.append(rec)
                if not _exists(out_root, sid, if_exists):
                    t0 = time.perf_counter()
                    layout.write_sample(
                        out_root, sid, points=cloud, episode_idx=ep, action_type=t.action_type,
                        action=expert, multiple_actions=alts, rows=t.pose_rows,
                        candidates=points, pair_indices=rows, rankings=codes,
                        namespace=NAMESPACE, tag=f"sim_{t.name}_finetune",
                        overwrite=(if_exists == "overwrite"),
                        extra_metadata={"sim": {
                            "task": t.name, "seed": ep, "step": step, "frame": "world",
                            "num_candidates": k, "expert_in_candidates": bool(expert_in_candidates),
                            "score": _f(lab["score_before"]),
                            "gains": [_f(g) for g in lab["gains"]],
                            "expert_gain": _f(lab["expert_gain"]),
                            "ranked": [int(r) for r in lab["ranked"]],
                            "label_noise": float(label_noise),
                            "executed": int(choice)}})
                    write_s += time.perf_counter() - t0
                    written += 1
                    rec["written"] = True
                    for c in codes.tolist():
                        counts[int(c)] += 1
                else:
                    skipped += 1
                # the executed action's outcome is the one the oracle already simulated
                t.restore_state(lab["after"][k if choice < 0 else choice])
                in_ep += 1
                bar.update(1)
                bar.set_postfix(episode=ep)
            if in_ep:
                episodes_used += 1
                successes += int(t.success())
    finally:
        bar.close()
    return {
        "task": t.name, "data_task": spec.name, "kind": "finetune", "out_root": str(out_root),
        "samples": written, "skipped_existing": skipped, "states": len(records),
        "episodes": episodes_used, "episodes_run": ep_count, "successes": successes,
        "rollout_steps": rollout_steps, "stride": every, "horizon": horizon, "label_counts": counts,
        "dropped_pairs": dropped, "write_seconds": write_s,
        "write_seconds_per_sample": write_s / written if written else None,
        "annotate_seconds": annotate_s, "records": records,
    }
