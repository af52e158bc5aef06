"""`pam-jax train --distributed`: join a multi-host run before anything touches a device.

With no further flags, `jax.distributed.initialize()` reads the cluster (SLURM, Open MPI, TPU
pods); `--coordinator HOST:PORT --num-processes N --process-id I` name it explicitly. Every
process trains the same config on its slice of each global batch; only process 0 writes the
config, metrics and plots (checkpoints are written together), and every log line names its
process. CPU-only processes need gloo collectives: JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo.
"""
from __future__ import annotations

import argparse
import functools

FLAGS = ("coordinator", "num_processes", "process_id")


def add_arguments(t: argparse.ArgumentParser) -> None:
    g = t.add_argument_group("multi-host", "one process per host (or per GPU); see benchmarks/slurm_train.sbatch")
    g.add_argument("--distributed", action="store_true",
                   help="join a multi-process run first (jax.distributed.initialize; alone: read the cluster "
                        "environment, e.g. SLURM or Open MPI)")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address (with --distributed)")
    g.add_argument("--num-processes", type=int, metavar="N", help="processes in all (with --distributed)")
    g.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1 (with --distributed)")


def _check(args) -> None:
    if args.coordinator is not None:
        host, _, port = args.coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--coordinator must be HOST:PORT, got {args.coordinator!r}")
    if args.num_processes is not None and args.num_processes < 1:
        raise ValueError(f"--num-processes must be an integer >= 1, got {args.num_processes}")
    if args.process_id is not None:
        n = args.num_processes
        if args.process_id < 0 or (n is not None and args.process_id >= n):
            raise ValueError(f"--process-id must be in [0, {n - 1 if n else 'N-1'}], got {args.process_id}")


def start(args):
    """Join the cluster when --distributed -> the `log` function of the run (print, or print
    with a "[process i/n]" prefix in a multi-process run)."""
    given = [f for f in FLAGS if getattr(args, f, None) is not None]
    if not getattr(args, "distributed", False):
        if given:
            raise ValueError(f"{', '.join('--' + f.replace('_', '-') for f in given)} need(s) --distributed")
        return print
    _check(args)
    import jax

    from pam_jax.train import interrupts, sharding, watchdog

    try:
        sharding.init_distributed(args.coordinator, args.num_processes, args.process_id)
    except (ValueError, RuntimeError) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if not given:
            raise ValueError(f"--distributed found no cluster environment to read ({why}): run it under SLURM "
                             "or Open MPI, or give --coordinator HOST:PORT --num-processes N --process-id I") from None
        raise ValueError(f"--distributed: could not join the run ({why})") from None
    prefix = f"[process {jax.process_index()}/{jax.process_count()}]"
    interrupts.set_line_prefix(prefix)
    watchdog.start(prefix)
    return functools.partial(print, prefix, flush=True)
