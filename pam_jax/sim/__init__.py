"""Simulated DeformPAM tasks on MuJoCo: rope shaping, granular pile shaping, cloth unfolding.

Public API::

    from pam_jax.sim import make_task, expert_actions, annotate
    task = make_task("rope")          # any simulated task of pam_jax.tasks: "rope" | "granular" | "cloth"
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

import importlib

from pam_jax import tasks as tasks_lib
from pam_jax.sim.base import ActionCheck, StepInfo, Task, TaskState

__all__ = ["make_task", "task_class", "Task", "StepInfo", "ActionCheck", "TaskState",
           "expert_actions", "annotate", "candidate_gains"]


def task_class(name: str) -> type[Task]:
    """The task class by name (the simulator's or the data name), for its class attributes
    (``pick_rows``, ``step_limit``, ...) without building a simulator."""
    spec = tasks_lib.get_task(tasks_lib.sim_task_name(name))
    module, _, cls = spec.sim_class.partition(":")
    return getattr(importlib.import_module(module), cls)


def make_task(name: str, **kwargs) -> Task:
    """A new task instance by name (the simulator's or the data name, see :mod:`pam_jax.tasks`);
    kwargs go to its constructor (``obs_points``, ``obs_noise``; the cloth's ``shape``: "tshirt"
    (default) or "square"). Call ``reset(seed)`` before use."""
    return task_class(name)(**kwargs)


def expert_actions(task, rng, max_alternatives: int = 10):
    from pam_jax.sim.experts import expert_actions as _f
    return _f(task, rng, max_alternatives)


def annotate(task, state, candidates, expert_action=None, **kwargs):
    from pam_jax.sim.oracle import annotate as _f
    return _f(task, state, candidates, expert_action, **kwargs)


def candidate_gains(task, state, candidates, **kwargs):
    from pam_jax.sim.oracle import candidate_gains as _f
    return _f(task, state, candidates, **kwargs)
