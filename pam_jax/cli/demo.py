"""`pam-jax demo`: the built-in end-to-end demo."""
from __future__ import annotations

import pathlib
import shutil

from pam_jax.cli.common import LazyChoices, methods


def cmd_demo(args) -> int:
    """The three DeformPAM stages on a simulated task (default: rope) or on the toy bar task."""
    root = pathlib.Path(args.run_dir or f"runs/demo_{args.task}")
    if args.fresh and root.exists():
        shutil.rmtree(root)
    from pam_jax.workflows import demo

    if args.task != "toy":
        from pam_jax.eval.closed_loop import METHODS

        methods = METHODS if args.methods == ["all"] else tuple(args.methods)
        demo.run(args.task, root=root, episodes=args.episodes, states=args.states,
                     eval_episodes=args.eval_episodes, methods=methods, sl_steps=args.steps,
                     pref_steps=args.pref_steps, label_noise=args.label_noise, overrides=args.set or ())
        return 0
    return demo.toy_demo(root, args.steps)


def add_parser(sub, sim_tasks) -> None:
    d = sub.add_parser("demo", help="the built-in end-to-end demo (what `make demo` runs)",
                       description="The three DeformPAM stages on a simulated task (default: rope): expert "
                                   "demos, the SL policy, on-policy candidates ranked by the oracle annotator, "
                                   "DPO (and the explicit reward head if sl_explicit is evaluated), then "
                                   "closed-loop evaluation. --task toy runs them on the toy bar task. Every "
                                   "stage resumes: rerunning the command skips what is done.")
    d.add_argument("--task", choices=[*sim_tasks, "toy"], default="rope")
    d.add_argument("--run-dir", default=None, help="default runs/demo_TASK")
    d.add_argument("--steps", type=int, default=0, help="supervised steps (default: the experiment's)")
    d.add_argument("--fresh", action="store_true", help="delete the run folder first")
    d.add_argument("--episodes", type=int, default=20, help="expert episodes")
    d.add_argument("--states", type=int, default=48, help="preference states (about 10 per SL rollout)")
    d.add_argument("--pref-steps", type=int, default=0,
                   help="steps of each preference stage, DPO and reward head (default: the experiment's)")
    d.add_argument("--label-noise", type=float, default=0.0, help="rate of flipped 0/1 preference labels")
    d.add_argument("--eval-episodes", type=int, default=10, help="evaluation episodes per method")
    d.add_argument("--methods", nargs="+", default=["sl", "sl_random", "deformpam"],
                   choices=LazyChoices(methods, "all"), metavar="METHOD",
                   help="methods to evaluate ('all': every one): %(choices)s")
    d.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="config overrides for every stage, e.g. --set model.width=240 preference.beta=50")
    d.set_defaults(func=cmd_demo)
