"""Benchmarks: `pam-jax bench train`.

Every figure is a median over repeated calls after compilation, and FLOP/s are compared with
this machine's own float32 matmul peak measured in the same run (so noisy shared machines still
give a meaningful ratio).
"""
from __future__ import annotations

import dataclasses
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp


def _median_time(fn, *args, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def matmul_peak(size: int = 1024, repeats: int = 10) -> float:
    """Measured float32 matmul FLOP/s on the default device (median of `repeats`)."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    med, _ = _median_time(f, a, repeats=repeats)
    return 2 * size**3 / med


def compiled_flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def machine() -> dict:
    return {"platform": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
            "devices": jax.device_count(), "cpu_count": __import__("os").cpu_count(),
            "machine": platform.machine(), "jax": jax.__version__,
            "date": time.strftime("%Y-%m-%d")}


def bench_train(*, num_points: int = 3000, batch_size: int = 32, replicas: int = 8,
                steps: int = 5, model_overrides: dict | None = None) -> dict:
    """Supervised train-step throughput at the reference size on 1 device."""
    from pam_jax.config import Config, DataConfig, ModelConfig, TrainConfig
    from pam_jax.toy import ToyBimodalData
    from pam_jax.train import sharding
    from pam_jax.train.loop import init_train_state, step_for

    cfg = Config(
        name="bench_train",
        model=dataclasses.replace(ModelConfig(), **(model_overrides or {})),
        data=DataConfig(num_points=num_points, batch_size=batch_size),
        train=TrainConfig(noise_replicas=replicas, steps=1000, num_devices=1),
    )
    mesh = sharding.make_mesh(1)
    data = ToyBimodalData(batch_size=batch_size, num_points=num_points)
    graphdef, tx, state = init_train_state(cfg, mesh)
    step_fn = step_for(cfg, tx, mesh, data.norm_stats())
    batch = sharding.to_global(data.batch(0), mesh)

    t = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - t
    flops = compiled_flops(compiled)
    state, m = step_fn(state, batch)  # warm-up
    jax.block_until_ready(m)

    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, m = step_fn(state, batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    peak = matmul_peak()
    return {
        "benchmark": "train", "model": dataclasses.asdict(cfg.model), "num_points": num_points,
        "batch_size": batch_size, "noise_replicas": replicas, "compile_s": compile_s,
        "step_s_median": med, "step_s_all": times, "steps_per_s": 1 / med,
        "samples_per_s": batch_size / med, "flops_per_step": flops,
        "achieved_flops_per_s": flops / med if flops else None, "matmul_peak_flops_per_s": peak,
        "fraction_of_peak": (flops / med) / peak if flops else None, "machine": machine(),
    }


def format_train(r: dict) -> str:
    lines = [
        f"train step, reference size ({r['num_points']} points, batch {r['batch_size']}, "
        f"K={r['noise_replicas']}, width {r['model']['width']}, {r['model']['layers']} layers), "
        f"{r['machine']['device']} x1",
        f"  compile            {r['compile_s']:.1f} s",
        f"  step (median)      {r['step_s_median'] * 1e3:.0f} ms  ({r['steps_per_s']:.2f} steps/s, "
        f"{r['samples_per_s']:.1f} samples/s)",
    ]
    if r["flops_per_step"]:
        lines += [
            f"  FLOPs/step (XLA)   {r['flops_per_step'] / 1e9:.2f} GFLOP",
            f"  achieved           {r['achieved_flops_per_s'] / 1e9:.2f} GFLOP/s = "
            f"{100 * r['fraction_of_peak']:.1f}% of the measured matmul peak "
            f"({r['matmul_peak_flops_per_s'] / 1e9:.1f} GFLOP/s)",
        ]
    return "\n".join(lines)


def print_result(r: dict, as_json: bool, formatter) -> None:
    print(json.dumps(r, indent=2) if as_json else formatter(r))


