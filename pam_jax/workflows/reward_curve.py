"""Reward curves offline: how well learned rewards rank an SL policy's candidates, against the
number of preference states and the training recipe, on held-out preference states.

    python -m pam_jax.workflows.reward_curve --task granular --sl runs/demo_granular/sl_s0 \\
        --root runs/reward_granular --results docs/results/reward_granular --states 100 300

Stages, each resumable (a finished one is skipped):

1. ``heldout``: preference states from the SL policy's rollouts on the tuning start seeds
   (1000..), built as one finetune dataset; every scorer is judged on all of it;
2. ``prefs``: one collection of ``max(states)`` preference states from the preference seeds
   (500..); the data set of ``n`` states holds its first ``n`` states (by rollout and step);
3. per (n, recipe): the recipe's run trained from the SL policy on the n-state data, then its
   pair accuracy (candidate pairs; pairs with the annotator's action) and top-1 selection
   regret on the held-out states, in ``rows/n<n>_<recipe>.json``.

Recipes (:data:`RECIPES`) pair each implicit reward (DPO) with an explicit head trained on the
same pairs with the same budget (learning rate, epochs, batch) and the same choice of
initialisation, so that implicit and explicit are compared at equal cost. No report start seed
is touched: the seed sets are checked disjoint from the report set's.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import time

from pam_jax import config as config_lib
from pam_jax import tasks as tasks_lib
from pam_jax.data.build import build as build_dataset
from pam_jax.eval import pairs as pair_eval
from pam_jax.eval import regret as regret_eval
from pam_jax.eval.checks import run_meta
from pam_jax.train.errors import script_main
from pam_jax.workflows.collect import collect
from pam_jax.workflows.mirror import Mirror
from pam_jax.workflows.study import PREFERENCE_START, REPORT_START, TUNE_START

# name -> (experiment stage, mode, overrides on top of the stage's settings)
STRONG = ("optim.lr=1e-4", "preference.train_timestep_frac=0.1", "preference.loss=diffusion_dpo")
RECIPES = {
    # the paper's DPO: lr 1e-5, every timestep, -sigmoid, 200 epochs, batch 28
    "dpo_paper": ("dpo", "implicit", ()),
    # its explicit baseline at the same budget: a fresh backbone, a linear head
    "reward_paper": ("reward", "explicit", ()),
    # DPO optimised harder: lr 1e-4, t < T/10 (the timesteps the reward reads), -log sigmoid
    "dpo_strong": ("dpo", "implicit", STRONG),
    # the same without the pairs that name the annotator's own action
    "dpo_strong_noann": ("dpo", "implicit", STRONG + ("preference.annotator_pairs=false",)),
    # the explicit head at dpo_strong's budget, initialised from the SL policy as DPO is
    "reward_sl_strong": ("reward_sl", "explicit", ("optim.lr=1e-4",)),
}
SPLITS = ("train", "validation", "test")


class RewardCurve(Mirror):
    def __init__(self, task: str, sl_run, root, results=None, *, states=(100, 300), heldout: int = 60,
                 recipes=tuple(RECIPES), steps_per_episode: int = 10, log=print):
        super().__init__(root, results)
        self.task = tasks_lib.sim_task_name(task)
        self.spec = tasks_lib.get_task(task)
        self.sl = pathlib.Path(sl_run)
        sl_cfg = config_lib.from_dict(run_meta(self.sl, "sl")["config"])   # one line if not a trained run
        self.states = sorted(set(states))
        if not self.states or min(self.states) < 1 or heldout < 1:
            raise ValueError("states, heldout: expected positive counts")
        unknown = set(recipes) - set(RECIPES)
        if unknown:
            raise ValueError(f"recipes: unknown {sorted(unknown)}; expected some of {tuple(RECIPES)}")
        self.recipes, self.heldout, self.per_episode, self.log = list(recipes), heldout, steps_per_episode, log
        self.num_points = sl_cfg.data.num_points * 2

    def _collect(self, name: str, states: int, seed: int) -> pathlib.Path:
        """Preference states from the SL policy's rollouts from start seed `seed` -> src folder."""
        src = self.root / "src" / name
        if self.get(f"stages/{name}.json") is None:
            t0 = time.perf_counter()
            r = collect(self.task, self.sl, src, states=states, num_points=self.num_points,
                        steps_per_episode=self.per_episode, seed=seed, progress=False)
            # training rollouts stay below the tuning seeds the held-out states use, and those below
            # every report set
            limit = TUNE_START if seed < TUNE_START else REPORT_START
            if seed + r["episodes_run"] > limit:
                raise ValueError(f"{name}: its rollouts used start seeds {seed}..{seed + r['episodes_run'] - 1}, "
                                 f"past {limit - 1}; collect fewer states")
            self.save(f"stages/{name}.json", {"states": r["states"], "seeds": [seed, seed + r["episodes_run"] - 1],
                                               "label_counts": r["label_counts"], "wall_s": time.perf_counter() - t0})
            self.log(f"[{name}] {r['states']} states in {time.perf_counter() - t0:.1f} s")
        return src

    def _build(self, src: pathlib.Path, name: str, first: int | None = None) -> pathlib.Path:
        """A finetune dataset of `src`'s samples (its first `first`, in rollout and step order)
        -> its data_dir."""
        tfds = self.root / f"tfds_{name}"
        if not (tfds / "deformpam").is_dir():
            samples = sorted(p for p in src.iterdir() if p.is_dir())
            if first is not None:
                part = self.root / "src" / name
                part.mkdir(parents=True, exist_ok=True)
                for p in samples[:first]:
                    if not (part / p.name).exists():
                        shutil.copytree(p, part / p.name)
                src = part
            build_dataset(src, task=self.spec.name, kind="finetune", data_dir=tfds, overwrite=True, progress=False)
        return tfds

    @staticmethod
    def dataset(data_dir: pathlib.Path) -> pathlib.Path:
        return next((data_dir / "deformpam").glob("*_finetune/*"))

    def row(self, n: int, recipe: str, data_dir: pathlib.Path, heldout: pathlib.Path) -> dict:
        """Train `recipe` on the n-state data (`data_dir`), score it on the `heldout` dataset."""
        rel = f"rows/n{n}_{recipe}.json"
        done = self.get(rel)
        if done is not None:
            return done
        from pam_jax.train.loop import train

        stage, mode, sets = RECIPES[recipe]
        run = self.root / f"n{n}_{recipe}"
        cfg = config_lib.override(config_lib.load_experiment(f"{self.spec.experiment}:{stage}"), [
            f"data.data_dir={data_dir}", f"train.run_dir={run}", "train.seed=0", "data.seed=0",
            f"preference.init_from={self.sl}", *sets])
        t0 = time.perf_counter()
        r = train(cfg, progress_bar=False, log=self.log)
        wall = time.perf_counter() - t0
        scorer = pair_eval.make_scorer(mode, self.sl, run)
        acc = pair_eval.pair_accuracy(self.sl, run, heldout, mode=mode, splits=SPLITS, scorer=scorer)
        reg = regret_eval.selection_regret(heldout, {recipe: scorer[0]}, num_points=cfg.data.num_points, splits=SPLITS)
        out = {"states": n, "recipe": recipe, "stage": stage, "mode": mode, "overrides": list(sets),
               "lr": cfg.optim.lr, "steps": int(r.state.step), "batch": cfg.data.batch_size, "train_wall_s": wall,
               "pair_accuracy": acc["candidates"], "vs_annotator": acc["vs_annotator"], "pairs": acc["pairs"],
               "heldout_states": reg["states"], "regret": reg["scorers"][recipe],
               "random": reg["scorers"]["random"], "regret_vs_random": reg["regret_vs_random"].get(recipe)}
        self.save(rel, out)
        self.log(f"[n{n} {recipe}] pair accuracy {acc['candidates']:.3f}, regret {out['regret']['regret']:.4f} "
                 f"(random {out['random']['regret']:.4f}), {wall:.0f} s training")
        return out

    def table(self, rows: list[dict]) -> str:
        lines = [f"# Reward curve: {self.task}, SL run `{self.sl.name}`", "",
                 f"Held-out: {self.heldout} preference states from tuning start seeds {TUNE_START}.. "
                 "(all of them scored); training states from the preference seeds "
                 f"{PREFERENCE_START}.. (the first n of one collection).", "",
                 "| states | recipe | lr x steps | pair accuracy | vs annotator | top-1 regret | normalised gain "
                 "| top-1 | regret - random (p) |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            g = r["regret"]
            d = r.get("regret_vs_random") or {}
            lines.append(f"| {r['states']} | {r['recipe']} | {r['lr']:g} x {r['steps']} | {r['pair_accuracy']:.3f} | "
                         f"{r['vs_annotator'] if r['vs_annotator'] is None else round(r['vs_annotator'], 3)} | "
                         f"{g['regret']:.4f} ± {g['regret_ci']:.4f} | {g['norm_gain']:+.3f} | {g['top1']:.0%} | "
                         f"{d.get('mean', float('nan')):+.4f} (p={d.get('p_value', float('nan')):.3g}) |")
        if rows:
            rnd = rows[0]["random"]
            lines += ["", f"Random choice: regret {rnd['regret']:.4f}, top-1 {rnd['top1']:.0%}."]
        return "\n".join(lines) + "\n"

    def run(self) -> list[dict]:
        self.root.mkdir(parents=True, exist_ok=True)
        heldout = self.dataset(self._build(self._collect("heldout", self.heldout, TUNE_START), "heldout"))
        src = self._collect("prefs", max(self.states), PREFERENCE_START)
        for n in self.states:
            data = self._build(src, f"n{n}", first=n)
            for recipe in self.recipes:
                self.row(n, recipe, data, heldout)
                self.save_text("curve.md", self.table(self.all_rows()))
        rows = self.all_rows()
        self.save("curve.json", {"task": self.task, "sl": str(self.sl), "rows": rows})
        return rows

    def all_rows(self) -> list[dict]:
        """Every row computed in this run folder so far (earlier calls' recipes and sizes too),
        by number of states, then in :data:`RECIPES` order."""
        order = {r: i for i, r in enumerate(RECIPES)}
        rows = [json.loads(p.read_text()) for p in (self.root / "rows").glob("*.json")]
        return sorted(rows, key=lambda r: (r["states"], order.get(r["recipe"], len(order))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, choices=tasks_lib.sim_task_names())
    ap.add_argument("--sl", required=True, help="the SL run folder whose candidates are ranked")
    ap.add_argument("--root", required=True, help="run folder (datasets, checkpoints)")
    ap.add_argument("--results", help="folder of the small result files (copied there, restored from there)")
    ap.add_argument("--states", type=int, nargs="+", default=[100, 300], help="preference states per data set")
    ap.add_argument("--heldout", type=int, default=60, help="held-out preference states (tuning start seeds)")
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    a = ap.parse_args(argv)

    def go():
        RewardCurve(a.task, a.sl, a.root, a.results, states=a.states, heldout=a.heldout, recipes=a.recipes).run()
        return 0
    return script_main("reward_curve", go)


if __name__ == "__main__":
    raise SystemExit(main())
