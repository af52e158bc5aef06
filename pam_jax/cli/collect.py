"""`pam-jax collect`: oracle-ranked candidates of an SL policy's rollouts."""
from __future__ import annotations

import argparse


def cmd_collect(args) -> int:
    from pam_jax.eval.checks import check_runs
    from pam_jax.workflows.collect import EARLY, collect

    check_runs(args.task, {"sl": args.sl})   # a supervised run of this task, before any rollout
    horizon = EARLY if args.early else {"warmup_steps": args.warmup_steps, "stride": args.stride or None,
                                        "steps_per_episode": args.steps_per_episode or None}
    if args.unlabelled or args.clouds:
        return _cmd_unlabelled(args, horizon)
    r = collect(args.task, args.sl, args.out, states=args.states, num_candidates=args.candidates,
                label_noise=args.label_noise, seed=args.seed, max_steps=args.max_steps or None,
                snap_pick=args.snap_pick is not False, **horizon)
    print(f"{r['samples']} preference states written to {args.out} (labels {r['label_counts']}); build with:\n"
          f"  pam-jax data build deformpam --src {args.out} --task {r['data_task']} --kind finetune")
    return 0


def _cmd_unlabelled(args, horizon: dict) -> int:
    from pam_jax.workflows.collect import collect_unlabelled

    if args.label_noise:
        raise ValueError("--label-noise: unlabelled candidates have no labels to flip")
    if args.clouds:
        r = collect_unlabelled(args.task, args.sl, args.out, clouds=args.clouds, num_candidates=args.candidates,
                               seed=args.seed)
    else:
        r = collect_unlabelled(args.task, args.sl, args.out, states=args.states, num_candidates=args.candidates,
                               seed=args.seed, max_steps=args.max_steps or None, **horizon)
    print(f"{r['samples']} unlabelled states written to {args.out}"
          + (f" ({r['skipped_existing']} already there, kept)" if r["skipped_existing"] else "")
          + f"; rank them, then build:\n  pam-jax annotate --data {args.out} --task {r['data_task']}\n"
          f"  pam-jax data build deformpam --src {args.out} --task {r['data_task']} --kind finetune")
    return 0


def add_parser(sub, sim_tasks) -> None:
    c = sub.add_parser("collect", help="roll out an SL policy and record oracle-ranked candidates",
                       description="Roll out a trained SL policy in a simulated task, record its candidates "
                                   "at each state, rank them with the oracle annotator, and write finetune "
                                   "samples in the published DeformPAM layout. With --unlabelled (or --clouds "
                                   "DIR, recorded clouds) the candidates are written with no labels, for "
                                   "people to rank in `pam-jax annotate`.")
    c.add_argument("--task", required=True, choices=sim_tasks)
    c.add_argument("--sl", required=True, help="the supervised run folder")
    c.add_argument("--out", required=True, help="folder for the sample folders")
    c.add_argument("--states", type=int, default=48)
    c.add_argument("--candidates", type=int, default=8, help="K candidates per state")
    c.add_argument("--unlabelled", action="store_true",
                   help="write the candidates with no labels, for people to rank in `pam-jax annotate`")
    c.add_argument("--clouds", default=None, metavar="DIR",
                   help="recorded clouds (.npy/.npz files, metres) instead of simulated rollouts: one "
                        "unlabelled sample per file (implies --unlabelled; the horizon options do not apply)")
    c.add_argument("--steps-per-episode", type=int, default=10,
                   help="states recorded per episode, spread over the whole horizon (0 = every stride-th "
                        "step to the end)")
    c.add_argument("--stride", type=int, default=0,
                   help="steps between recorded states (0 = horizon / steps-per-episode)")
    c.add_argument("--warmup-steps", type=int, default=0, help="up to this many expert steps first")
    c.add_argument("--max-steps", type=int, default=0, help="horizon cap (0 = the task's step limit)")
    c.add_argument("--early", action="store_true",
                   help="the old early-horizon protocol: --warmup-steps 3 --steps-per-episode 4 --stride 1")
    c.add_argument("--label-noise", type=float, default=0.0, help="rate of flipped 0/1 labels")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--snap-pick", action=argparse.BooleanOptionalAction, default=None,
                   help="the task's pick snapping applied to the executed candidates (default: on where the task has a rule)")
    c.set_defaults(func=cmd_collect)
