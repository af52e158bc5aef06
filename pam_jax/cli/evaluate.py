"""`pam-jax eval`: the toy task, a simulated task in closed loop, or held-out pairs."""
from __future__ import annotations

import argparse
import json
import pathlib

from pam_jax.cli.common import METHODS, REWARD_NOISE


def cmd_eval(args) -> int:
    from pam_jax import config as config_lib
    from pam_jax.train.checkpoint import Checkpointer

    if args.pairs:
        return _eval_pairs(args)
    if args.task:
        return _eval_sim(args)
    if not args.run:
        raise ValueError("pam-jax eval: give --run RUN (toy task) or --task TASK --sl RUN (simulated task)")
    run = pathlib.Path(args.run)
    meta = Checkpointer(run / "checkpoints", create=False).restore_meta()
    cfg = config_lib.from_dict(meta["config"])
    if cfg.data.source == "toy_preference" and cfg.train.stage == "dpo":
        from pam_jax.eval import report
        from pam_jax.toy import preference_eval as toy_preference

        # the SL run it was trained from (kept in the run); --sl, if given, must be that run
        r = toy_preference.evaluate_selection(args.sl, run, scenes=args.scenes, sl_step=args.sl_step,
                                              num_candidates=cfg.preference.num_candidates,
                                              reward_samples=cfg.preference.reward_samples, seed=args.seed)
        print(json.dumps(r) if args.json else report.ras_report(r, args.scenes))
        return 0
    if args.sl or args.sl_step is not None:
        raise ValueError(f"pam-jax eval --run {run}: a {cfg.train.stage!r} run is evaluated alone; --sl and --sl-step "
                         "apply to a DPO run (its reference) or to --task / --pairs")
    if cfg.data.source != "toy_bimodal":
        raise ValueError(f"pam-jax eval --run evaluates toy runs; for data.source={cfg.data.source!r} "
                         "use a simulated task: pam-jax eval --task TASK --sl RUN [--dpo RUN]")
    from pam_jax.eval import report
    from pam_jax.toy import evaluate as toy

    png = args.png or str(run / "samples.png")
    r = toy.evaluate(run, scenes=args.scenes, samples=args.samples, seed=args.seed, png=png)
    print(json.dumps(r) if args.json else report.toy_report(r, args.scenes, args.samples, png))
    return 0


def _eval_sim(args) -> int:
    from pam_jax.eval import closed_loop as evaluate
    from pam_jax.eval import report

    if not args.sl:
        raise ValueError("pam-jax eval --task needs --sl RUN (the supervised run)")
    runs = evaluate.Runs(sl=args.sl, dpo=args.dpo or "", reward=args.reward or "", reward_sl=args.reward_sl or "",
                         sl_step=args.sl_step)
    result = evaluate.evaluate(args.task, runs, methods=tuple(args.methods), seeds=range(args.seed, args.seed + args.episodes),
                               num_candidates=args.candidates, reward_samples=args.reward_samples,
                               reward_noise=args.reward_noise, max_steps=args.max_steps or None,
                               snap_pick=args.snap_pick is not False)
    paths = report.write_report(result, args.out or f"runs/eval_{args.task}")
    print(report.table_markdown(result))
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    return 0


def _eval_pairs(args) -> int:
    from pam_jax.eval import pairs as reward_eval
    from pam_jax.eval import regret
    from pam_jax.eval.report import percent

    if not args.sl or not (args.dpo or args.reward or args.reward_sl):
        raise ValueError("pam-jax eval --pairs DATASET needs --sl RUN and --dpo RUN and/or --reward RUN and/or "
                         "--reward-sl RUN")
    from pam_jax.eval.checks import check_pairs_dataset, check_runs

    _, data_task = check_pairs_dataset(args.pairs)   # a finetune dataset, and runs of its task
    check_runs(data_task, {"sl": args.sl, "dpo": args.dpo or "", "reward": args.reward or "",
                           "reward_sl": args.reward_sl or ""})
    out, scorers = {}, {}
    for name, mode, run in (("implicit", "implicit", args.dpo), ("explicit", "explicit", args.reward),
                            ("explicit_sl", "explicit", args.reward_sl)):
        if run:
            scorers[name] = built = reward_eval.make_scorer(mode, args.sl, run, args.reward_samples, args.reward_noise,
                                                            sl_step=args.sl_step)
            out[name] = acc = reward_eval.pair_accuracy(args.sl, run, args.pairs, mode=mode, seed=args.seed,
                                                        scorer=built)
            if not args.json:
                print(f"{name} reward ({run}), {acc['states']} held-out states: "
                      + ", ".join(f"{k.replace('_', ' ')} {percent(acc[k])}"
                                  f" ({acc['pairs'][k]} pairs)" for k in ("candidates", "vs_annotator")))
    try:
        src = regret.source_folder(args.pairs, args.gains)
    except (ValueError, FileNotFoundError) as e:
        if args.gains:
            raise
        src, note = None, f"no top-1 regret: {e}"
    if src is not None:
        num_points = next(iter(scorers.values()))[1].data.num_points
        out["regret"] = r = regret.selection_regret(args.pairs, {n: score for n, (score, _) in scorers.items()},
                                                    num_points=num_points, src_dir=src, seed=args.seed)
        note = (regret.format_regret(r) if r["states"] else
                f"no top-1 regret: none of the held-out samples under {src} records the oracle's gains")
    if args.json:
        print(json.dumps(out))
    else:
        print(note)
    return 0


def add_parser(sub, sim_tasks) -> None:
    e = sub.add_parser("eval", help="evaluate trained runs", description="Evaluate trained runs: the toy "
                       "task (--run: sample fresh scenes, score against the true endpoints; a DPO run compares "
                       "SL with reward-guided selection) or a simulated task in closed loop (--task --sl [--dpo]).")
    e.add_argument("--run", help="toy task: the run folder (holds checkpoints/)")
    e.add_argument("--task", choices=sim_tasks, help="simulated task: closed-loop evaluation")
    e.add_argument("--sl", help="the supervised run (simulated task, pairs; with --run DPO: checked to be the "
                                "run it was trained from)")
    e.add_argument("--sl-step", type=int, default=None,
                   help="use this SL checkpoint instead of the one the preference runs were trained against")
    e.add_argument("--dpo", help="simulated task: the DPO run (deformpam, dpo methods)")
    e.add_argument("--reward", help="simulated task: the paper's explicit reward run (sl_explicit method)")
    e.add_argument("--reward-sl", help="simulated task: the SL-initialised explicit reward run (sl_explicit_sl method)")
    e.add_argument("--methods", nargs="+", default=["sl", "deformpam"], choices=METHODS, metavar="METHOD",
                   help="methods to evaluate: %(choices)s")
    e.add_argument("--episodes", type=int, default=10, help="simulated task: seeded start states")
    e.add_argument("--candidates", type=int, default=8, help="N candidates per decision")
    e.add_argument("--reward-samples", type=int, default=None,
                   help="M Monte-Carlo samples of the implicit reward (default: the DPO run's preference.reward_samples)")
    e.add_argument("--reward-noise", choices=REWARD_NOISE, default=None, metavar="NOISE",
                   help="what the candidates share in each Monte-Carlo sample of the implicit reward: the timestep "
                        "(shared_t, the paper's), timestep and noise (crn), nothing (independent); default: the DPO run's")
    e.add_argument("--max-steps", type=int, default=0, help="cap on steps per episode (0 = the task's limit)")
    e.add_argument("--snap-pick", action=argparse.BooleanOptionalAction, default=None,
                   help="simulated task: the task's pick snapping applied to the executed action (default: on where "
                        "the task has a rule: rope, cloth)")
    e.add_argument("--out", help="report folder (default runs/eval_TASK)")
    e.add_argument("--pairs", metavar="DATASET_DIR",
                   help="instead: held-out pair accuracy of --dpo (implicit), --reward and --reward-sl (explicit) "
                        "against --sl on the validation and test splits of this finetune data set, and the top-1 "
                        "selection regret of each scorer (and of first/random) where the samples record the oracle's gains")
    e.add_argument("--gains", metavar="SRC_DIR",
                   help="with --pairs: the sample folder holding the gains (default: the one the data set was built from)")
    e.add_argument("--scenes", type=int, default=64)
    e.add_argument("--samples", type=int, default=16)
    e.add_argument("--seed", type=int, default=12345)
    e.add_argument("--png", default=None, help="where to draw the samples (default RUN/samples.png)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)
