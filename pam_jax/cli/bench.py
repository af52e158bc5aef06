"""`pam-jax bench`: the user-facing benchmarks."""
from __future__ import annotations

import json


def bench_runtime(assignments):
    """`--set runtime.KEY=VALUE ...` -> the RuntimeConfig (only runtime fields)."""
    from pam_jax import config as config_lib

    for item in assignments or ():
        if not item.startswith("runtime."):
            raise ValueError(f"bench --set: only the runtime section (runtime.KEY=VALUE), got {item!r}")
    return config_lib.override(config_lib.Config(), assignments or ()).runtime


def cmd_bench(args) -> int:
    from pam_jax.bench import compute as bench

    runtime = bench_runtime(args.set)
    if args.what == "train":
        r = bench.bench_train(num_points=args.points, batch_size=args.batch, replicas=args.replicas,
                              steps=args.repeats, compute_dtype=args.dtype, runtime=runtime)
        bench.print_result(r, args.json, bench.format_train)
        return 0
    if args.what == "sampler":
        r = bench.bench_sampler(num_points=args.points, rows=args.rows or "all", compute_dtype=args.dtype,
                                unroll=args.unroll, runtime=runtime)
        bench.print_result(r, args.json, bench.format_sampler)
        return 0
    if args.what == "fps":
        r = bench.bench_fps(num_points=args.points, runtime=runtime)
        bench.print_result(r, args.json, bench.format_fps)
        return 0
    if args.what == "data":
        from pam_jax.bench import data as data_bench

        r = data_bench.run()
        print(json.dumps(r, indent=2) if args.json else r)
        return 0
    if args.what == "serve":
        from pam_jax.cli import serve

        return serve.cmd_bench_serve(args)
    raise ValueError(f"unknown benchmark {args.what!r}")


def add_parser(sub) -> None:
    b = sub.add_parser("bench", help="benchmarks", description="Benchmarks; medians after compilation.")
    b.add_argument("what", choices=["train", "sampler", "fps", "data", "serve"],
                   help="train: supervised step at the reference size; sampler: fused best-of-N selection "
                        "against a staged baseline; fps: the exact forms of the geometry (farthest-point sampling, kNN); "
                        "data: input-pipeline throughput; serve: the policy server under concurrent loopback clients "
                        "against the in-process selector")
    b.add_argument("--points", type=int, default=3000)
    b.add_argument("--batch", type=int, default=32)
    b.add_argument("--replicas", type=int, default=8)
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--rows", choices=["paper", "sweep", "all"],
                   help="sampler: the paper's setting (K=8, B=1, 100/100 and 10/10 steps/samples), the "
                        "sweep, or both (default: all)")
    b.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="sampler, train: the networks' compute dtype (parameters stay float32)")
    b.add_argument("--unroll", type=int, default=1, help="sampler: DDIM steps per iteration of the sampling loop")
    b.add_argument("--set", nargs="+", action="extend", metavar="runtime.KEY=VALUE",
                   help="train, sampler, fps: the kernel forms, e.g. --set runtime.fps=argmax runtime.pad=on "
                        "(recorded in the output's machine block)")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    from pam_jax.cli import serve

    serve.add_bench_arguments(b)
    b.set_defaults(func=cmd_bench)
