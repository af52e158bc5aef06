"""`pam-jax`: one command, one subcommand per job. Every subcommand has --help.

Errors in the user's input (bad config keys, missing files, bad checkpoints, bad data) end with
one line on stderr, never a traceback from deep inside JAX.
"""
from __future__ import annotations

import argparse
import sys


def _version() -> str:
    """The installed distribution's version (a source tree that is not installed: the package's)."""
    from importlib import metadata

    try:
        return metadata.version("pam_jax")
    except metadata.PackageNotFoundError:
        from pam_jax import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    from pam_jax import annotate as annotate_app
    from pam_jax.cli import bench, collect, data, demo, evaluate, serve, study, train
    from pam_jax.cli.common import sim_tasks

    tasks = sim_tasks()
    p = argparse.ArgumentParser(prog="pam-jax", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"pam-jax {_version()}")
    p.add_argument("--compile-cache", metavar="DIR",
                   help="persistent XLA compilation cache folder, or 'off' (default: $PAM_JAX_COMPILE_CACHE, "
                        "else ~/.cache/pam_jax/xla): a second run loads its compiled programs from disk")
    sub = p.add_subparsers(dest="command", required=True)
    train.add_parser(sub)
    evaluate.add_parser(sub, tasks)
    demo.add_parser(sub, tasks)
    collect.add_parser(sub, tasks)
    study.add_parser(sub, tasks)
    bench.add_parser(sub)

    a = sub.add_parser("annotate", help="rank candidate actions in a browser (human preference labels)",
                       description="A local web app over a folder in the published layout: rank each "
                                   "state's candidate actions, mark ties and incomparable ones, give your "
                                   "own action; writes annotation.yaml atomically. Ctrl-C stops it.")
    annotate_app.add_arguments(a)
    a.set_defaults(func=annotate_app.run)

    data.add_subparser(sub)
    serve.add_subparsers(sub)   # serve, export, info
    return p


# the least value of every count argument of each subcommand, checked before any work (an
# argument a subcommand lacks, or leaves unset, is skipped); rates must lie in [0, 1]
COUNT_MINIMUMS = {
    "eval": dict(episodes=1, candidates=1, reward_samples=1, max_steps=0, scenes=1, samples=1, seed=0),
    "demo": dict(steps=0, episodes=1, states=1, pref_steps=0, eval_episodes=1),
    "collect": dict(states=1, candidates=2, steps_per_episode=0, stride=0, warmup_steps=0, max_steps=0, seed=0),
    "study": dict(train_seeds=1, expert_episodes=1, sl_steps=0, states=1, steps_per_episode=0, pref_steps=0,
                  tune_episodes=1, report_episodes=0, max_steps=0, report_seed=0, baseline_seeds=1),
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
    # first: SIGINT/SIGTERM are recorded from this instant (the imports below take seconds)
    from pam_jax.train import errors, interrupts

    interrupts.install_early()
    try:
        args = build_parser().parse_args(argv)
        check_counts(args)
        from pam_jax.train import compile_cache

        compile_cache.enable(args.compile_cache)
        if args.command != "train":       # the others handle Ctrl-C themselves
            interrupts.hand_back()
        code = args.func(args)
        interrupts.check("after the command finished")
        return code
    except KeyboardInterrupt as e:  # train.interrupts.Interrupted: 128 + the signal number
        print(f"{interrupts.LINE_PREFIX}pam-jax: {e or 'interrupted'}", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    except Exception as e:  # noqa: BLE001 - the user's errors: one line, code 2
        if not isinstance(e, errors.USER_ERRORS):
            from pam_jax.train import watchdog

            watchdog.fail(e)    # a multi-process run: one line and exit, not a wait for dead peers
            raise
        print(f"{interrupts.LINE_PREFIX}pam-jax: error: {errors.one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
