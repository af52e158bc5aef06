"""Simulated DeformPAM tasks on MuJoCo: rope shaping, granular pile shaping, cloth unfolding.

Public API::

    from pam_jax.sim import make_task, expert_actions, annotate
    task = make_task("rope")          # "rope" | "granular" | "cloth"
    task.reset(seed=0)
    cloud = task.observe()            # (~3000, 3) float32, world frame, table at z = 0
    info = task.step(action)          # action (2, 3) -> StepInfo
    task.metric(), task.score(), task.success(), task.step_limit
    s = task.save_state(); task.restore_state(s)
    task.action_type, task.action_to_poses(action)   # published (4, 6) layout
    alts = expert_actions(task, rng)                  # (M, 2, 3), first = the one to execute
    labels = annotate(task, s, candidates, expert_action, rng=rng)

See :mod:`pam_jax.sim.base` for the frame convention and the gripper model, and each task
module for its object, primitive, metric and success threshold.
"""
from __future__ import annotations

import difflib

from pam_jax.sim.base import ActionCheck, StepInfo, Task, TaskState

__all__ = ["TASK_NAMES", "make_task", "Task", "StepInfo", "ActionCheck", "TaskState",
           "expert_actions", "annotate", "candidate_gains"]

TASK_NAMES = ("rope", "granular", "cloth")


def make_task(name: str, **kwargs) -> Task:
    """A new task instance by name ("rope", "granular", "cloth"); kwargs go to its constructor
    (``obs_points``, ``obs_noise``). Call ``reset(seed)`` before use."""
    if name == "rope":
        from pam_jax.sim.rope import RopeTask
        return RopeTask(**kwargs)
    if name == "granular":
        from pam_jax.sim.granular import GranularTask
        return GranularTask(**kwargs)
    if name == "cloth":
        from pam_jax.sim.cloth import ClothTask
        return ClothTask(**kwargs)
    near = difflib.get_close_matches(str(name), TASK_NAMES, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise ValueError(f"unknown sim task {name!r} (choose from {', '.join(TASK_NAMES)}){hint}")


def expert_actions(task, rng, max_alternatives: int = 10):
    from pam_jax.sim.experts import expert_actions as _f
    return _f(task, rng, max_alternatives)


def annotate(task, state, candidates, expert_action=None, **kwargs):
    from pam_jax.sim.oracle import annotate as _f
    return _f(task, state, candidates, expert_action, **kwargs)


def candidate_gains(task, state, candidates):
    from pam_jax.sim.oracle import candidate_gains as _f
    return _f(task, state, candidates)
