"""The score a perfect SL policy would reach: the scripted expert executing, at every step, a
pose drawn uniformly among its first K annotated poses. SL's loss draws one annotated pose per
sample uniformly among all of them (`draw_pose`; the executed action first, then the
alternatives), so K = all is the distribution a perfectly fitted SL policy samples from, and
K = 1 is the expert itself. With ``--noise`` S (metres), each drawn pose's two points also move
by independent Gaussian offsets of standard deviation S in x and y: how precisely a policy must
place its points to keep the score (a sweep needs no grasp; a rope or cloth pick moved off the
object is refused, as an unsnapped one would be). No network: the simulator and the expert only.

    .venv/bin/python benchmarks/imitation_ceiling.py --task granular --poses 1 3 10 \\
        --noise 0 0.01 0.02 --starts 10 --repeats 3 --out OUT.json

Start states from the tuning set (1000..), never a report set. The expert's poses at a state
come from the rng the expert baseline of `pam_jax.workflows.sl_curve` uses (repeat 0 with K = 1
replays it exactly); the drawn index from a second stream. Prints one JSON line per (K, S): mean
start and final score, success rate, and the gap closed, (final - start) / (expert final -
start), the expert being K = 1 without noise over the same starts and repeats.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from pam_jax import provenance
from pam_jax import tasks as tasks_lib
from pam_jax.sim import make_task
from pam_jax.sim.experts import expert_actions
from pam_jax.workflows.study import TUNE_START


def episode(task, start: int, poses: int, repeat: int, max_alternatives: int, noise: float = 0.0) -> dict:
    task.reset(start)
    rng = np.random.default_rng([start, 7] if repeat == 0 else [start, 7, repeat])
    pick = np.random.default_rng([start, 11, repeat])
    scores = [float(task.score())]
    while not task.done:
        acts = expert_actions(task, rng, max_alternatives)
        action = acts[int(pick.integers(min(poses, len(acts))))].copy()
        action[:, :2] += noise * pick.standard_normal((len(action), 2))
        scores.append(float(task.step(action).score_after))
    return {"start_seed": start, "repeat": repeat, "scores": scores, "final": scores[-1],
            "success": bool(task.success())}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, choices=tasks_lib.sim_task_names())
    ap.add_argument("--poses", type=int, nargs="+", default=[1, 3, 10],
                    help="K: draw among the first K annotated poses (1 = the expert)")
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0],
                    help="S: xy offset standard deviation of both points, metres (0 = as annotated)")
    ap.add_argument("--starts", type=int, default=10, help="tuning start states (from 1000)")
    ap.add_argument("--repeats", type=int, default=3, help="episodes per start state and K")
    ap.add_argument("--max-alternatives", type=int, default=10,
                    help="annotated poses per state, as the expert data sets record them")
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    if min(a.poses) < 1 or a.starts < 1 or a.repeats < 1 or min(a.noise) < 0:
        raise SystemExit("imitation_ceiling: --poses, --starts and --repeats must be positive, --noise >= 0")
    settings = sorted({(k, s) for k in a.poses for s in a.noise} | {(1, 0.0)})
    task = make_task(a.task)
    starts = list(range(TUNE_START, TUNE_START + a.starts))
    rows = {}
    for k, noise in settings:
        t0 = time.perf_counter()
        eps = [episode(task, s, k, r, a.max_alternatives, noise) for s in starts for r in range(a.repeats)]
        rows[k, noise] = {
            "poses": k, "noise": noise, "episodes": len(eps), "wall_s": time.perf_counter() - t0,
            "start": float(np.mean([e["scores"][0] for e in eps])),
            "final": float(np.mean([e["final"] for e in eps])),
            "success": float(np.mean([e["success"] for e in eps])),
            "gain_per_step": float(np.mean([np.mean(np.diff(e["scores"])) for e in eps if len(e["scores"]) > 1])),
            "finals": [e["final"] for e in eps]}
    expert = rows[1, 0.0]
    for row in rows.values():
        gap = expert["final"] - row["start"]
        row["gap_closed"] = (row["final"] - row["start"]) / gap if gap > 0 else None
        print(json.dumps({key: v for key, v in row.items() if key != "finals"}), flush=True)
    out = {"task": a.task, "start_seeds": starts, "repeats": a.repeats,
           "max_alternatives": a.max_alternatives, "commit": provenance.code_commit(),
           "machine": provenance.machine(), "rows": list(rows.values())}
    if a.out:
        path = pathlib.Path(a.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
