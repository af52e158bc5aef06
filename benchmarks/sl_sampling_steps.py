"""SL in closed loop at several DDIM step counts, without retraining: does SL stop improving
because of how it samples? One factor: the number of DDIM steps (the official code samples
with 100, pam_jax's runs with 20).

    .venv/bin/python benchmarks/sl_sampling_steps.py --task granular --sl RUN [RUN ...] \\
        --steps 20 100 --starts 10 --out OUT.json

Start states from the tuning set (1000..), never a report set. Each SL run plays every start
state once per setting, its own first candidate (method ``sl``), all start states stepping
together. Prints one JSON line per (run, setting) and a pooled line per setting: mean start and
final score, success rate.
"""
from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from pam_jax import tasks as tasks_lib
from pam_jax.eval import closed_loop
from pam_jax.sim import make_task

TUNE = 1000


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True)
    ap.add_argument("--sl", nargs="+", required=True, help="SL run folders (e.g. one per training seed)")
    ap.add_argument("--steps", type=int, nargs="+", default=[20, 100], help="DDIM steps per setting")
    ap.add_argument("--starts", type=int, default=10)
    ap.add_argument("--max-steps", type=int, default=None, help="cap on steps per episode (default: the task's limit)")
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    seeds = list(range(TUNE, TUNE + a.starts))
    sims = [make_task(a.task) for _ in seeds]
    rows, pooled = [], {n: [] for n in a.steps}
    for run in a.sl:
        for n in a.steps:
            agent = closed_loop.Agent("sl", closed_loop.Runs(sl=run), data_task=tasks_lib.data_task_name(a.task),
                                      num_inference_steps=n)
            eps = closed_loop.run_episodes(sims, agent, seeds, max_steps=a.max_steps)
            pooled[n] += eps
            row = {"run": run, "ddim_steps": n, "episodes": len(eps),
                   "start": float(np.mean([e["scores"][0] for e in eps])),
                   "final": float(np.mean([e["final"] for e in eps])),
                   "success": float(np.mean([e["success"] for e in eps])),
                   "finals": [e["final"] for e in eps]}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "finals"}), flush=True)
    base = np.array([e["final"] for e in pooled[a.steps[0]]])
    for n, eps in pooled.items():
        finals = np.array([e["final"] for e in eps])
        diff = finals - base             # paired: the same run and start state
        row = {"run": "pooled", "ddim_steps": n, "episodes": len(eps),
               "start": float(np.mean([e["scores"][0] for e in eps])), "final": float(finals.mean()),
               "success": float(np.mean([e["success"] for e in eps])),
               f"minus_{a.steps[0]}_steps": float(diff.mean()),
               "paired_sem": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else None}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        pathlib.Path(a.out).write_text(json.dumps({"task": a.task, "start_seeds": seeds, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
