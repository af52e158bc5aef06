"""`pam-jax study`: the whole comparison of one simulated task."""
from __future__ import annotations

import argparse

from pam_jax.cli.common import METHODS


def cmd_study(args) -> int:
    from pam_jax.workflows import study

    sizes = {"train_seeds": args.train_seeds, "expert_episodes": args.expert_episodes, "sl_steps": args.sl_steps,
             "states": args.states, "steps_per_episode": args.steps_per_episode, "pref_steps": args.pref_steps,
             "label_noise": args.label_noise, "tune_episodes": args.tune_episodes,
             "report_episodes": args.report_episodes, "max_steps": args.max_steps,
             "per_seed_preferences": args.per_seed_preferences or None,
             "methods": tuple(args.methods) if args.methods else None, "overrides": tuple(args.set or ()),
             "dpo_overrides": tuple(args.dpo_set or ()), "pref_overrides": tuple(args.pref_set or ()), "snap_pick": args.snap_pick,
             "report_seed": args.report_seed, "preregistration": args.preregistration,
             "baseline_seeds": args.baseline_seeds, "oracle_every_seed": args.oracle_every_seed or None,
             "estimator_samples": None if args.estimator_samples is None else tuple(args.estimator_samples)}
    study.run(args.task, root=args.run_dir, scale=args.scale, fresh=args.fresh, progress=not args.no_progress,
              results=args.results, report_only=args.report_only, reuse=args.reuse, **sizes)
    return 0


def add_parser(sub, sim_tasks) -> None:
    st = sub.add_parser("study", help="the whole comparison of one simulated task, resumable",
                        description="Expert data, SL over several training seeds, whole-horizon preferences, "
                                    "DPO per seed, the explicit baselines, held-out offline metrics, and the "
                                    "closed-loop evaluation of every method on tuning and report start states, "
                                    "ending in one table (RUN_DIR/study.md, study.json) and its plots. Every "
                                    "stage resumes: rerunning the command skips what is done. Size flags "
                                    "override the --scale preset.")
    st.add_argument("--task", required=True, choices=sim_tasks)
    st.add_argument("--scale", choices=["small", "demo", "full"], default="small",
                    help="small: a smoke test in minutes; demo: what `pam-jax demo` runs (about 10 minutes on 2 "
                         "cores); full: the studies' size (3 seeds, 30 report states)")
    st.add_argument("--run-dir", default=None, help="default runs/study_TASK")
    st.add_argument("--fresh", action="store_true", help="delete the run folder first")
    st.add_argument("--train-seeds", type=int, help="SL (and DPO) training seeds")
    st.add_argument("--expert-episodes", type=int)
    st.add_argument("--sl-steps", type=int, help="0 = the experiment's")
    st.add_argument("--states", type=int, help="preference states")
    st.add_argument("--steps-per-episode", type=int, help="preference states recorded per rollout")
    st.add_argument("--per-seed-preferences", action="store_true",
                    help="collect preferences from every SL seed (default: from seed 0)")
    st.add_argument("--pref-steps", type=int, help="steps of each preference stage (0 = the experiment's budget)")
    st.add_argument("--label-noise", type=float)
    st.add_argument("--tune-episodes", type=int, help="tuning start states (seeds from 1000)")
    st.add_argument("--report-episodes", type=int,
                    help="report start states (seeds from --report-seed, disjoint); 0 = none (a tuning run)")
    st.add_argument("--max-steps", type=int, help="cap on every episode's steps (0 = the task's limit)")
    st.add_argument("--methods", nargs="+", choices=METHODS, metavar="METHOD",
                    help="%(choices)s (default: every method)")
    st.add_argument("--estimator-samples", nargs="*", type=int, metavar="M",
                    help="the Monte-Carlo sample counts of the estimators stage (default 10 30 100; none: no such stage)")
    st.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                    help="config overrides for every training stage")
    st.add_argument("--dpo-set", nargs="+", action="extend", metavar="KEY=VALUE",
                    help="config overrides for the DPO stages only: a DeformPAM variant (use with --reuse)")
    st.add_argument("--pref-set", nargs="+", action="extend", metavar="KEY=VALUE",
                    help="config overrides for every preference stage, DPO and the explicit heads alike "
                         "(a recipe at one budget for both)")
    st.add_argument("--snap-pick", action=argparse.BooleanOptionalAction, default=None,
                    help="the task's pick snapping applied to every executed action (rope: the mean xy of the 200 "
                         "points around the nearest cloud point, z kept; cloth: the nearest cloud point); "
                         "default on where the task has a rule")
    st.add_argument("--report-seed", type=int, default=None,
                    help="first start seed of the report set (default 2000); the tuning set is 1000..")
    st.add_argument("--baseline-seeds", type=int,
                    help="SL seeds 0.. that SL + random, the oracle and the explicit heads run for (default 1; "
                         "SL, DPO alone and DeformPAM run for every training seed)")
    st.add_argument("--oracle-every-seed", action="store_true",
                    help="run the oracle best-of-N over every SL seed's candidates (else as --baseline-seeds)")
    st.add_argument("--preregistration", metavar="FILE",
                    help="the committed protocol this study runs under (clean checkout required): its git blob sha "
                         "and the code commit go into every stage and episode record")
    st.add_argument("--reuse", metavar="RUN_DIR",
                    help="copy another study's stages and episodes that do not depend on its DPO stages (expert "
                         "data, SL, preferences, explicit baselines, their episodes) into this run folder first; "
                         "with another --snap-pick or --per-seed-preferences setting, only what those leave valid")
    st.add_argument("--results", metavar="DIR",
                    help="mirror the small result files (stage records, episodes, tables) to DIR, e.g. a committed "
                         "folder, and restore them from it into a run folder that lacks them; missing datasets and "
                         "checkpoints are then recomputed")
    st.add_argument("--report-only", action="store_true",
                    help="write the tables from the cached episodes (complete method/seed groups only); compute nothing")
    st.add_argument("--no-progress", action="store_true", help="no progress bars")
    st.set_defaults(func=cmd_study)
