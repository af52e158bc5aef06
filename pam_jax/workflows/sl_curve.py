"""SL learning curves on the tuning start states: closed-loop score against SL training steps
and against the number of expert episodes, beside the start score and the scripted expert's
final score (the gap SL should close).

    python -m pam_jax.workflows.sl_curve --task rope --root runs/tune_rope --results docs/results/tune_rope

Stages, each resumable (a finished one is skipped): the expert's own episodes on the tuning
start states; expert data sets of each size (the smaller one is the first episodes of the larger);
one SL run per size trained to the largest step count with a checkpoint at every curve step;
then the closed-loop episodes of every (size, checkpoint), each cached as one JSON file (the
same file is copied under ``results``, which is restored into a run folder that lacks it). The
tables (``curve.json``, ``curve.md``) are rebuilt from the cached episodes on every call. The
start states are the tuning set's (1000..), never a report set's; the expert data come from
start seeds 0.. (disjoint, checked). ``--set KEY=VALUE ...`` changes the SL experiment (one factor
at a time, e.g. ``model.num_tokens=128``); a root keeps the values it was made with.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from pam_jax import config as config_lib
from pam_jax import tasks as tasks_lib
from pam_jax.data.build import build as build_dataset
from pam_jax.eval import closed_loop
from pam_jax.sim import make_task
from pam_jax.sim.episodes import write_expert_episodes
from pam_jax.sim.experts import expert_actions
from pam_jax.train.errors import script_main
from pam_jax.workflows.mirror import Mirror
from pam_jax.workflows.study import EXPERT_START, TUNE_START, check_disjoint


class Curve(Mirror):
    def __init__(self, task: str, root, results=None, *, episodes=(40, 160), steps=(1000, 2000, 4000, 8000),
                 tune_episodes: int = 10, snap_pick: bool = True, sets=(), log=print):
        self.task = tasks_lib.sim_task_name(task)
        self.spec = tasks_lib.get_task(task)
        self.sets = list(sets)
        self.sl_cfg = config_lib.override(config_lib.load_experiment(f"{self.spec.experiment}:supervised"),
                                          self.sets)      # a bad --set is one line, before anything is written
        super().__init__(root, results)
        self.episodes, self.steps = sorted(set(episodes)), sorted(set(steps))
        if not self.episodes or min(self.episodes) < 1 or not self.steps or min(self.steps) < 1:
            raise ValueError("episodes, steps: expected positive counts")
        self.starts = list(range(TUNE_START, TUNE_START + tune_episodes))
        check_disjoint({"expert": range(EXPERT_START, EXPERT_START + max(self.episodes)), "tune": self.starts})
        self.snap_pick, self.log = snap_pick, log

    def expert_baseline(self) -> None:
        task = make_task(self.task)
        for st in self.starts:
            rel = f"expert/{st}.json"
            if self.get(rel) is not None:
                continue
            t0 = time.perf_counter()
            task.reset(st)
            rng = np.random.default_rng([st, 7])
            scores = [float(task.score())]
            while not task.done:
                scores.append(float(task.step(expert_actions(task, rng)[0]).score_after))
            self.save(rel, {"seed": st, "scores": scores, "final": scores[-1], "success": bool(task.success()),
                            "wall_s": time.perf_counter() - t0})
        self.log(f"[expert] {len(self.starts)} tuning episodes")

    def check_sets(self, record: dict | None, what) -> dict | None:
        """A stage's record, or a one-line ValueError when it was made with other --set values."""
        if record is not None and record.get("sets", []) != self.sets:
            raise ValueError(f"{what} was made with --set {' '.join(record.get('sets', [])) or '(none)'}, "
                             f"this call gives {' '.join(self.sets) or '(none)'}; use another --root")
        return record

    def data(self, n: int) -> pathlib.Path:
        """The expert data set of the first n episodes -> its data_dir."""
        src, tfds = self.root / "src" / f"e{n}", self.root / f"tfds_e{n}"
        marker = f"stages/data_e{n}.json"
        if self.check_sets(self.get(marker), tfds) is not None and tfds.is_dir():
            return tfds
        t0 = time.perf_counter()
        r = write_expert_episodes(self.task, src, episodes=n, seed=EXPERT_START,
                                  num_points=self.sl_cfg.data.num_points * 2, if_exists="skip", progress=False)
        b = build_dataset(src, task=self.spec.name, kind="supervised", data_dir=tfds, overwrite=True, progress=False)
        self.save(marker, {"episodes": n, "sets": self.sets, "samples": r["samples"] + r["skipped_existing"],
                           "success_rate": r["success_rate"], "num_examples": b.get("num_examples"),
                           "wall_s": time.perf_counter() - t0})
        self.log(f"[data e{n}] {time.perf_counter() - t0:.1f} s")
        return tfds

    def sl(self, n: int, data_dir) -> pathlib.Path:
        from pam_jax.train.loop import train

        run = self.root / f"sl_e{n}"
        marker = f"stages/sl_e{n}.json"
        top = max(self.steps)
        done = self.check_sets(self.get(marker), run)
        if done is not None and all((run / "checkpoints" / str(s)).is_dir() for s in self.steps):
            return run
        cfg = config_lib.override(self.sl_cfg, [
            f"data.data_dir={data_dir}", f"train.run_dir={run}", "train.seed=0", "data.seed=0",
            f"train.steps={top}", f"train.checkpoint_every={min(self.steps)}",
            f"train.keep_checkpoints={top // min(self.steps) + 1}",
            # the validation loss (held-out expert episodes) twice per curve interval
            f"train.eval_every={max(1, min(self.steps) // 2)}"])
        missing = [s for s in self.steps if s % min(self.steps)]
        if missing:
            raise ValueError(f"steps: every curve step must be a multiple of the smallest, got {self.steps}")
        t0 = time.perf_counter()
        r = train(cfg, progress_bar=False, log=self.log)
        wall = time.perf_counter() - t0
        self.save(marker, {"episodes": n, "steps": int(r.state.step), "wall_s": wall, "sets": self.sets,
                           "steps_per_s": top / wall if wall > 0 else None})
        self.log(f"[sl e{n}] {top} steps in {wall:.1f} s")
        return run

    def evaluate(self, n: int, run: pathlib.Path) -> None:
        """Each checkpoint's missing episodes, stepping together (each equals its own course);
        their wall time is shared out equally."""
        sims = []
        for step in self.steps:
            todo = [st for st in self.starts if self.get(f"eval/e{n}/step{step}/{st}.json") is None]
            if not todo:
                continue
            agent = closed_loop.Agent("sl", closed_loop.Runs(sl=str(run)), data_task=self.spec.name,
                                      snap_pick=self.snap_pick, sl_step=step)
            sims += [make_task(self.task) for _ in range(len(todo) - len(sims))]
            t0 = time.perf_counter()
            eps = closed_loop.run_episodes(sims, agent, todo)
            wall = (time.perf_counter() - t0) / len(todo)
            for st, ep in zip(todo, eps):
                ep.pop("frames", None)
                ep["wall_s"] = wall
                self.save(f"eval/e{n}/step{step}/{st}.json", ep)
            self.log(f"[eval e{n} step {step}] {len(todo)} start states: mean final "
                     f"{np.mean([ep['final'] for ep in eps]):.3f} ({wall:.1f} s per episode)")
            self.table()

    def val_loss(self, n: int, step: int):
        """The SL run's validation loss logged at `step` (None when not logged)."""
        path = self.root / f"sl_e{n}" / "metrics.jsonl"
        if not path.exists():
            return None
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("step") == step and "val_loss" in rec:
                return float(rec["val_loss"])
        return None

    def table(self) -> dict:
        def mean(xs):
            return float(np.mean(xs)) if xs else None

        def summary(eps):
            eps = [e for e in eps if e is not None]
            return {"n": len(eps), "final": mean([e["final"] for e in eps]),
                    "success": mean([float(e["success"]) for e in eps]),
                    "start": mean([e["scores"][0] for e in eps]),
                    "wall_s": mean([e.get("wall_s", 0.0) for e in eps])}

        expert = summary([self.get(f"expert/{st}.json") for st in self.starts])
        rows = {}
        for n in self.episodes:
            for step in self.steps:
                s = summary([self.get(f"eval/e{n}/step{step}/{st}.json") for st in self.starts])
                if s["n"]:
                    s["val_loss"] = self.val_loss(n, step)
                    gap = (expert["final"] or 0.0) - (s["start"] or 0.0)
                    s["gap_closed"] = (s["final"] - s["start"]) / gap if gap > 0 else None
                    rows[f"e{n} step{step}"] = s
        out = {"task": self.task, "metric": self.spec.metric, "snap": self.spec.snap if self.snap_pick else "none",
               "start_seeds": self.starts, "sets": self.sets, "expert": expert, "sl": rows}
        self.save("curve.json", out)
        lines = [f"# SL learning curve: {self.task} (tuning start states {self.starts[0]}..{self.starts[-1]})", "",
                 f"Metric: {self.spec.metric}; pick snapping: {out['snap']}"
                 + (f"; SL trained with --set {' '.join(self.sets)}" if self.sets else "") + ".", "",
                 f"Start {expert['start']}, scripted expert final {expert['final']} "
                 f"(success {expert['success']}), {expert['n']} episodes.", "",
                 "| expert episodes, SL steps | val loss | episodes | start | final | success | gap closed | s/episode |",
                 "|---|---|---|---|---|---|---|---|"]
        fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
        for k, s in rows.items():
            lines.append(f"| {k} | {fmt(s['val_loss'])} | {s['n']} | {fmt(s['start'])} | {fmt(s['final'])} | {fmt(s['success'])} | "
                         f"{fmt(s.get('gap_closed'))} | {fmt(s['wall_s'])} |")
        self.save_text("curve.md", "\n".join(lines) + "\n")
        return out

    def run(self) -> dict:
        self.root.mkdir(parents=True, exist_ok=True)
        self.expert_baseline()
        for n in self.episodes:
            self.evaluate(n, self.sl(n, self.data(n)))
        return self.table()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, choices=tasks_lib.sim_task_names())
    ap.add_argument("--root", required=True, help="run folder (datasets, checkpoints)")
    ap.add_argument("--results", help="folder of the small result files (copied there, restored from there)")
    ap.add_argument("--episodes", type=int, nargs="+", default=[40, 160], help="expert episodes per data set")
    ap.add_argument("--steps", type=int, nargs="+", default=[1000, 2000, 4000, 8000], help="SL checkpoints evaluated")
    ap.add_argument("--tune-episodes", type=int, default=10, help="tuning start states (from 1000)")
    ap.add_argument("--no-snap-pick", action="store_true", help="execute the actions as sampled")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="overrides of the SL experiment (one factor at a time, e.g. model.num_tokens=128)")
    a = ap.parse_args(argv)

    def go():
        Curve(a.task, a.root, a.results, episodes=a.episodes, steps=a.steps, tune_episodes=a.tune_episodes,
              snap_pick=not a.no_snap_pick, sets=a.set).run()
        return 0
    return script_main("sl_curve", go)


if __name__ == "__main__":
    raise SystemExit(main())
