"""`pam-jax study --task T`: the whole comparison of one simulated task, end to end, resumable.

Stages (each prints a progress line with its wall time and leaves ``<root>/stages/<name>.json``:
its settings, result and wall time; a stage whose file is there is skipped, and one whose
settings changed is an error: start a new ``--run-dir`` or pass ``--fresh``):

1. ``expert``        scripted-expert episodes -> the supervised dataset;
2. ``sl_s<k>``       the SL policy for every training seed k (``train.seed = data.seed = k``);
3. ``preferences``   whole-horizon preference states from SL seed 0's rollouts (or
                     ``preferences_s<k>`` from every seed's, ``per_seed_preferences``) -> the
                     finetune dataset;
4. ``dpo_s<k>``      DPO (the experiment's ``dpo`` stage) from every SL seed;
5. ``reward``, ``reward_sl``  the explicit baselines from SL seed 0, and ``reward_s<k>``,
                     ``reward_sl_s<k>`` from SL seed k < ``baseline_seeds`` (each skipped with a message
                     when the experiment has no such stage or closed_loop.Runs no such run);
6. ``offline``       held-out pair accuracy of every scorer, and the top-1 selection regret
                     (:mod:`pam_jax.eval.regret`, when present); ``estimators``: the same
                     for the implicit reward under each Monte-Carlo estimator
                     (``select.REWARD_NOISE``) and M in ``Settings.estimator_samples``, per seed;
7. ``eval_tune``, ``eval_report``  closed-loop episodes of every method on the tuning start
                     states and on a disjoint report set. SL, DPO alone and DeformPAM run for
                     every training seed, the other methods for seed 0. Each episode is cached
                     as ``<root>/eval/<set>/<method>/s<k>/<start>.json``, so an interrupted
                     evaluation continues where it stopped;
8. the report: ``<root>/study.md`` and ``study.json`` (closed-loop tables of both sets, offline
   metrics, data sizes, wall time per stage) and ``<root>/report/``, ``<root>/tune/`` (per-set
   JSON, Markdown and plots), rebuilt from the cached results on every call.

Training resumes from its checkpoints. Sizes: :data:`SCALES` (``small``: a smoke test that
finishes in minutes; ``full``: 3 training seeds, 30 report start states), each overridable.

Across machines: with ``results=DIR`` (``--results``) every small file (stage records, cached
episodes, the tables) is also copied to DIR, meant to be committed, and copied back into a run
folder that lacks it; a stage whose record is there but whose output (dataset, checkpoint) is not
is recomputed (each stage is seeded, so it gives the same output). ``report_only``
(``--report-only``) writes the tables from what is cached, with the (method, seed) groups whose
episodes are all there, and computes nothing.
"""
from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import json
import pathlib
import shutil
import time

import numpy as np

from pam_jax import config as config_lib
from pam_jax import provenance
from pam_jax import select as select_lib
from pam_jax import tasks as tasks_lib
from pam_jax.data.build import build as build_dataset
from pam_jax.data.io import write_json_atomic
from pam_jax.eval import closed_loop, report
from pam_jax.eval import pairs as pair_eval
from pam_jax.eval.summary import method_entry, on_seeds, paired_difference, selection_efficiency
from pam_jax.select import REWARD_NOISE
from pam_jax.sim import make_task
from pam_jax.sim.episodes import write_expert_episodes
from pam_jax.train.loop import train
from pam_jax.workflows.collect import collect

try:                                     # the top-1 regret, when present
    from pam_jax.eval import regret as regret_eval
except ImportError:                      # pragma: no cover
    regret_eval = None

SCALES = {
    "small": dict(train_seeds=2, expert_episodes=4, sl_steps=300, states=24, pref_steps=60,
                  tune_episodes=2, report_episodes=4, max_steps=3),
    "full": dict(train_seeds=3, expert_episodes=40, sl_steps=4000, states=100, pref_steps=0,
                 tune_episodes=10, report_episodes=30, max_steps=0),
    # `pam-jax demo`: the same pipeline sized for about 10 minutes on 2 CPU cores: one training
    # seed, the experiment's SL and DPO budgets, SL against SL + random and DeformPAM only, no
    # estimator curve
    # its report set (4000..4019) is fixed by docs/preregistration.md, unseen before it
    "demo": dict(train_seeds=1, expert_episodes=20, sl_steps=0, states=48, pref_steps=0,
                 tune_episodes=2, report_episodes=20, max_steps=0, methods=("sl", "sl_random", "deformpam"),
                 estimator_samples=(), report_seed=4000),
}
EXPLICIT = {"reward": "sl_explicit", "reward_sl": "sl_explicit_sl"}   # explicit reward stage -> method
SEEDED = ("sl", "dpo", "deformpam")      # methods run for every training seed (the others: baseline_seeds)
USES_DPO = ("dpo", "deformpam")          # methods that run the DPO model
# methods trained on no preference data: SL, SL + random, the oracle
PREFERENCE_FREE = tuple(m for m in closed_loop.METHODS if m not in USES_DPO and m not in EXPLICIT.values())
TUNE_START, REPORT_START = 1000, 2000    # first start seed of each evaluation set (the report one: --report-seed)
EXPERT_START, PREFERENCE_START = 0, 500   # first start seed of the expert episodes and of the preference rollouts


def check_disjoint(sets: dict) -> None:
    """{name: start seeds} -> a one-line ValueError when two sets share a start seed: the expert
    data, the preference rollouts, the tuning set and the report set must never overlap."""
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = sorted(set(sets[a]) & set(sets[b]))
            if both:
                raise ValueError(f"start seeds: the {a} and {b} sets share {len(both)} seeds "
                                 f"({both[0]}..{both[-1]}); they must be disjoint")


@dataclasses.dataclass(frozen=True)
class Settings:
    task: str
    root: str
    train_seeds: int = 3
    expert_episodes: int = 40
    sl_steps: int = 4000             # 0 = the experiment's
    states: int = 100                # preference states (per SL seed with per_seed_preferences)
    steps_per_episode: int = 10      # recorded preference states per rollout
    pref_steps: int = 0              # steps of every preference stage; 0 = the experiment's budget
    label_noise: float = 0.0
    per_seed_preferences: bool = False
    tune_episodes: int = 10
    report_episodes: int = 30
    max_steps: int = 0               # cap on every episode's steps; 0 = the task's limit
    methods: tuple = ()              # () = every method closed_loop knows
    estimator_samples: tuple = (10, 30, 100)   # the M curve of the estimators stage
    overrides: tuple = ()            # config overrides of every training stage
    dpo_overrides: tuple = ()        # ... of the DPO stages only (a DeformPAM variant)
    pref_overrides: tuple = ()       # ... of every preference stage: DPO and the explicit heads alike
    snap_pick: bool = True           # the task's pick snapping (TaskSpec.snap) applied to what is executed
    report_seed: int = REPORT_START  # first start seed of the report set
    preregistration: str = ""        # a committed protocol file: its blob sha goes into every record
    baseline_seeds: int = 1          # SL seeds 0.. that SL + random, the oracle and the explicit heads run for
    oracle_every_seed: bool = False  # the oracle for every SL seed (selection efficiency over all seeds)

    @classmethod
    def from_scale(cls, task: str, root, scale: str = "small", **given) -> "Settings":
        if scale not in SCALES:
            raise ValueError(f"--scale: expected one of {tuple(SCALES)}, got {scale!r}")
        values = {**SCALES[scale], **{k: v for k, v in given.items() if v is not None}}
        values.update({k: tuple(values.get(k, ())) for k in ("methods", "overrides", "dpo_overrides", "pref_overrides")})
        if "estimator_samples" in values:
            values["estimator_samples"] = tuple(values["estimator_samples"])
        s = cls(task=tasks_lib.sim_task_name(task), root=str(root), **values)
        if any(not isinstance(m, int) or m < 1 for m in s.estimator_samples):
            raise ValueError(f"estimator_samples: expected positive counts, got {s.estimator_samples}")
        if not 1 <= s.baseline_seeds <= s.train_seeds:
            raise ValueError(f"baseline_seeds: expected 1..train_seeds ({s.train_seeds}), got {s.baseline_seeds}")
        for name in ("train_seeds", "expert_episodes", "states", "steps_per_episode", "tune_episodes"):
            if getattr(s, name) < 1:
                raise ValueError(f"{name}: expected a positive count, got {getattr(s, name)}")
        for name in ("sl_steps", "pref_steps", "max_steps", "report_episodes", "report_seed"):
            if getattr(s, name) < 0:
                raise ValueError(f"{name}: expected 0 (default) or a positive count, got {getattr(s, name)}")
        unknown = set(s.methods) - set(closed_loop.METHODS)
        if unknown:
            raise ValueError(f"--methods: unknown {sorted(unknown)}; expected some of {closed_loop.METHODS}")
        return s


def _jsonable(x):
    return json.loads(json.dumps(report.strict_json(x)))


_CONFIG_DEFAULTS = _jsonable(config_lib.to_dict(config_lib.Config()))


def _without_added_defaults(old, new, default):
    """`new` less the config fields that `old` (a stage recorded by an earlier version) lacks
    and that hold their default value: a field added to the config later does not void the
    finished stages that ran without it."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    default = default if isinstance(default, dict) else {}
    return {k: _without_added_defaults(old.get(k), v, default.get(k)) for k, v in new.items()
            if k in old or k not in default or default[k] != v}


class Study:
    def __init__(self, settings: Settings, *, progress: bool = True, log=print, results=None,
                 report_only: bool = False):
        self.s, self.progress, self.log = settings, progress, log
        self.root = pathlib.Path(settings.root)
        self.results = pathlib.Path(results) if results else None
        self.report_only = report_only
        self.missing: list[str] = []     # (set, method, seed) groups left out of a report-only table
        self.needed: set[str] | None = None   # set by run(): the stages whose outputs this call needs
        self.exp = tasks_lib.get_task(settings.task).experiment
        self.data_task = tasks_lib.data_task_name(settings.task)
        self.seeds = list(range(settings.train_seeds))
        self.times: dict[str, float] = {}
        snap = select_lib.task_snap(settings.task, settings.snap_pick)
        # recorded with the preference stage and every episode only when the task snaps, so
        # that the records of a task without snapping stay valid
        self.snap_setting = ({"snap": snap["snap"], "snap_rows": list(snap["snap_rows"])}
                             if snap["snap"] != "none" else {})
        # what every record names: the code commit and the preregistration it runs under
        own = [d for d in (self.results, self.root) if d is not None]     # what the study itself rewrites
        code = provenance.code_commit(ignore=own)
        prereg = (provenance.preregistration(settings.preregistration, ignore=own)
                  if settings.preregistration and not report_only else None)
        self.origin = {**code, "preregistration": prereg["blob"] if prereg else None,
                       "machine": provenance.machine()}

    def check_provenance(self) -> None:
        """The run folder's ``provenance.json`` (the package stack and preregistration it was
        started with): written on the first call; a later call on another package stack, or under
        another preregistration, is refused (a report-only call only reads)."""
        path = self.root / "provenance.json"
        if self.report_only:
            return
        stack = provenance.package_stack()
        if path.exists():
            rec = json.loads(path.read_text())
            provenance.check_stack(rec["stack"], stack, f"run folder {self.root}")
            if rec.get("preregistration") != self.origin["preregistration"]:
                raise ValueError(f"run folder {self.root} was started under preregistration blob "
                                 f"{rec.get('preregistration')}, this call names {self.origin['preregistration']}; "
                                 "use another --run-dir")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, {"stack": stack, "preregistration": self.origin["preregistration"],
                                     "started": {**self.origin, "at": datetime.datetime.now().isoformat(timespec="seconds")}})
        self.keep(path, missing_only=True)

    # ------------------------------------------------------------------ stage bookkeeping
    def stage(self, name: str, params, fn, present=None):
        """Run `fn` once: its result and wall time are kept in stages/<name>.json. `present`
        (result -> bool) says whether a finished stage's output is on this machine; if not, the
        stage runs again."""
        marker = self.root / "stages" / f"{name}.json"
        params = _rooted(_jsonable(params), self.root)
        if marker.exists():
            done = json.loads(marker.read_text())
            done["params"] = _rooted(done["params"], self.root)
            done["result"] = _unrooted(done["result"], self.root)
            if done["params"] != _without_added_defaults(done["params"], params, _CONFIG_DEFAULTS):
                if self.report_only:     # the tables of a study made by an earlier version, as recorded
                    self.log(f"[{name}] recorded with other settings than this version's: reported as recorded")
                    self.times[name] = done["wall_s"]
                    self.keep(marker, missing_only=True)
                    return done["result"]
                raise ValueError(f"study stage {name!r} in {self.root} was run with other settings; "
                                 "use another --run-dir or --fresh")
            self.times[name] = done["wall_s"]
            unneeded = self.needed is not None and name not in self.needed
            if self.report_only or unneeded or present is None or present(done["result"]):
                self.log(f"[{name}] done earlier ({done['wall_s']:.1f} s): skipped")
                self.keep(marker, missing_only=True)
                return done["result"]
            self.log(f"[{name}] done earlier, but its output is not in {self.root}: recomputing")
        elif self.report_only:
            raise ValueError(f"--report-only: stage {name!r} has not finished in {self.root}; nothing to report yet")
        self.log(f"[{name}] ...")
        t0 = time.perf_counter()
        result = _jsonable(fn())
        wall = time.perf_counter() - t0
        marker.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(marker, {"params": params, "result": _rooted(result, self.root), "wall_s": wall,
                                   **self.origin,   # commit, dirty, preregistration
                                   "finished": datetime.datetime.now().isoformat(timespec="seconds")})
        self.keep(marker)
        self.times[name] = wall
        self.log(f"[{name}] done in {wall:.1f} s")
        return result

    def config(self, stage: str, run: str, *, seed: int, data_dir, parent: str | None = None):
        steps = self.s.sl_steps if stage == "supervised" else self.s.pref_steps
        sets = [f"data.data_dir={data_dir}", f"train.run_dir={self.root / run}", f"train.seed={seed}",
                f"data.seed={seed}", *([f"preference.init_from={self.root / parent}"] if parent else []),
                *([f"train.steps={steps}"] + (["train.epochs=0"] if stage != "supervised" else []) if steps else []),
                *self.s.overrides, *(self.s.pref_overrides if stage != "supervised" else ()),
                *(self.s.dpo_overrides if stage == "dpo" else ())]
        return config_lib.override(config_lib.load_experiment(f"{self.exp}:{stage}"), sets)

    def method_seeds(self, method: str) -> list[int]:
        """The SL seeds a method runs for: every one for SL, DPO alone and DeformPAM (and the
        oracle with ``oracle_every_seed``), the first ``baseline_seeds`` for the others."""
        if method in SEEDED or (method == "oracle" and self.s.oracle_every_seed):
            return self.seeds
        return self.seeds[:self.s.baseline_seeds]

    @staticmethod
    def explicit_run(stage: str, k: int) -> str:
        """The run folder (and stage name) of an explicit head trained from SL seed k."""
        return stage if k == 0 else f"{stage}_s{k}"

    def has_stage(self, stage: str) -> bool:
        try:
            config_lib.load_experiment(f"{self.exp}:{stage}")
        except ValueError as e:
            self.log(f"[{stage}] skipped: {e}")
            return False
        if stage not in {f.name for f in dataclasses.fields(closed_loop.Runs)}:
            self.log(f"[{stage}] skipped: closed_loop.Runs has no {stage!r} run")
            return False
        return True

    def train_stage(self, name: str, cfg):
        def fn():
            r = train(cfg, progress_bar=self.progress, log=self.log)
            return {"steps": int(r.state.step), "run_dir": str(cfg.train.run_dir)}
        ckpts = pathlib.Path(cfg.train.run_dir) / "checkpoints"
        return self.stage(name, config_lib.to_dict(cfg), fn,
                          present=lambda r: (ckpts / str(r["steps"])).is_dir())

    # ------------------------------------------------------------------ results that travel
    def keep(self, path: pathlib.Path, missing_only: bool = False, drop_frames: bool = False) -> None:
        """Copy a small result file (JSON, Markdown) under `self.results`, at the same relative
        path (with `missing_only`, only when it is not there yet; with `drop_frames`, an episode
        without its filmstrip frames, which only the report set's seed-0 episodes need)."""
        if self.results is None or path.suffix not in (".json", ".md") or not path.exists():
            return
        dest = self.results / path.relative_to(self.root)
        if missing_only and dest.exists():
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        if drop_frames:
            ep = json.loads(path.read_text())
            if "frames" in ep:
                ep.pop("frames")
                write_json_atomic(dest, ep)
                return
        shutil.copyfile(path, dest)

    def restore_results(self) -> int:
        """Copy into the run folder every kept file it lacks; -> how many."""
        if self.results is None or not self.results.is_dir():
            return 0
        n = 0
        for src in self.results.rglob("*"):
            dest = self.root / src.relative_to(self.results)
            if src.is_file() and not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
                n += 1
        if n:
            self.log(f"restored {n} result files from {self.results}")
        return n

    # ------------------------------------------------------------------ start seeds
    def start_sets(self) -> dict:
        """{"report": its start seeds (none with report_episodes = 0), "tune": its start seeds}."""
        s = self.s
        sets = {"report": list(range(s.report_seed, s.report_seed + s.report_episodes)),
                "tune": list(range(TUNE_START, TUNE_START + s.tune_episodes))}
        return {k: v for k, v in sets.items() if v}

    def seed_sets(self) -> dict:
        """The start seeds of the expert episodes and of both evaluation sets (the preference
        rollouts' are known after they ran: from PREFERENCE_START)."""
        return {"expert": range(EXPERT_START, EXPERT_START + self.s.expert_episodes), **self.start_sets()}

    # ------------------------------------------------------------------ the pipeline
    def run(self) -> dict:
        s, root = self.s, self.root
        root.mkdir(parents=True, exist_ok=True)
        self.restore_results()
        self.check_provenance()
        methods = [m for m in closed_loop.METHODS if not s.methods or m in s.methods]
        explicit = [st for st, m in EXPLICIT.items() if m in methods and self.has_stage(st)]
        methods = [m for m in methods if m not in EXPLICIT.values() or any(EXPLICIT[st] == m for st in explicit)]
        # the largest preference collection could use (write_preference_round's guard)
        check_disjoint({"preference (at most)": range(PREFERENCE_START, TUNE_START), **self.seed_sets()})
        sets = self.start_sets()
        # a finished stage's dataset or checkpoint that is not on this machine is recomputed only
        # when a result still to be computed reads it, directly or through a stage trained from it
        self.needed = self.needed_outputs(methods, explicit, sets)
        if not self.needed:
            self.log("every episode and offline record is here: missing datasets and checkpoints are not recomputed")
        sl_cfg0 = self.config("supervised", "sl_s0", seed=0, data_dir=root / "tfds")
        n_points = sl_cfg0.data.num_points * 2
        max_steps = s.max_steps or None

        def expert():
            r = write_expert_episodes(s.task, root / "src" / "supervised", episodes=s.expert_episodes,
                                      seed=EXPERT_START, num_points=n_points, max_steps=max_steps, if_exists="skip",
                                      progress=self.progress)
            b = build_dataset(root / "src" / "supervised", task=self.data_task, kind="supervised",
                              data_dir=root / "tfds", overwrite=True, progress=False)
            return {"episodes": s.expert_episodes, "samples": r["samples"] + r["skipped_existing"],
                    "success_rate": r["success_rate"], "num_examples": b.get("num_examples")}
        data = {"expert": self.stage("expert", {"episodes": s.expert_episodes, "points": n_points,
                                                 "max_steps": max_steps}, expert,
                                     present=lambda r: (root / "tfds").is_dir())}

        for k in self.seeds:
            self.train_stage(f"sl_s{k}", self.config("supervised", f"sl_s{k}", seed=k, data_dir=root / "tfds"))

        finetune = {}
        for k in sorted({self.pref_seed(k) for k in self.seeds}):
            name = self.pref_stage(k)
            tfds_dir = root / (f"tfds_s{k}" if s.per_seed_preferences else "tfds")
            src = root / "src" / (f"finetune_s{k}" if s.per_seed_preferences else "finetune")
            k_cand = self.config("dpo", "dpo_s0", seed=0, data_dir=tfds_dir).preference.num_candidates

            def prefs(k=k, src=src, tfds_dir=tfds_dir, k_cand=k_cand):
                r = collect(s.task, root / f"sl_s{k}", src, states=s.states, num_candidates=k_cand,
                            num_points=n_points, steps_per_episode=s.steps_per_episode, max_steps=max_steps,
                            label_noise=s.label_noise, snap_pick=s.snap_pick, seed=PREFERENCE_START,
                            progress=self.progress)
                check_disjoint({"preference": range(PREFERENCE_START, PREFERENCE_START + r["episodes_run"]),
                                **self.seed_sets()})
                b = build_dataset(src, task=self.data_task, kind="finetune", data_dir=tfds_dir,
                                  overwrite=True, progress=False)
                return {"states": r["states"], "episodes": r["episodes"], "stride": r["stride"],
                        "rollout_steps": r["rollout_steps"], "label_counts": r["label_counts"],
                        "num_examples": b.get("num_examples"), "dataset_dir": b["dataset_dir"],
                        "data_dir": str(tfds_dir)}
            finetune[k] = self.stage(name, {"sl": f"sl_s{k}", "states": s.states, "candidates": k_cand,
                                            "per_episode": s.steps_per_episode, "max_steps": max_steps,
                                            "label_noise": s.label_noise, "seed": PREFERENCE_START,
                                            **self.snap_setting}, prefs,
                                 present=lambda r: pathlib.Path(r["dataset_dir"]).is_dir())
        data["preferences"] = finetune

        def pref_data(k):
            return finetune[self.pref_seed(k)]

        for k in self.seeds:
            self.train_stage(f"dpo_s{k}", self.config("dpo", f"dpo_s{k}", seed=k, parent=f"sl_s{k}",
                                                      data_dir=pref_data(k)["data_dir"]))
        for st in explicit:
            for k in self.method_seeds(EXPLICIT[st]):
                run = self.explicit_run(st, k)
                self.train_stage(run, self.config(st, run, seed=k, parent=f"sl_s{k}", data_dir=pref_data(k)["data_dir"]))

        offline = self.stage("offline", {"seeds": self.seeds, "explicit": explicit},
                             lambda: self.offline(explicit, pref_data))
        if regret_eval is not None and s.estimator_samples:
            offline = {**offline, "estimators": self.stage(
                "estimators", {"seeds": self.seeds, "noise": list(REWARD_NOISE), "M": list(self.s.estimator_samples)},
                lambda: self.estimators(pref_data))}

        t0 = time.perf_counter()
        results = self.evaluate(methods, explicit, sets)
        for name, r in results.items():
            self.times[f"eval_{name}"] = sum(e.get("wall_s") or 0.0 for x in r["methods"].values()
                                             for e in x["episodes"])
            self.log(f"[eval_{name}] {len(sets[name])} start states x {len(methods)} methods: "
                     f"{self.times[f'eval_{name}']:.1f} s of episodes")
        self.log(f"[eval] {time.perf_counter() - t0:.1f} s this call")
        results = {name: r for name, r in results.items() if r["methods"]}   # report-only: complete groups
        if not results:
            raise ValueError(f"--report-only: no method has all its episodes of a set cached in {root} yet")
        return self.write(results, offline, data)

    # ------------------------------------------------------------------ offline metrics
    def offline(self, explicit, pref_data) -> dict:
        """Held-out pair accuracy of every scorer (DPO per seed against its SL, the explicit
        baselines), and their top-1 regret when :mod:`pam_jax.eval.regret` is there; each scorer
        is compiled once for both."""
        root, out = self.root, {"pair_accuracy": {}, "regret": None}
        built = {f"implicit_s{k}": ("implicit", root / f"sl_s{k}", root / f"dpo_s{k}", k) for k in self.seeds}
        built.update({self.explicit_run(st, k): ("explicit", root / f"sl_s{k}", root / self.explicit_run(st, k), k)
                      for st in explicit for k in self.method_seeds(EXPLICIT[st])})
        scorers = {}
        for name, (mode, sl, run, k) in built.items():
            scorers[name] = pair_eval.make_scorer(mode, sl, run)
            out["pair_accuracy"][name] = pair_eval.pair_accuracy(sl, run, pref_data(k)["dataset_dir"], mode=mode,
                                                                 scorer=scorers[name])
        if regret_eval is None:
            self.log("[offline] no pam_jax.eval.regret: top-1 regret skipped")
            return out
        # every scorer on its own SL seed's held-out states and candidates: seed k's DPO on the
        # preference data of seed k (with shared preferences, all of them are SL seed 0's), the
        # explicit heads (trained from SL seed 0) on seed 0's
        num_points = next(iter(scorers.values()))[1].data.num_points
        by_data: dict[str, list[str]] = {}
        for name, (_, _, _, k) in built.items():
            by_data.setdefault(pref_data(k)["dataset_dir"], []).append(name)
        try:
            per = {ds: regret_eval.selection_regret(ds, {n: scorers[n][0] for n in names}, num_points=num_points)
                   for ds, names in by_data.items()}
        except (ValueError, FileNotFoundError) as e:
            self.log(f"[offline] top-1 regret skipped: {e}")
            return out
        base = per[pref_data(0)["dataset_dir"]]
        merged = {**base, "scorers": dict(base["scorers"]), "paired": dict(base.get("paired") or {})}
        for ds, r in per.items():
            for n in by_data[ds]:
                merged["scorers"][n] = r["scorers"][n]
                if n in (r.get("paired") or {}):
                    merged["paired"][n] = r["paired"][n]
        merged["data_of"] = {n: _rooted(ds, self.root) for ds, names in by_data.items() for n in names}
        out["regret"] = merged
        return out

    def estimators(self, pref_data) -> dict:
        """Top-1 regret and pair accuracy of the implicit reward on the held-out preference
        states for every Monte-Carlo estimator and M: {"<noise> M=<M>":
        {"seeds": [per-seed regret summaries], "regret", "norm_gain", "top1", "pair_accuracy"
        (means over the seeds)}}."""
        root, per = self.root, {}
        for k in self.seeds:
            ds = pref_data(k)["dataset_dir"]
            scorers = {}
            for noise in REWARD_NOISE:
                for m in self.s.estimator_samples:
                    f, cfg = pair_eval.make_scorer("implicit", root / f"sl_s{k}", root / f"dpo_s{k}",
                                                   samples=m, noise=noise)
                    acc = pair_eval.pair_accuracy(root / f"sl_s{k}", root / f"dpo_s{k}", ds, mode="implicit",
                                                  scorer=(f, cfg))
                    scorers[f"{noise} M={m}"] = (f, acc["candidates"])
            r = regret_eval.selection_regret(ds, {n: f for n, (f, _) in scorers.items()},
                                             num_points=cfg.data.num_points)
            for n, (_, acc) in scorers.items():
                per.setdefault(n, []).append({**r["scorers"][n], "pair_accuracy": acc})
        return {n: {"seeds": v, **{key: _mean_of([x[key] for x in v])
                                   for key in ("regret", "norm_gain", "top1", "pair_accuracy")}}
                for n, v in per.items()}

    # ------------------------------------------------------------------ closed loop, cached per episode
    def episode_settings(self) -> dict:
        """What a cached episode must have been run with to count."""
        n_cand = self.config("dpo", "dpo_s0", seed=0, data_dir=self.root / "tfds").preference.num_candidates
        return {"max_steps": self.s.max_steps or None, "num_candidates": n_cand, **self.snap_setting}

    def groups(self, methods, sets: dict):
        """-> (set name, its start seeds, method, training seed, episode folder) of every group
        the evaluation runs (SL, DPO alone and DeformPAM for every training seed, the others for
        the first ones), training seed by seed: an evaluation interrupted on one machine leaves
        whole seeds done, whose runs a resume on another one does not recompute."""
        for k in self.seeds:
            for name, starts in sets.items():
                for m in methods:
                    if k in self.method_seeds(m):
                        yield name, starts, m, k, self.root / "eval" / name / m / f"s{k}"

    def needed_outputs(self, methods, explicit, sets: dict) -> set[str]:
        """The stages whose outputs (datasets, checkpoints) a result not yet recorded reads, with
        everything they are trained from: the runs of every (method, seed) group with an episode
        missing, and all runs and preference data while an offline record is missing (restored
        result files count). A finished stage outside this set is not recomputed."""
        s = self.s
        heads = {EXPLICIT[st]: st for st in explicit}
        offline = ["offline"] + (["estimators"] if regret_eval is not None and s.estimator_samples else [])
        runs: set[tuple[str, int]] = set()      # (run, its SL seed)
        if not all((self.root / "stages" / f"{n}.json").exists() for n in offline):
            runs |= {(f"{r}_s{k}", k) for k in self.seeds for r in ("sl", "dpo")}
            runs |= {(self.explicit_run(st, k), k) for st in explicit for k in self.method_seeds(EXPLICIT[st])}
            runs |= {(self.pref_stage(k), k) for k in self.seeds}
        settings = self.episode_settings()
        for _, starts, m, k, folder in self.groups(methods, sets):
            if any(_load_episode(folder / f"{st}.json", settings) is None for st in starts):
                runs.add((f"sl_s{k}", k))
                if m in USES_DPO:
                    runs.add((f"dpo_s{k}", k))
                if m in heads:
                    runs.add((self.explicit_run(heads[m], k), k))
        needed = {r for r, _ in runs}
        for r, k in runs:                       # what the preference-trained runs start from
            if not r.startswith("sl_s"):
                needed |= {self.pref_stage(k), f"sl_s{k}", f"sl_s{self.pref_seed(k)}"}
        if any(r.startswith("sl_s") for r in needed):
            needed.add("expert")
        return needed

    def pref_seed(self, k: int) -> int:
        """The SL seed whose rollouts make SL seed k's preference data."""
        return k if self.s.per_seed_preferences else 0

    def pref_stage(self, k: int) -> str:
        """The stage that collects SL seed k's preference data."""
        return f"preferences_s{k}" if self.s.per_seed_preferences else "preferences"

    def evaluate(self, methods, explicit, sets: dict) -> dict:
        """{set name: start seeds} -> {set name: result}. Training seed by seed (:meth:`groups`);
        within a seed the sets in order (the report set first) and SL and DeformPAM first, so the
        main comparison is complete earliest; an agent per (method, training seed) is built only
        when an episode is not cached, and serves every set of its seed. With report_only, a (set,
        method, seed) group enters the tables only when all its episodes are cached."""
        s, root = self.s, self.root
        sims = []                        # one simulator per start state of the largest batch so far
        settings = self.episode_settings()
        n_cand = settings["num_candidates"]
        wanted = None if self.report_only else settings   # --report-only: the episodes as recorded
        first = [m for m in ("sl", "deformpam") if m in methods]
        order = first + [m for m in methods if m not in first]
        episodes = {name: {m: [] for m in methods} for name in sets}
        agents = {}
        for name, starts, m, k, folder in self.groups(order, sets):
            if any(seed != k for _, seed in agents):
                agents.clear()           # a seed's agents serve none of the next seed's groups
            cached = {st: _load_episode(folder / f"{st}.json", wanted) for st in starts}
            todo = [st for st in starts if cached[st] is None]
            filmstrip = name == "report" and k == 0
            for st in starts:
                if cached[st] is not None:
                    self.keep(folder / f"{st}.json", missing_only=True, drop_frames=not filmstrip)
                    if not filmstrip:            # as in the kept copy: tables read the same from either
                        cached[st].pop("frames", None)
            self.log(f"[eval_{name}] {m} seed {k}: {len(starts)} start states "
                     f"({len(starts) - len(todo)} cached)")
            if todo and self.report_only:
                self.missing.append(f"{name}/{m}/s{k} ({len(starts) - len(todo)}/{len(starts)})")
                continue
            if todo and (m, k) not in agents:
                # the explicit heads exist for the first baseline_seeds SL seeds only
                runs = closed_loop.Runs(sl=str(root / f"sl_s{k}"), dpo=str(root / f"dpo_s{k}"),
                                        **{st: str(root / self.explicit_run(st, k)) for st in explicit
                                           if k in self.method_seeds(EXPLICIT[st])})
                agents[(m, k)] = closed_loop.Agent(m, runs, data_task=self.data_task, num_candidates=n_cand,
                                                   snap_pick=s.snap_pick)
            folder.mkdir(parents=True, exist_ok=True)
            if todo:
                # the group's missing episodes step together, one selector call per step (each
                # equals its sequential course); their wall time is shared out equally
                sims += [make_task(s.task) for _ in range(len(todo) - len(sims))]
                t0 = time.perf_counter()
                eps = closed_loop.run_episodes(sims, agents[(m, k)], todo, max_steps=settings["max_steps"])
                wall = (time.perf_counter() - t0) / len(todo)
                for st, ep in zip(todo, eps):
                    ep.update(train_seed=k, wall_s=wall, batch=len(todo), settings=settings, origin=self.origin)
                    if st != starts[0] or not filmstrip:
                        ep.pop("frames", None)           # the filmstrip needs one episode's
                    write_json_atomic(folder / f"{st}.json", report.strict_json(ep))
                    self.keep(folder / f"{st}.json", drop_frames=not filmstrip)
                    cached[st] = _load_episode(folder / f"{st}.json", settings)
            episodes[name][m] += [cached[st] for st in starts]
        if self.report_only:             # the settings the episodes were run with
            settings = next((ep["settings"] for set_eps in episodes.values() for eps in set_eps.values()
                             for ep in eps if ep.get("settings")), settings)
        return {name: {"task": s.task, "set": name, "start_seeds": starts, "settings": settings,
                       "methods": {m: method_entry(eps) for m, eps in episodes[name].items() if eps}}
                for name, starts in sets.items()}

    # ------------------------------------------------------------------ the report
    def recorded_origin(self, results: dict) -> dict:
        """What the study's records say they were made with: the commits of its stage and episode
        records, whether any came from a modified checkout, the protocol, and the CPUs they were
        made on where recorded (a resume on another one retrains close, not bit-identical, runs).
        The tables name these, not the call that writes them, so a call that only rebuilds them at
        a later commit writes the same files."""
        origins = [ep.get("origin") or {} for r in results.values() for e in r["methods"].values()
                   for ep in e["episodes"]]
        origins += [json.loads(m.read_text()) for m in sorted((self.root / "stages").glob("*.json"))]
        blobs = sorted({o["preregistration"] for o in origins if o.get("preregistration")})
        named = [o.get("machine") or "not recorded" for o in origins]
        machines = {m: named.count(m) for m in sorted(set(named))} if set(named) - {"not recorded"} else {}
        return {"commits": sorted({o["commit"] for o in origins if o.get("commit")}),
                "dirty": any(bool(o.get("dirty")) for o in origins),
                "preregistration": (blobs[0] if len(blobs) == 1 else blobs) if blobs else self.origin["preregistration"],
                **({"machines": machines} if machines else {})}

    def write(self, results: dict, offline: dict, data: dict) -> dict:
        root = self.root
        paths = {name: report.write_report(r, root / name) for name, r in results.items()}
        origin = self.recorded_origin(results)
        summary = {
            "task": self.s.task, "settings": dataclasses.asdict(self.s), "stage_wall_s": self.times,
            "command": self.command(), "origin": origin, "data": data, "offline": offline,
            "closed_loop": {name: {"start_seeds": r["start_seeds"],
                                   "methods": {m: e["summary"] for m, e in r["methods"].items()},
                                   "seeds": {m: e["seeds"] for m, e in r["methods"].items()},
                                   "vs_sl": ({m: paired_difference(e["episodes"], r["methods"]["sl"]["episodes"])
                                              for m, e in r["methods"].items() if m != "sl"}
                                             if "sl" in r["methods"] else {}),
                                   **({"outcomes": outcomes(r["methods"])} if self.s.preregistration else {})}
                            for name, r in results.items()},
            "files": paths,
        }
        if self.missing:
            summary["incomplete"] = self.missing
        write_json_atomic(root / "study.json", report.strict_json(summary))
        md = self.markdown(results, offline, data, origin, summary["closed_loop"].get("report", {}).get("outcomes"))
        (root / "study.md").write_text(md + "\n")
        for path in [root / "study.json", root / "study.md", *(root / name / "eval.md" for name in results)]:
            self.keep(path)            # the per-set eval.json repeats the kept episodes: rebuilt, not kept
        self.log(md)
        self.log(f"study: {root / 'study.md'}, {root / 'study.json'}; plots in {root / 'report'}")
        return summary

    def regret_column(self, offline) -> dict:
        """{"offline top-1 regret": {method: cell}}: each method's scorer on the held-out
        preference states (SL = first candidate, SL + random = its expectation, DeformPAM = the
        implicit reward of each training seed)."""
        reg = (offline.get("regret") or {}).get("scorers")
        if not reg:
            return {}

        def cell(name):
            r = _nan_for_none(reg.get(name) or {})
            return "" if not r else f"{r['regret']:.4f} ± {r['regret_ci']:.4f}"
        cells = {"sl": cell("first"), "sl_random": cell("random"), "sl_explicit": cell("reward"),
                 "sl_explicit_sl": cell("reward_sl"), "oracle": "0 (by definition)",
                 "deformpam": " / ".join(cell(f"implicit_s{k}") for k in self.seeds)}
        return {"offline top-1 regret": cells}

    def outcome_lines(self, out: dict | None, origin: dict) -> list[str]:
        """The pre-registered outcomes of the report set (:func:`outcomes`) as Markdown lines."""
        if not out:
            return []
        commits = origin["commits"]
        lines = [f"## Pre-registered outcomes (report set; protocol `{self.s.preregistration}`, blob "
                 f"{origin['preregistration']}, {'commit' if len(commits) == 1 else 'commits'} "
                 f"{', '.join(commits) or 'not recorded'})", "",
                 *([f"Stage and episode records made on: {'; '.join(f'{m} ({n})' for m, n in origin['machines'].items())}.", ""]
                   if origin.get("machines") else []),
                 "| outcome | estimate | 95% interval | seeds x states |", "|---|---|---|---|"]
        for kind in ("primary", "secondary"):
            for name, d in out[kind].items():
                if d is None:
                    lines.append(f"| {kind}: {name} | n/a | | |")
                elif "estimate" in d:
                    lines.append(f"| {kind}: {name} | {d['estimate']:+.3f} | [{d['lo']:+.3f}, {d['hi']:+.3f}] ({d['interval']}) | "
                                 f"{d['seeds']} x {d['states']} |")
                else:
                    lines.append(f"| {kind}: {name} | {d['mean']:+.3f} | [{d['lo']:+.3f}, {d['hi']:+.3f}] ({d['interval']}) | "
                                 f"{'/'.join(map(str, d['seeds']))} x {d['n']} |")
        return lines + [""]

    def command(self) -> str:
        """The `pam-jax study` command line that reproduces these settings."""
        s = self.s
        flags = [f"--task {s.task}", f"--run-dir {s.root}", f"--train-seeds {s.train_seeds}",
                 f"--expert-episodes {s.expert_episodes}", f"--sl-steps {s.sl_steps}", f"--states {s.states}",
                 f"--steps-per-episode {s.steps_per_episode}", f"--pref-steps {s.pref_steps}",
                 f"--label-noise {s.label_noise:g}", f"--tune-episodes {s.tune_episodes}",
                 f"--report-episodes {s.report_episodes}", f"--max-steps {s.max_steps}",
                 *(["--per-seed-preferences"] if s.per_seed_preferences else []),
                 *([f"--methods {' '.join(s.methods)}"] if s.methods else []),
                 *([f"--set {' '.join(s.overrides)}"] if s.overrides else []),
                 *([f"--dpo-set {' '.join(s.dpo_overrides)}"] if s.dpo_overrides else []),
                 *([f"--pref-set {' '.join(s.pref_overrides)}"] if s.pref_overrides else []),
                 *([f"--report-seed {s.report_seed}"] if s.report_seed != REPORT_START else []),
                 *([f"--preregistration {s.preregistration}"] if s.preregistration else []),
                 *([f"--baseline-seeds {s.baseline_seeds}"] if s.baseline_seeds != 1 else []),
                 *(["--oracle-every-seed"] if s.oracle_every_seed else []),
                 *([f"--estimator-samples {' '.join(map(str, s.estimator_samples))}".rstrip()]
                   if s.estimator_samples != Settings.estimator_samples else []),
                 *([] if s.snap_pick else ["--no-snap-pick"])]
        return "pam-jax study " + " ".join(flags)

    def markdown(self, results, offline, data, origin: dict, report_outcomes: dict | None = None) -> str:
        s = self.s
        lines = [f"# Study: {s.task}", "", f"    {self.command()}", "",
                 f"{s.train_seeds} training seeds; SL {s.sl_steps or 'default'} steps on {data['expert']['samples']} "
                 f"expert states ({s.expert_episodes} episodes); preference states: "
                 + ", ".join(f"{v['states']} ({v['episodes']} rollouts, stride {v['stride']})"
                             for v in data["preferences"].values())
                 + f"; preference stages: {s.pref_steps or 'the experiment budget'} "
                 + ("steps" if s.pref_steps else "") + f"; episode cap {s.max_steps or 'none'}.", "",
                 *([f"**Partial** (written with --report-only): not yet complete, so left out: "
                    f"{', '.join(self.missing)}.", ""] if self.missing else []),
                 f"## Closed loop, report set ({s.report_episodes} start states from {s.report_seed})", "",
                 (report.table_markdown(results["report"], extra=self.regret_column(offline))
                  if "report" in results else "(no complete method yet)"), "",
                 *self.outcome_lines(report_outcomes, origin),
                 f"## Closed loop, tuning set ({s.tune_episodes} start states from {TUNE_START})", "",
                 report.table_markdown(results["tune"]) if "tune" in results else "(no complete method yet)", "",
                 "## Offline (held-out preference states)", "",
                 "| scorer | pair accuracy (candidates) | pair accuracy (vs annotator) | states |", "|---|---|---|---|"]
        for n, a in offline["pair_accuracy"].items():
            lines.append(f"| {n} | {report.percent(a['candidates'])} ({a['pairs']['candidates']} pairs) | "
                         f"{report.percent(a['vs_annotator'])} ({a['pairs']['vs_annotator']} pairs) | {a['states']} |")
        if offline.get("regret") and regret_eval is not None:
            lines += ["", regret_eval.format_regret(_nan_for_none(offline["regret"]))]
        if offline.get("estimators"):
            lines += ["", f"Implicit-reward estimators on the same states (means over {len(self.seeds)} training seeds; "
                      "shared_t: one t per Monte-Carlo sample shared by the candidates, the paper's; crn: t and "
                      "eps shared; independent: t per candidate):", "",
                      "| estimator | regret | normalised gain | top-1 | pair accuracy |", "|---|---|---|---|---|"]
            def cell(x, fmt):
                return "n/a" if x is None else format(x, fmt)
            lines += [f"| {n} | {cell(e['regret'], '.4f')} | {cell(e['norm_gain'], '+.3f')} | "
                      f"{report.percent(e['top1'])} | {report.percent(e['pair_accuracy'])} |"
                      for n, e in sorted(offline["estimators"].items(), key=_estimator_order)]
        lines += ["", "## Wall time per stage", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {n} | {t:.1f} |" for n, t in self.times.items()]
        return "\n".join(lines)


ROOT = "{root}"


def outcomes(methods: dict) -> dict:
    """The pre-registered outcomes of one evaluation set ({method: result entry}): primary,
    DeformPAM - SL (seeds paired); secondary, DeformPAM - SL + random and DeformPAM - each
    explicit head (on the seeds both ran, paired), and the selection efficiency
    (DeformPAM - SL) / (oracle - SL)."""
    eps = {m: e["episodes"] for m, e in methods.items()}
    if "deformpam" not in eps or "sl" not in eps:
        return {}
    out = {"primary": {"deformpam - sl": paired_difference(eps["deformpam"], eps["sl"])}, "secondary": {}}
    for m in ("sl_random", *EXPLICIT.values()):
        if m in eps:
            seeds = {int(e.get("train_seed") or 0) for e in eps[m]}
            out["secondary"][f"deformpam - {m}"] = paired_difference(on_seeds(eps["deformpam"], seeds), eps[m])
    if "oracle" in eps:
        out["secondary"]["selection efficiency"] = selection_efficiency(eps["deformpam"], eps["sl"], eps["oracle"])
    return out


def _rooted(x, root: pathlib.Path):
    """`x` with every string path under the run folder written from ROOT, so that stage records
    hold no machine's folder and compare equal under another --run-dir."""
    if isinstance(x, dict):
        return {k: _rooted(v, root) for k, v in x.items()}
    if isinstance(x, list):
        return [_rooted(v, root) for v in x]
    if isinstance(x, str):
        for prefix in (str(root.absolute()), str(root)):
            if x == prefix or x.startswith(prefix + "/"):
                return ROOT + x[len(prefix):]
    return x


def _unrooted(x, root: pathlib.Path):
    """The inverse of :func:`_rooted`: ROOT back to this run folder."""
    if isinstance(x, dict):
        return {k: _unrooted(v, root) for k, v in x.items()}
    if isinstance(x, list):
        return [_unrooted(v, root) for v in x]
    if isinstance(x, str) and (x == ROOT or x.startswith(ROOT + "/")):
        return str(root) + x[len(ROOT):]
    return x


def _estimator_order(item) -> tuple:
    """Sort key of an estimators entry "<noise> M=<M>": REWARD_NOISE's order, then M."""
    noise, m = item[0].split(" M=")
    return (REWARD_NOISE.index(noise) if noise in REWARD_NOISE else len(REWARD_NOISE), int(m))


def _mean_of(values) -> float | None:
    """The mean of the finite values, None when there is none."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _nan_for_none(x):
    """The inverse of strict JSON's NaN -> null, for formatters that expect numbers."""
    if isinstance(x, dict):
        return {k: _nan_for_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_for_none(v) for v in x]
    return float("nan") if x is None else x


def _load_episode(path: pathlib.Path, settings: dict | None) -> dict | None:
    """A cached episode, None when absent or run with other settings (settings None: any)."""
    if not path.exists():
        return None
    ep = json.loads(path.read_text())
    if settings is not None and ep.get("settings") != settings:
        return None
    for f in ep.get("frames") or []:
        f["cloud"], f["candidates"] = np.asarray(f["cloud"]), np.asarray(f["candidates"])
    return ep


def _depends_on_dpo(rel: pathlib.Path) -> bool:
    """Whether a file of a study's run folder (relative path) is an output of, or depends on, its
    DPO stages: those runs, their stage records, the offline metrics, the episodes of the
    methods that use the DPO model, and the tables."""
    top = rel.parts[0]
    return (fnmatch.fnmatch(top, "dpo_s*") or top in ("report", "tune", "study.json", "study.md")
            or (top == "stages" and (fnmatch.fnmatch(rel.name, "dpo_s*.json")
                                     or rel.name in ("offline.json", "estimators.json")))
            or (top == "eval" and len(rel.parts) > 2 and rel.parts[2] in USES_DPO))


def _supervised_only(rel: pathlib.Path) -> bool:
    """Whether a file of a study's run folder is part of its expert data or SL runs."""
    top = rel.parts[0]
    return (fnmatch.fnmatch(top, "sl_s*") or rel.parts[:2] == ("src", "supervised")
            or (top == "tfds" and len(rel.parts) > 2 and rel.parts[2].endswith("_supervised"))
            or (top == "stages" and (rel.name == "expert.json" or fnmatch.fnmatch(rel.name, "sl_s*.json"))))


def _preference_free(rel: pathlib.Path) -> bool:
    """Whether a file of a study's run folder depends on neither its preference data nor what
    was trained on it: the expert data, the SL runs, and the episodes of SL, SL + random and
    the oracle."""
    return _supervised_only(rel) or (rel.parts[0] == "eval" and len(rel.parts) > 2
                                     and rel.parts[2] in PREFERENCE_FREE)


def reuse_level(base, settings: Settings) -> str:
    """What a study with `settings` may copy from the study in `base` (:func:`reuse_study`'s
    ``keep``): only the supervised part when the pick snapping differs (other episodes), the
    preference-free part when the preference data or the recipe of every preference stage
    differs (per-seed or shared, the number of states, `pref_overrides`), else everything that
    does not depend on the DPO stages."""
    prefs = sorted((pathlib.Path(base) / "stages").glob("preferences*.json"))
    params = json.loads(prefs[0].read_text())["params"] if prefs else {}
    base_snap = "snap" in params
    own_snap = select_lib.task_snap(settings.task, settings.snap_pick)["snap"] != "none"
    base_per_seed = any(p.name != "preferences.json" for p in prefs)
    if own_snap != base_snap:
        return "supervised"
    if (bool(settings.per_seed_preferences) != base_per_seed or params.get("states") != settings.states
            or settings.pref_overrides):
        return "preferences"
    return "dpo"


def reuse_study(base, root, log=print, *, keep: str = "dpo") -> int:
    """Copy into `root` what a study in `base` computed that the changed stages do not touch,
    so that a variant is trained and evaluated against the same SL. ``keep``: ``"dpo"`` (a DPO
    variant, `dpo_overrides`): everything that does not depend on the DPO stages (expert data,
    SL runs, preference data, explicit baselines, the episodes of the methods without the
    implicit reward); ``"preferences"`` (other preference data, e.g. `per_seed_preferences`):
    the expert data, SL runs and the episodes of SL, SL + random and the oracle;
    ``"supervised"`` (other episodes too, e.g. `snap_pick`): only the expert data and SL runs.
    Files already in `root` are kept. Every copied stage is still checked against this study's
    settings: one run with other settings is an error. -> files copied."""
    levels = {"dpo": lambda rel: not _depends_on_dpo(rel), "preferences": _preference_free,
              "supervised": _supervised_only}
    if keep not in levels:
        raise ValueError(f"keep: expected one of {tuple(levels)}, got {keep!r}")
    wanted = levels[keep]
    base, root = pathlib.Path(base), pathlib.Path(root)
    if not (base / "stages").is_dir():
        raise ValueError(f"--reuse: {base} holds no study (no stages/ folder)")
    if base.resolve() == root.resolve():
        raise ValueError("--reuse: the base study is this run folder")
    n = 0
    for src in sorted(base.rglob("*")):
        rel = src.relative_to(base)
        if not src.is_file() or not wanted(rel):
            continue
        dest = root / rel
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
            n += 1
    log(f"reused {n} files from {base}")
    return n


def run(task: str, *, root=None, scale: str = "small", fresh: bool = False, progress: bool = True,
        log=print, results=None, report_only: bool = False, reuse=None, **sizes) -> dict:
    """The whole study (see the module docstring); `sizes` override the scale's (Settings fields);
    `results`: the folder the small result files are mirrored to (and restored from);
    `report_only`: the tables from what is cached, nothing computed; `reuse`: another study's
    run folder whose DPO-independent stages and episodes are copied first (:func:`reuse_study`)."""
    root = pathlib.Path(root or f"runs/study_{tasks_lib.sim_task_name(task)}")
    settings = Settings.from_scale(task, root, scale, **sizes)
    if fresh and root.exists():
        shutil.rmtree(root)
    if reuse is not None:
        reuse_study(reuse, root, log=log, keep=reuse_level(reuse, settings))
    log(f"study of {settings.task} ({scale} scale) in {root}")
    return Study(settings, progress=progress, log=log, results=results, report_only=report_only).run()
