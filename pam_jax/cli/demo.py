"""`pam-jax demo`: the built-in end-to-end demo, the study at its demo scale."""
from __future__ import annotations

import pathlib
import shutil

from pam_jax.cli.common import METHODS


def cmd_demo(args) -> int:
    """The study of a simulated task (default: granular) at demo scale, or the toy bar task's demo."""
    from pam_jax.workflows import demo

    if args.task != "toy":
        sizes = {"expert_episodes": args.episodes, "sl_steps": args.steps, "states": args.states,
                 "pref_steps": args.pref_steps, "label_noise": args.label_noise, "train_seeds": args.train_seeds,
                 "tune_episodes": args.tune_episodes, "report_episodes": args.eval_episodes,
                 "report_seed": args.report_seed, "methods": tuple(args.methods) if args.methods else None,
                 "overrides": tuple(args.set or ())}
        demo.run(args.task, root=args.run_dir, fresh=args.fresh, progress=not args.no_progress, **sizes)
        return 0
    root = pathlib.Path(args.run_dir or "runs/demo_toy")
    if args.fresh and root.exists():
        shutil.rmtree(root)
    return demo.toy_demo(root, args.steps or 0)


def add_parser(sub, sim_tasks) -> None:
    d = sub.add_parser("demo", help="the built-in end-to-end demo (what `make demo` runs)",
                       description="`pam-jax study` at its demo scale on a simulated task (default: granular): "
                                   "expert demos, the SL policy, on-policy candidates ranked by the oracle "
                                   "annotator, DPO, offline metrics, then the closed loop of SL, SL + random "
                                   "and DeformPAM on tuning start states and on a disjoint report set (from "
                                   "seed 2000), ending in the study's table and DeformPAM - SL with its 95% "
                                   "interval. Every stage resumes: rerunning the command skips what is done. "
                                   "Size flags override the demo scale. --task toy runs the toy bar task's "
                                   "own demo instead.")
    d.add_argument("--task", choices=[*sim_tasks, "toy"], default="granular")
    d.add_argument("--run-dir", default=None, help="default runs/demo_TASK")
    d.add_argument("--fresh", action="store_true", help="delete the run folder first")
    d.add_argument("--steps", type=int, default=None, help="supervised steps (0 = the experiment's)")
    d.add_argument("--episodes", type=int, default=None, help="expert episodes")
    d.add_argument("--states", type=int, default=None, help="preference states")
    d.add_argument("--pref-steps", type=int, default=None,
                   help="steps of each preference stage (0 = the experiment's budget)")
    d.add_argument("--label-noise", type=float, default=None, help="rate of flipped 0/1 preference labels")
    d.add_argument("--train-seeds", type=int, default=None, help="SL and DPO training seeds")
    d.add_argument("--tune-episodes", type=int, default=None, help="tuning start states (seeds from 1000)")
    d.add_argument("--eval-episodes", type=int, default=None,
                   help="report start states (seeds from --report-seed); 0 = none")
    d.add_argument("--report-seed", type=int, default=None, help="first start seed of the report set (default 2000)")
    d.add_argument("--methods", nargs="+", default=None, choices=METHODS, metavar="METHOD",
                   help="%(choices)s (default: sl sl_random deformpam)")
    d.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="config overrides for every training stage, e.g. --set model.width=240")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)
