"""`pam-jax collect`: on-policy preference states from a trained SL policy in a simulated task.

The policy rolls out over the whole horizon; at about ``steps_per_episode`` states per episode,
spread over it (every ``stride``-th step), its K candidates (DDIM eta=1) are ranked by the
oracle annotator and written as finetune samples in the published layout, ready for
`pam-jax data build`. The old early-horizon protocol (0-3 expert warm-up steps, then 4
consecutive states) is ``warmup_steps=3, steps_per_episode=4, stride=1``.
"""
from __future__ import annotations

import jax
import numpy as np

from pam_jax import tasks as tasks_lib
from pam_jax.policy import Agent, Runs
from pam_jax.sim.episodes import write_preference_round

EARLY = {"warmup_steps": 3, "steps_per_episode": 4, "stride": 1}


def collect(task: str, sl_run, out, *, states: int, num_candidates: int = 8, num_points: int | None = None,
            steps_per_episode: int | None = 10, stride: int | None = None, warmup_steps: int = 0,
            max_steps: int | None = None, label_noise: float = 0.0, seed: int = 0,
            snap_pick: bool = True, progress: bool = True, workers: int | None = None) -> dict:
    """Roll out a trained SL policy, record its K candidates (DDIM eta=1) at the recorded
    states, have the oracle annotator rank them, and write finetune samples in the published
    layout (see :func:`pam_jax.sim.episodes.write_preference_round` for the protocol).
    `snap_pick`: the task's pick-snapping rule applied to what is executed (the oracle ranks
    the candidates by executing them snapped; the samples hold them as sampled). `workers`:
    the oracle's simulator threads (pam_jax.sim.parallel; None: every core)."""
    agent = Agent("sl_random", Runs(sl=str(sl_run)), data_task=tasks_lib.data_task_name(task),
                  num_candidates=num_candidates, eta=1.0, snap_pick=snap_pick)
    rng = np.random.default_rng(seed)
    calls = iter(range(10**9))

    def candidates_fn(cloud):
        return agent.candidates(cloud, rng, jax.random.key(next(calls)))

    return write_preference_round(task, out, states=states, candidates_fn=candidates_fn, seed=seed,
                                  label_noise=label_noise, num_points=num_points, warmup_steps=warmup_steps,
                                  steps_per_episode=steps_per_episode, stride=stride, max_steps=max_steps,
                                  if_exists="skip", progress=progress, workers=workers)


def collect_unlabelled(task: str, sl_run, out, *, states: int = 0, clouds=None, num_candidates: int = 8,
                       seed: int = 0, progress: bool = True, **horizon) -> dict:
    """A trained SL policy's K candidates (DDIM eta=1), written with no labels for people to rank
    in `pam-jax annotate`: at the recorded states of its rollouts in the simulated ``task``
    (``states``, ``horizon`` as in :func:`collect`), or, with ``clouds`` (a folder of .npy/.npz
    clouds), one sample per recorded cloud (see :mod:`pam_jax.workflows.unlabelled`)."""
    from pam_jax.workflows import unlabelled

    if clouds is not None:      # check the files before loading a policy
        for f in unlabelled.cloud_files(clouds):
            unlabelled.load_cloud(f)
    agent = Agent("sl_random", Runs(sl=str(sl_run)), data_task=tasks_lib.data_task_name(task),
                  num_candidates=num_candidates, eta=1.0)
    rng = np.random.default_rng(seed)
    calls = iter(range(10**9))

    def candidates_fn(cloud):
        return agent.candidates(cloud, rng, jax.random.key(next(calls)))

    if clouds is not None:
        return unlabelled.write_unlabelled_clouds(task, clouds, out, candidates_fn=candidates_fn, progress=progress)
    return unlabelled.write_unlabelled_rollouts(task, out, states=states, candidates_fn=candidates_fn, seed=seed,
                                                progress=progress, **horizon)
