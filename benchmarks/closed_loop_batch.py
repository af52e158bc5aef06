"""Closed-loop episodes one by one against all start states stepping together (one selector
call per step): wall time per episode, the same episodes checked equal.

    .venv/bin/python benchmarks/closed_loop_batch.py --task rope --sl RUN --method deformpam --dpo RUN \\
        --starts 10 --max-steps 5

Start states from the tuning set (1000..). Prints one JSON line: seconds per episode of each
form (median over --repeats), their ratio, and whether every episode's scores matched.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from pam_jax import tasks as tasks_lib
from pam_jax.eval import closed_loop
from pam_jax.sim import make_task


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True)
    ap.add_argument("--sl", required=True)
    ap.add_argument("--dpo", default="")
    ap.add_argument("--method", default="sl")
    ap.add_argument("--starts", type=int, default=10)
    ap.add_argument("--max-steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    agent = closed_loop.Agent(a.method, closed_loop.Runs(sl=a.sl, dpo=a.dpo),
                              data_task=tasks_lib.data_task_name(a.task))
    seeds = list(range(1000, 1000 + a.starts))
    sims = [make_task(a.task) for _ in seeds]
    closed_loop.run_episodes(sims[:1], agent, seeds[:1], max_steps=1)          # compile both shapes first
    closed_loop.run_episodes(sims, agent, seeds, max_steps=1)
    seq, bat, same = [], [], True
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        one = [closed_loop.run_episode(sims[0], agent, s, max_steps=a.max_steps) for s in seeds]
        seq.append((time.perf_counter() - t0) / len(seeds))
        t0 = time.perf_counter()
        many = closed_loop.run_episodes(sims, agent, seeds, max_steps=a.max_steps)
        bat.append((time.perf_counter() - t0) / len(seeds))
        same &= all(x["scores"] == y["scores"] for x, y in zip(one, many))
    out = {"task": a.task, "method": a.method, "starts": a.starts, "max_steps": a.max_steps,
           "sequential_s_per_episode": statistics.median(seq), "batched_s_per_episode": statistics.median(bat),
           "speedup": statistics.median(seq) / statistics.median(bat), "episodes_equal": same}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
