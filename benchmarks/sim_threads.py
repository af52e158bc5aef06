"""The simulator on one thread against several (pam_jax.sim.parallel): the same work timed both
ways in one run, and the results checked equal.

    .venv/bin/python benchmarks/sim_threads.py --tasks rope granular cloth
    .venv/bin/python benchmarks/sim_threads.py --tasks cloth --sl SL_RUN --dpo DPO_RUN --starts 10 --states 10

Parts, each on tuning start states (1000..), never a report set:

* ``oracle``: one annotated state's work, 8 expert alternatives and the expert's action tried
  from the state after one expert step (what the preference stage and the oracle method do per
  state), ``--repeats`` states per task;
* ``batch``: ``--batch`` simulators, each stepping its own expert action (a closed-loop step of
  a batch of episodes);
* with ``--sl``: the study's stages themselves, on the tuning starts: the closed loop
  (``--method``, ``--starts`` episodes) and the preference stage (``--states`` states).

Prints one JSON line per part: the median seconds each way (one thread; ``--workers`` threads,
default every core), their ratio, and whether the results were equal.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time

import numpy as np

from pam_jax import tasks as tasks_lib
from pam_jax.eval import closed_loop
from pam_jax.sim import candidate_gains, expert_actions, make_task, parallel

TUNE = 1000


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _line(part, task, one, many, workers, equal, **extra) -> dict:
    out = {"part": part, "task": task, "workers": workers, "one_thread_s": statistics.median(one),
           "threads_s": statistics.median(many), "speedup": statistics.median(one) / statistics.median(many),
           "equal": bool(equal), **extra}
    print(json.dumps(out), flush=True)
    return out


def oracle_part(task: str, repeats: int, workers: int) -> dict:
    t = make_task(task)
    t.replicas(workers)                         # built once, as in a long stage
    one, many, equal = [], [], True
    for r in range(repeats):
        t.reset(TUNE + r)
        rng = np.random.default_rng([TUNE + r, 1])
        t.step(expert_actions(t, rng)[0])
        alts = expert_actions(t, rng, 9)
        state = t.save_state()
        s1, (g1, _) = _timed(lambda: candidate_gains(t, state, alts, workers=1))
        s2, (g2, _) = _timed(lambda: candidate_gains(t, state, alts, workers=workers))
        one.append(s1 / len(alts))
        many.append(s2 / len(alts))
        equal &= np.array_equal(g1, g2, equal_nan=True)
    return _line("oracle", task, one, many, workers, equal, actions_per_state=9, unit="s per action tried")


def batch_part(task: str, batch: int, repeats: int, workers: int) -> dict:
    sims = [make_task(task) for _ in range(batch)]
    one, many, equal = [], [], True
    for r in range(repeats):
        states, acts = [], []
        for i, t in enumerate(sims):
            t.reset(TUNE + r * batch + i)
            states.append(t.save_state())
            acts.append(expert_actions(t, np.random.default_rng([i, r]))[0])

        def run(w):
            for t, s in zip(sims, states):
                t.restore_state(s)
            return parallel.map_ordered(lambda j: sims[j].step(acts[j]).score_after, range(batch), w)

        s1, a = _timed(lambda: run(1))
        s2, b = _timed(lambda: run(workers))
        one.append(s1 / batch)
        many.append(s2 / batch)
        equal &= a == b
    return _line("batch", task, one, many, workers, equal, batch=batch, unit="s per episode step")


def stage_parts(task: str, sl: str, dpo: str, method: str, starts: int, states: int, workers: int) -> list:
    from pam_jax.workflows.collect import collect

    out = []
    agent = closed_loop.Agent(method, closed_loop.Runs(sl=sl, dpo=dpo), data_task=tasks_lib.data_task_name(task))
    seeds = list(range(TUNE, TUNE + starts))
    sims = [make_task(task) for _ in seeds]
    closed_loop.run_episodes(sims, agent, seeds, max_steps=1)           # compile first
    s1, a = _timed(lambda: closed_loop.run_episodes(sims, agent, seeds, workers=1))
    s2, b = _timed(lambda: closed_loop.run_episodes(sims, agent, seeds, workers=workers))
    out.append(_line("closed_loop", task, [s1 / starts], [s2 / starts], workers,
                     [e["scores"] for e in a] == [e["scores"] for e in b], method=method, episodes=starts,
                     unit="s per episode"))
    if states:
        tmp = tempfile.mkdtemp(prefix="sim_threads_")
        try:
            kw = dict(states=states, seed=500, progress=False)
            collect(task, sl, f"{tmp}/warm", **{**kw, "states": 1})     # compile first
            s1, a = _timed(lambda: collect(task, sl, f"{tmp}/one", workers=1, **kw))
            s2, b = _timed(lambda: collect(task, sl, f"{tmp}/many", workers=workers, **kw))
            same = all(np.array_equal(x["gains"], y["gains"], equal_nan=True)
                       and np.array_equal(x["rankings"], y["rankings"]) for x, y in zip(a["records"], b["records"]))
            out.append(_line("preferences", task, [s1 / states], [s2 / states], workers, same, states=states,
                             unit="s per preference state"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["rope", "granular", "cloth"])
    ap.add_argument("--workers", type=int, default=None, help="threads (default: every core)")
    ap.add_argument("--repeats", type=int, default=5, help="states (oracle) and batches (batch) per task")
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--sl", default="", help="an SL run of the first task: also time the study's stages")
    ap.add_argument("--dpo", default="")
    ap.add_argument("--method", default="deformpam")
    ap.add_argument("--starts", type=int, default=10)
    ap.add_argument("--states", type=int, default=10)
    a = ap.parse_args(argv)
    w = parallel.resolve_workers(a.workers)
    out = []
    for task in a.tasks:
        out.append(oracle_part(task, a.repeats, w))
        out.append(batch_part(task, a.batch, a.repeats, w))
    if a.sl:
        out += stage_parts(a.tasks[0], a.sl, a.dpo, a.method, a.starts, a.states, w)
    return out


if __name__ == "__main__":
    main()
