"""The benchmarks behind `pam-jax bench`, with the tooling that stays out of the package.

    python benchmarks/bench.py sampler [--rows paper] [--torch-reference] [--trace] [--json]
    python benchmarks/bench.py train [--torch-reference] [--trace] [--json]
    python benchmarks/bench.py kernels [--forms plain,fused] [--target h200] [--hlo-dir DIR] [--json]

sampler, train: `pam-jax bench sampler|train` (pam_jax.bench.compute), plus, with
--torch-reference, an eager PyTorch re-statement of the reference (torch_reference.py; needs
torch) timed in the same process, and with --trace a summary of each call's device kernels
(kernel_trace.py). kernels: the decision's kernel launches per denoiser form, compiled for a GPU
target without a GPU (hlo_kernels.py; needs JAX's CUDA plugin).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def torch_reference(name: str):
    """A maker from torch_reference.py, or one line saying that torch is needed."""
    try:
        import torch_reference as module
    except ImportError:
        raise ImportError("--torch-reference needs torch (pip install -e '.[torch]')") from None
    return getattr(module, name)


def trace_probe(call, *, median_s, setting) -> dict:
    """The device kernels of `call` (kernel_trace.kernel_summary)."""
    from kernel_trace import kernel_summary

    return {"trace": kernel_summary(call)}


def torch_train_probe():
    """Times the eager PyTorch train step on a batch of the same size (full-cloud features, AdamW)."""
    from pam_jax.bench.compute import _timed

    def probe(call, *, median_s, setting) -> dict:
        step, to_device = torch_reference("make_train_step")(replicas=setting["replicas"])
        rng = np.random.default_rng(0)
        b, n = setting["batch_size"], setting["num_points"]
        tb = to_device(rng.uniform(-0.5, 0.5, (b, n, 3)).astype(np.float32),
                       rng.uniform(-0.5, 0.5, (b, 2, 3)).astype(np.float32))
        step(*tb)   # warm-up
        rt = _timed(lambda: step(*tb), budget_s=10.0, min_repeats=2, max_repeats=10)
        return {"torch_step_s_median": statistics.median(rt), "torch_repeats": len(rt),
                "torch_speedup": statistics.median(rt) / median_s}

    return probe


def torch_sampler_probe(budget_s: float = 8.0):
    """Times the eager PyTorch reference decision on the paper rows, on the same cloud."""
    from pam_jax.bench.compute import _timed

    reference = torch_reference("make_reference")()

    def probe(call, *, median_s, setting) -> dict:
        if not setting.get("name", "").startswith("paper"):
            return {}
        kw = dict(num_candidates=setting["N"], steps=setting["steps"], samples=setting["M"])
        pts = setting["points"]
        rt = _timed(lambda: reference(pts, **kw), budget_s=budget_s, min_repeats=1, max_repeats=3)
        return {"torch_median_s": statistics.median(rt), "torch_repeats": len(rt),
                "torch_speedup": statistics.median(rt) / median_s}

    return probe


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/bench.py", description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["sampler", "train", "kernels"])
    p.add_argument("--compile-cache", metavar="DIR",
                   help="persistent XLA compilation cache folder, or 'off' (kernels: always off)")
    p.add_argument("--points", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--replicas", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rows", choices=["paper", "sweep", "all"],
                   help="sampler, kernels: the paper's setting, the sweep, or both (default: all for sampler, "
                        "paper for kernels)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--unroll", type=int, default=1, help="sampler, kernels: DDIM steps per loop iteration")
    p.add_argument("--torch-reference", action="store_true",
                   help="sampler, train: also time an eager PyTorch re-statement of the reference decision path "
                        "on the paper rows, or of its train step (needs torch; slow: minutes on CPU)")
    p.add_argument("--trace", action="store_true",
                   help="sampler, train: trace each row (jax.profiler) and summarise its device kernels: count "
                        "per call, busy time, span, the costliest (a GPU's, not a CPU's)")
    p.add_argument("--target", default="h200",
                   help="kernels: the GPU to compile for: a name in benchmarks/targets/ or a GpuTargetConfigProto "
                        "text file")
    p.add_argument("--forms", default="plain,stacked,fused,chain,chain-stacked",
                   help="kernels: comma-separated denoiser forms (plain, stacked, fused, chain, chain-stacked)")
    p.add_argument("--hlo-dir", help="kernels: also write each compiled module's HLO text here")
    p.add_argument("--set", nargs="+", action="extend", metavar="runtime.KEY=VALUE",
                   help="the kernel forms, e.g. --set runtime.knn=top_k; runtime.fused and runtime.stack_models "
                        "use benchmarks/experimental/fused.py")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def run(args) -> int:
    from pam_jax.bench import compute as bench
    from pam_jax.train import compile_cache

    for name in ("points", "batch", "replicas", "repeats", "unroll"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be an integer >= 1, got {getattr(args, name)}")
    # `kernels` compiles for a GPU it does not have: such a program cannot be loaded back, so it
    # must neither be written to the cache nor read from it (jax decides whether a process uses
    # the cache at its first compile; switching it off later does not hold)
    compile_cache.enable("off" if args.what == "kernels" else args.compile_cache)
    from pam_jax.cli.bench import bench_runtime

    runtime = bench_runtime(args.set)
    if runtime.experimental:   # registers the experimental selector with pam_jax.select
        sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
        import benchmarks.experimental.fused  # noqa: F401
    if args.what == "kernels":
        import hlo_kernels

        r = hlo_kernels.bench_kernels(forms=tuple(args.forms.split(",")), rows=args.rows or "paper",
                                      spec=args.target, num_points=args.points, compute_dtype=args.dtype,
                                      unroll=args.unroll, hlo_dir=args.hlo_dir, runtime=runtime)
        bench.print_result(r, args.json, hlo_kernels.format_kernels)
        return 0
    if args.what == "train":
        probes = ([trace_probe] if args.trace else []) + ([torch_train_probe()] if args.torch_reference else [])
        r = bench.bench_train(num_points=args.points, batch_size=args.batch, replicas=args.replicas,
                              steps=args.repeats, compute_dtype=args.dtype, probes=probes, runtime=runtime)
        bench.print_result(r, args.json, bench.format_train)
        return 0
    probes = ([trace_probe] if args.trace else []) + ([torch_sampler_probe()] if args.torch_reference else [])
    r = bench.bench_sampler(num_points=args.points, rows=args.rows or "all", compute_dtype=args.dtype,
                            unroll=args.unroll, probes=probes, runtime=runtime)
    bench.print_result(r, args.json, bench.format_sampler)
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError, ImportError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"benchmarks/bench.py: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
