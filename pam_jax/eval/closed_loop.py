"""Closed-loop evaluation on the simulated tasks: methods, episodes, confidence intervals, reports.

Methods (same seeded start states for all):
  sl           SL policy, first candidate (no selection)
  sl_random    SL policy, a random one of N candidates
  sl_explicit  SL candidates + explicit-reward RAS, the paper's baseline head (a reward run:
               fresh network, linear output)
  sl_explicit_sl  the same with the SL-initialised head (a reward_sl run: SL weights + MLP)
  dpo          the DPO model alone (its own first candidate)
  deformpam    SL candidates + implicit-reward RAS (needs a DPO run)
  oracle       SL candidates, the simulator's best (executes each from a saved state): an upper bound

An agent (pam_jax.policy.Agent) sees the simulator's world-frame cloud, puts it into the task frame
the policy was trained in (the data pipeline's preprocessing: bounding-box centring, xy factor,
voxels), subsamples it, runs one compiled selection, and maps the chosen action back to the world
frame. Every method uses the SL checkpoint the preference runs were trained against.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from pam_jax import tasks as tasks_lib
from pam_jax.eval.checks import check_count, check_eval_runs
from pam_jax.eval.summary import paired_difference, summarize  # noqa: F401  (re-exported)
from pam_jax.policy import METHODS, NEEDS, Agent, Runs, bound_sl  # noqa: F401  (the acting policy; re-exported)
from pam_jax.sim import make_task, parallel


def run_episode(task, agent: Agent, seed: int, *, max_steps: int | None = None) -> dict:
    task.reset(seed)
    rng = np.random.default_rng([seed, 99])
    limit = min(task.step_limit, max_steps or task.step_limit)
    scores, frames = [float(task.score())], []
    success_step = 0 if task.success() else None
    for step in range(limit):
        if task.success():
            break
        action, cands, idx = agent.act(task, rng, jax.random.key(seed * 1000 + step))
        if step < 3:
            frames.append({"cloud": task.observe(np.random.default_rng(0))[::4], "candidates": cands, "chosen": idx})
        info = task.step(action)
        scores.append(float(info.score_after))
        if info.success and success_step is None:
            success_step = step + 1
    return {"seed": seed, "scores": scores, "final": scores[-1], "success": success_step is not None,
            "steps_to_success": success_step, "metrics": task.metric(), "frames": frames}


def run_episodes(tasks, agent: Agent, seeds, *, max_steps: int | None = None,
                 workers: int | None = None) -> list[dict]:
    """:func:`run_episode` for every start seed at once: tasks[i] (one simulator per start state)
    plays seeds[i], and every step of the episodes still running is one selector call
    (:meth:`Agent.act_many`), after which their simulators step on up to ``workers`` threads
    (:mod:`pam_jax.sim.parallel`; None: every core). Each episode equals its sequential
    :func:`run_episode`: its own observation rng, key per step and step limit."""
    seeds = list(seeds)
    if len(tasks) < len(seeds):
        raise ValueError(f"run_episodes: {len(seeds)} start seeds need as many tasks, got {len(tasks)}")
    tasks = list(tasks)[:len(seeds)]
    eps = []
    for task, seed in zip(tasks, seeds):
        task.reset(seed)
        eps.append({"rng": np.random.default_rng([seed, 99]), "limit": min(task.step_limit, max_steps or task.step_limit),
                    "scores": [float(task.score())], "frames": [], "success_step": 0 if task.success() else None,
                    "done": False})
    step = 0
    while True:
        for task, e in zip(tasks, eps):
            e["done"] = e["done"] or step >= e["limit"] or task.success()
        live = [i for i, e in enumerate(eps) if not e["done"]]
        if not live:
            break
        acts = agent.act_many([tasks[i] for i in live], [eps[i]["rng"] for i in live],
                              [jax.random.key(seeds[i] * 1000 + step) for i in live], width=len(seeds),
                              workers=workers)
        if step < 3:
            for i, (_, cands, idx) in zip(live, acts):
                eps[i]["frames"].append({"cloud": tasks[i].observe(np.random.default_rng(0))[::4],
                                         "candidates": cands, "chosen": idx})
        infos = parallel.map_ordered(lambda job: tasks[job[0]].step(job[1][0]), list(zip(live, acts)), workers)
        for i, info in zip(live, infos):
            e = eps[i]
            e["scores"].append(float(info.score_after))
            if info.success and e["success_step"] is None:
                e["success_step"] = step + 1
        step += 1
    return [{"seed": seed, "scores": e["scores"], "final": e["scores"][-1], "success": e["success_step"] is not None,
             "steps_to_success": e["success_step"], "metrics": task.metric(), "frames": e["frames"]}
            for task, seed, e in zip(tasks, seeds, eps)]


def evaluate(task_name: str, runs: Runs, *, methods=("sl", "deformpam"), seeds=range(10),
             num_candidates: int = 8, reward_samples: int | None = None, max_steps: int | None = None,
             progress: bool = True, reward_noise: str | None = None, snap_pick: bool = True) -> dict:
    from tqdm.auto import tqdm

    seeds = list(seeds)
    check_count("episodes (seeds)", len(seeds))
    check_count("num_candidates", num_candidates)
    for name, v in (("reward_samples", reward_samples), ("max_steps", max_steps)):
        if v is not None:
            check_count(name, v)
    check_eval_runs(task_name, runs, methods, METHODS, NEEDS)   # before any episode
    bound_sl(runs)   # the SL checkpoint the preference runs were trained against, or one line why not
    sims = [make_task(task_name) for _ in seeds]       # one simulator per start state: stepped together
    out = {"task": task_name, "runs": dataclasses.asdict(runs), "methods": {}}
    for method in tqdm(methods, desc=f"{task_name}: {len(seeds)} episodes per method", disable=not progress):
        agent = Agent(method, runs, data_task=tasks_lib.data_task_name(task_name), num_candidates=num_candidates,
                      reward_samples=reward_samples, reward_noise=reward_noise, snap_pick=snap_pick)
        eps = run_episodes(sims, agent, seeds, max_steps=max_steps)
        out["methods"][method] = {"summary": summarize(eps), "episodes": eps}
    return out
