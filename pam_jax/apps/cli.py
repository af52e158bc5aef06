"""`pam-jax`: one command, one subcommand per job. Every subcommand has --help.

Errors in the user's input (bad config keys, missing files, bad checkpoints, bad data) end with
one line on stderr, never a traceback from deep inside JAX.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys


def _load_config(args):
    from pam_jax import config as config_lib

    cfg = config_lib.load_experiment(args.experiment)
    return config_lib.override(cfg, args.set or [])


def cmd_train(args) -> int:
    from pam_jax.apps import distributed
    from pam_jax.train.loop import train

    log = distributed.start(args)   # --distributed: join the run first; log lines then name their process
    cfg = _load_config(args)
    result = train(cfg, progress_bar=not args.no_progress, log=log)
    rate = f", {result.steps_per_sec:.2f} steps/s" if result.steps_per_sec else ""
    log(f"done: step {int(result.state.step)}{rate}; checkpoints in {result.run_dir / 'checkpoints'}")
    return 0


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
        from pam_jax.eval import report, toy_preference

        r = toy_preference.evaluate_selection(meta["parent"]["run_dir"], run, scenes=args.scenes,
                                              num_candidates=cfg.preference.num_candidates,
                                              reward_samples=cfg.preference.reward_samples, seed=args.seed)
        print(json.dumps(r) if args.json else report.ras_report(r, args.scenes))
        return 0
    if cfg.data.source != "toy_bimodal":
        raise ValueError(f"pam-jax eval --run evaluates toy runs; for data.source={cfg.data.source!r} "
                         "use a simulated task: pam-jax eval --task TASK --sl RUN [--dpo RUN]")
    from pam_jax.eval import report, toy

    png = args.png or str(run / "samples.png")
    r = toy.evaluate(run, scenes=args.scenes, samples=args.samples, seed=args.seed, png=png)
    print(json.dumps(r) if args.json else report.toy_report(r, args.scenes, args.samples, png))
    return 0


def _eval_sim(args) -> int:
    from pam_jax.eval import closed_loop as evaluate
    from pam_jax.eval import report

    if not args.sl:
        raise ValueError("pam-jax eval --task needs --sl RUN (the supervised run)")
    runs = evaluate.Runs(sl=args.sl, dpo=args.dpo or "", reward=args.reward or "", reward_sl=args.reward_sl or "")
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
            scorers[name] = built = reward_eval.make_scorer(mode, args.sl, run, args.reward_samples, args.reward_noise)
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


def cmd_demo(args) -> int:
    """The three DeformPAM stages on a simulated task (default: rope) or on the toy bar task."""
    root = pathlib.Path(args.run_dir or f"runs/demo_{args.task}")
    if args.fresh and root.exists():
        shutil.rmtree(root)
    from pam_jax.apps import demo

    if args.task != "toy":
        from pam_jax.eval.closed_loop import METHODS

        methods = METHODS if args.methods == ["all"] else tuple(args.methods)
        demo.run(args.task, root=root, episodes=args.episodes, states=args.states,
                     eval_episodes=args.eval_episodes, methods=methods, sl_steps=args.steps,
                     pref_steps=args.pref_steps, label_noise=args.label_noise, overrides=args.set or ())
        return 0
    return demo.toy_demo(root, args.steps)


def cmd_collect(args) -> int:
    from pam_jax.apps.collect import EARLY, collect
    from pam_jax.eval.checks import check_runs

    check_runs(args.task, {"sl": args.sl})   # a supervised run of this task, before any rollout
    horizon = EARLY if args.early else {"warmup_steps": args.warmup_steps, "stride": args.stride or None,
                                        "steps_per_episode": args.steps_per_episode or None}
    r = collect(args.task, args.sl, args.out, states=args.states, num_candidates=args.candidates,
                label_noise=args.label_noise, seed=args.seed, max_steps=args.max_steps or None,
                snap_pick=args.snap_pick is not False, **horizon)
    print(f"{r['samples']} preference states written to {args.out} (labels {r['label_counts']}); build with:\n"
          f"  pam-jax data build deformpam --src {args.out} --task {r['data_task']} --kind finetune")
    return 0


def cmd_study(args) -> int:
    from pam_jax.apps import study

    sizes = {"train_seeds": args.train_seeds, "expert_episodes": args.expert_episodes, "sl_steps": args.sl_steps,
             "states": args.states, "steps_per_episode": args.steps_per_episode, "pref_steps": args.pref_steps,
             "label_noise": args.label_noise, "tune_episodes": args.tune_episodes,
             "report_episodes": args.report_episodes, "max_steps": args.max_steps,
             "per_seed_preferences": args.per_seed_preferences or None,
             "methods": tuple(args.methods) if args.methods else None, "overrides": tuple(args.set or ()),
             "dpo_overrides": tuple(args.dpo_set or ()), "snap_pick": args.snap_pick,
             "report_seed": args.report_seed}
    study.run(args.task, root=args.run_dir, scale=args.scale, fresh=args.fresh, progress=not args.no_progress,
              results=args.results, report_only=args.report_only, reuse=args.reuse, **sizes)
    return 0


def cmd_bench(args) -> int:
    from pam_jax.apps import bench

    if args.what == "train":
        r = bench.bench_train(num_points=args.points, batch_size=args.batch, replicas=args.replicas,
                              steps=args.repeats, compute_dtype=args.dtype, torch_reference=args.torch_reference,
                              trace=args.trace)
        bench.print_result(r, args.json, bench.format_train)
        return 0
    if args.what == "sampler":
        r = bench.bench_sampler(num_points=args.points, rows=args.rows or "all", compute_dtype=args.dtype,
                                torch_reference=args.torch_reference, unroll=args.unroll, trace=args.trace)
        bench.print_result(r, args.json, bench.format_sampler)
        return 0
    if args.what == "fps":
        r = bench.bench_fps(num_points=args.points)
        bench.print_result(r, args.json, bench.format_fps)
        return 0
    if args.what == "kernels":
        from pam_jax.apps import hlo_kernels

        r = hlo_kernels.bench_kernels(forms=tuple(args.forms.split(",")), rows=args.rows or "paper", spec=args.target,
                                      num_points=args.points, compute_dtype=args.dtype, unroll=args.unroll,
                                      hlo_dir=args.hlo_dir)
        bench.print_result(r, args.json, hlo_kernels.format_kernels)
        return 0
    if args.what == "data":
        from pam_jax.apps import data_bench

        r = data_bench.run()
        print(json.dumps(r, indent=2) if args.json else r)
        return 0
    if args.what == "serve":
        from pam_jax.apps import serve_cli

        return serve_cli.cmd_bench_serve(args)
    raise ValueError(f"unknown benchmark {args.what!r}")


class LazyChoices:
    """argparse choices read on first use, so that `pam-jax train` does not import the evaluation
    stack (the simulator, scipy) just to build the parser."""

    def __init__(self, load, *extra):
        self._load, self._extra = load, extra

    def _values(self):
        return [*self._extra, *self._load()]

    def __contains__(self, value):
        return value in self._values()

    def __iter__(self):
        return iter(self._values())


def _methods():
    from pam_jax.eval.closed_loop import METHODS

    return METHODS


def _reward_noise():
    from pam_jax.select import REWARD_NOISE

    return REWARD_NOISE


def build_parser() -> argparse.ArgumentParser:
    METHODS, REWARD_NOISE = LazyChoices(_methods), LazyChoices(_reward_noise)
    from pam_jax.tasks import sim_task_names

    sim_tasks = list(sim_task_names())
    p = argparse.ArgumentParser(prog="pam-jax", description=__doc__.splitlines()[0])
    p.add_argument("--compile-cache", metavar="DIR",
                   help="persistent XLA compilation cache folder, or 'off' (default: $PAM_JAX_COMPILE_CACHE, "
                        "else ~/.cache/pam_jax/xla): a second run loads its compiled programs from disk")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an experiment", description="Train the stage of an experiment "
                       "file. Rerunning the same command resumes from the newest checkpoint.")
    t.add_argument("--experiment", required=True,
                   help="a packaged experiment by name (toy_bimodal, sim_rope:dpo, ...) or a file "
                        "path (a fork: my_rope.py[:variant]) defining get_config()")
    t.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="override config fields, e.g. --set train.steps=200 optim.lr=3e-4")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    from pam_jax.apps import distributed

    distributed.add_arguments(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate trained runs", description="Evaluate trained runs: the toy "
                       "task (--run: sample fresh scenes, score against the true endpoints; a DPO run compares "
                       "SL with reward-guided selection) or a simulated task in closed loop (--task --sl [--dpo]).")
    e.add_argument("--run", help="toy task: the run folder (holds checkpoints/)")
    e.add_argument("--task", choices=sim_tasks, help="simulated task: closed-loop evaluation")
    e.add_argument("--sl", help="simulated task: the supervised run")
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
                   choices=LazyChoices(_methods, "all"), metavar="METHOD",
                   help="methods to evaluate ('all': every one): %(choices)s")
    d.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="config overrides for every stage, e.g. --set model.width=240 preference.beta=50")
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser("collect", help="roll out an SL policy and record oracle-ranked candidates",
                       description="Roll out a trained SL policy in a simulated task, record its candidates "
                                   "at each state, rank them with the oracle annotator, and write finetune "
                                   "samples in the published DeformPAM layout.")
    c.add_argument("--task", required=True, choices=sim_tasks)
    c.add_argument("--sl", required=True, help="the supervised run folder")
    c.add_argument("--out", required=True, help="folder for the sample folders")
    c.add_argument("--states", type=int, default=48)
    c.add_argument("--candidates", type=int, default=8, help="K candidates per state")
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

    st = sub.add_parser("study", help="the whole comparison of one simulated task, resumable",
                        description="Expert data, SL over several training seeds, whole-horizon preferences, "
                                    "DPO per seed, the explicit baselines, held-out offline metrics, and the "
                                    "closed-loop evaluation of every method on tuning and report start states, "
                                    "ending in one table (RUN_DIR/study.md, study.json) and its plots. Every "
                                    "stage resumes: rerunning the command skips what is done. Size flags "
                                    "override the --scale preset.")
    st.add_argument("--task", required=True, choices=sim_tasks)
    st.add_argument("--scale", choices=["small", "full"], default="small",
                    help="small: a smoke test in minutes; full: issue 11's goal (3 seeds, 30 report states)")
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
    st.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                    help="config overrides for every training stage")
    st.add_argument("--dpo-set", nargs="+", action="extend", metavar="KEY=VALUE",
                    help="config overrides for the DPO stages only: a DeformPAM variant (use with --reuse)")
    st.add_argument("--snap-pick", action=argparse.BooleanOptionalAction, default=None,
                    help="the task's pick snapping applied to every executed action (rope: the mean xy of the 200 "
                         "points around the nearest cloud point, z kept; cloth: the nearest cloud point); "
                         "default on where the task has a rule")
    st.add_argument("--report-seed", type=int, default=None,
                    help="first start seed of the report set (default 2000); the tuning set is 1000..")
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

    b = sub.add_parser("bench", help="benchmarks", description="Benchmarks; medians after compilation.")
    b.add_argument("what", choices=["train", "sampler", "fps", "kernels", "data", "serve"],
                   help="train: supervised step at the reference size; sampler: fused best-of-N selection "
                        "against a staged baseline; fps: the exact forms of the geometry (farthest-point sampling, kNN); "
                        "kernels: the decision's kernel launches per denoiser form, compiled for a GPU target "
                        "without a GPU (needs JAX's CUDA plugin); data: "
                        "input-pipeline throughput; serve: the policy server under concurrent loopback clients "
                        "against the in-process selector")
    b.add_argument("--points", type=int, default=3000)
    b.add_argument("--batch", type=int, default=32)
    b.add_argument("--replicas", type=int, default=8)
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--rows", choices=["paper", "sweep", "all"],
                   help="sampler, kernels: the paper's setting (K=8, B=1, 100/100 and 10/10 steps/samples), the "
                        "sweep, or both (default: all for sampler, paper for kernels)")
    b.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="sampler, train: the networks' compute dtype (parameters stay float32)")
    b.add_argument("--torch-reference", action="store_true",
                   help="sampler, train: also time an eager PyTorch re-statement of the reference decision path "
                        "on the paper rows, or of its train step (needs torch; slow: minutes on CPU)")
    b.add_argument("--unroll", type=int, default=1, help="sampler, kernels: DDIM steps per iteration of the sampling loop")
    b.add_argument("--trace", action="store_true",
                   help="sampler, train: trace each row (jax.profiler) and summarise its device kernels: count "
                        "per call, busy time, span, the costliest (apps.trace; a GPU's, not a CPU's)")
    b.add_argument("--target", default="h200",
                   help="kernels: the GPU to compile for: a name in pam_jax/apps/targets/ or a GpuTargetConfigProto "
                        "text file")
    b.add_argument("--forms", default="plain,stacked,fused,chain,chain-stacked",
                   help="kernels: comma-separated denoiser forms (plain, stacked, fused, chain, chain-stacked)")
    b.add_argument("--hlo-dir", help="kernels: also write each compiled module's HLO text here")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    from pam_jax.apps import serve_cli

    serve_cli.add_bench_arguments(b)
    b.set_defaults(func=cmd_bench)

    from pam_jax.apps import annotate as annotate_app
    from pam_jax.apps import data_cli

    a = sub.add_parser("annotate", help="rank candidate actions in a browser (human preference labels)",
                       description="A local web app over a folder in the published layout: rank each "
                                   "state's candidate actions, mark ties and incomparable ones, give your "
                                   "own action; writes annotation.yaml atomically. Ctrl-C stops it.")
    annotate_app.add_arguments(a)
    a.set_defaults(func=annotate_app.run)

    data_cli.add_subparser(sub)
    serve_cli.add_subparsers(sub)   # serve, export, info
    return p


# the least value of every count argument of each subcommand, checked before any work (an
# argument a subcommand lacks, or leaves unset, is skipped); rates must lie in [0, 1]
COUNT_MINIMUMS = {
    "eval": dict(episodes=1, candidates=1, reward_samples=1, max_steps=0, scenes=1, samples=1, seed=0),
    "demo": dict(steps=0, episodes=1, states=1, pref_steps=0, eval_episodes=1),
    "collect": dict(states=1, candidates=2, steps_per_episode=0, stride=0, warmup_steps=0, max_steps=0, seed=0),
    "study": dict(train_seeds=1, expert_episodes=1, sl_steps=0, states=1, steps_per_episode=0, pref_steps=0,
                  tune_episodes=1, report_episodes=1, max_steps=0),
    "bench": dict(points=1, batch=1, replicas=1, repeats=1, clients=1, requests=1, max_batch=1),
    "serve": dict(port=0, max_batch=1, candidates=1, reward_samples=1),
    "export": dict(batch=1, candidates=1, reward_samples=1),
    "data": dict(split_seed=0, num=0, max_records=1, episodes=1, seed=0),
}
RATES = ("label_noise",)


def check_counts(args) -> None:
    for dest, lo in COUNT_MINIMUMS.get(args.command, {}).items():
        v = getattr(args, dest, None)
        if v is not None and v < lo:
            raise ValueError(f"--{dest.replace('_', '-')} must be an integer >= {lo}, got {v}")
    for dest in RATES:
        v = getattr(args, dest, None)
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError(f"--{dest.replace('_', '-')} must be in [0, 1], got {v}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from pam_jax.train.checkpoint import CheckpointError

    try:
        check_counts(args)
        from pam_jax.apps import compile_cache

        # `bench kernels` compiles for a GPU it does not have: such a program cannot be loaded
        # back, so it must neither be written to the cache nor read from it (jax decides whether a
        # process uses the cache at its first compile; switching it off later does not hold)
        compile_only = args.command == "bench" and args.what == "kernels"
        compile_cache.enable("off" if compile_only else args.compile_cache)
        return args.func(args)
    except KeyboardInterrupt as e:  # train.interrupts.Interrupted: 128 + the signal number
        print(f"pam-jax: {e or 'interrupted'}", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError, KeyError, CheckpointError,
            FloatingPointError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"pam-jax: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
