"""`pam-jax train`: train the stage of an experiment."""
from __future__ import annotations

from pam_jax.cli.common import load_config


def cmd_train(args) -> int:
    from pam_jax.train import distributed, interrupts
    from pam_jax.train.loop import train

    interrupts.check("while starting")
    log = distributed.start(args)   # --distributed: join the run first; log lines then name their process
    cfg = load_config(args)
    interrupts.check("while loading the configuration")
    result = train(cfg, progress_bar=not args.no_progress, log=log)
    rate = f", {result.steps_per_sec:.2f} steps/s" if result.steps_per_sec else ""
    log(f"done: step {int(result.state.step)}{rate}; checkpoints in {result.run_dir / 'checkpoints'}")
    return 0


def add_parser(sub) -> None:
    t = sub.add_parser("train", help="train an experiment", description="Train the stage of an experiment "
                       "file. Rerunning the same command resumes from the newest checkpoint.")
    t.add_argument("--experiment", required=True,
                   help="a packaged experiment by name (toy_bimodal, sim_rope:dpo, ...) or a file "
                        "path (a fork: my_rope.py[:variant]) defining get_config()")
    t.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="override config fields, e.g. --set train.steps=200 optim.lr=3e-4")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    from pam_jax.train import distributed

    distributed.add_arguments(t)
    t.set_defaults(func=cmd_train)
