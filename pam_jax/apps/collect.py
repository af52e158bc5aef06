"""`pam-jax collect`: on-policy preference states from a trained SL policy in a simulated task.

The policy's K candidates (DDIM eta=1) at each visited state are ranked by the oracle annotator
and written as finetune samples in the published layout, ready for `pam-jax data build`.
"""
from __future__ import annotations

import jax
import numpy as np

from pam_jax import tasks as tasks_lib
from pam_jax.eval.closed_loop import Agent, Runs
from pam_jax.sim.episodes import write_preference_round


def collect(task: str, sl_run, out, *, states: int, num_candidates: int = 8, num_points: int | None = None,
            steps_per_episode: int = 4, label_noise: float = 0.0, seed: int = 0, progress: bool = True) -> dict:
    """Roll out a trained SL policy, record its K candidates (DDIM eta=1) at each state, have the
    oracle annotator rank them, and write finetune samples in the published layout."""
    agent = Agent("sl_random", Runs(sl=str(sl_run)), data_task=tasks_lib.data_task_name(task),
                           num_candidates=num_candidates, eta=1.0)
    rng = np.random.default_rng(seed)
    calls = iter(range(10**9))

    def candidates_fn(cloud):
        return agent.candidates(cloud, rng, jax.random.key(next(calls)))

    return write_preference_round(task, out, states=states, candidates_fn=candidates_fn, seed=seed,
                                  label_noise=label_noise, num_points=num_points,
                                  steps_per_episode=steps_per_episode, if_exists="skip", progress=progress)
