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
import numpy as np


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
    from pam_jax.data.toy import ToyBimodalData
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




# ---------------------------------------------------------------------------------------------
# Sampler: the fused one-graph selector against a staged baseline of the same maths

SAMPLER_BASE = {"N": 32, "B": 1, "steps": 10, "M": 10}
SAMPLER_SWEEP = [{}, {"N": 8}, {"N": 128}, {"B": 8}, {"steps": 100}, {"M": 100}]
STAGED_AT = [{}, {"steps": 100}, {"M": 100}]


def _reference_models(model_cfg):
    from pam_jax.models.policy import init_policy

    graphdef, ref = init_policy(model_cfg, 0)
    _, pol = init_policy(model_cfg, 1)
    # fresh policies have zero-initialised output gates; timing does not depend on the values,
    # but perturb them anyway so nothing can be constant-folded
    leaves, tree = jax.tree.flatten(pol)
    pol = jax.tree.unflatten(tree, [x + 0.01 for x in leaves])
    return graphdef, ref, pol


def make_staged(graphdef, diff, norm, *, num_candidates, num_inference_steps, eta, reward_samples,
                t_max, beta):
    """The reference code's way: one call per stage, host round trips between stages, the
    encoder recomputed for every Monte-Carlo sample, and a Python loop over DDIM steps."""
    from flax import nnx

    from pam_jax import diffusion
    from pam_jax.models.policy import noise_errors

    schedule = diffusion.schedule_from_config(diff)
    encode = jax.jit(lambda p, pts: nnx.merge(graphdef, p).encode(pts))
    denoise = jax.jit(lambda p, x, t, ctx: nnx.merge(graphdef, p).denoise(x, t, ctx))
    step = jax.jit(lambda eps, t, x, prev, z: diffusion.ddim_step(
        schedule, eps, t, x, prev_timestep=prev, eta=eta, variance_noise=z, clip_sample=diff.clip_sample))
    errors = jax.jit(lambda p, ctx, x0, t, eps: noise_errors(nnx.merge(graphdef, p), ctx, schedule, x0, t, eps))
    ts = diffusion.ddim_timesteps(diff.num_train_timesteps, num_inference_steps)
    ratio = diff.num_train_timesteps // num_inference_steps
    center, scale = np.asarray(norm.center, np.float32), np.asarray(norm.scale, np.float32)

    def run(ref, pol, points, seed):
        rng = np.random.default_rng(seed)
        pts = (np.asarray(points) - center) / scale
        b = pts.shape[0]
        ctx = jax.device_get(encode(ref, pts))
        x = rng.standard_normal((b, num_candidates, 2, 3)).astype(np.float32)
        for t in ts:
            eps = np.asarray(denoise(ref, x, int(t), ctx))
            x = np.asarray(step(eps, int(t), x, int(t) - ratio, rng.standard_normal(x.shape).astype(np.float32)))
        total = np.zeros((b, num_candidates), np.float32)
        for _ in range(reward_samples):
            t = np.broadcast_to(rng.integers(0, t_max, (b, 1)), (b, num_candidates))  # one t per sample, shared
            eps = rng.standard_normal(x.shape).astype(np.float32)
            e_pol = np.asarray(errors(pol, encode(pol, pts), x, t, eps))
            e_ref = np.asarray(errors(ref, encode(ref, pts), x, t, eps))
            total += e_pol - e_ref
        scores = -beta * total / reward_samples
        idx = np.argmax(scores, -1)
        return x[np.arange(b), idx] * scale + center

    return run


def selector_flops(graphdef, ref, pts, *, num_candidates, steps, samples, schedule) -> float | None:
    """FLOPs of one implicit-reward decision, counted per piece: XLA's cost analysis counts a
    while-loop (scan) body once, not once per trip, so the fused graph's own figure undercounts.
    = 2 encodes + steps x (denoise + DDIM update) + (M / chunk) x (score chunk, both models)."""
    from flax import nnx

    from pam_jax import diffusion
    from pam_jax.models.policy import noise_errors
    from pam_jax.select import _chunk

    model = lambda p: nnx.merge(graphdef, p)  # noqa: E731
    b, n = pts.shape[0], num_candidates
    c = _chunk(samples, b * n)
    ctx = jax.eval_shape(lambda p, x: model(p).encode(x), ref, pts)
    x = jax.ShapeDtypeStruct((b, n, 2, 3), jnp.float32)
    xc = jax.ShapeDtypeStruct((b, n * c, 2, 3), jnp.float32)
    tc = jax.ShapeDtypeStruct((b, n * c), jnp.int32)
    t = jax.ShapeDtypeStruct((), jnp.int32)

    def cost(f, *a):
        return compiled_flops(jax.jit(f).lower(*a).compile())

    enc = cost(lambda p, x: model(p).encode(x), ref, pts)
    step = cost(lambda p, x, t, ctx: diffusion.ddim_step(schedule, model(p).denoise(x, t, ctx), t, x,
                                                         prev_timestep=t - 1, eta=0.0), ref, x, t, ctx)
    chunk = cost(lambda p, x, t, e, ctx: noise_errors(model(p), ctx, schedule, x, t, e), ref, xc, tc, xc, ctx)
    if None in (enc, step, chunk):
        return None
    return 2 * enc + steps * step + 2 * (samples // c) * chunk


def _timed(fn, *, budget_s: float, min_repeats: int = 3, max_repeats: int = 20) -> list[float]:
    times = []
    t0 = time.perf_counter()
    while len(times) < min_repeats or (len(times) < max_repeats and time.perf_counter() - t0 < budget_s):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return times


def bench_sampler(*, num_points: int = 3000, sweep=None, staged_at=None, budget_s: float = 8.0,
                  model_overrides: dict | None = None) -> dict:
    """Fused selector vs staged baseline at the reference size (implicit reward, both models)."""
    from pam_jax.config import DiffusionConfig, ModelConfig
    from pam_jax.normalize import NormStats
    from pam_jax.select import SelectConfig, make_selector

    from pam_jax import diffusion

    model_cfg = dataclasses.replace(ModelConfig(), **(model_overrides or {}))
    diff = DiffusionConfig()
    schedule = diffusion.schedule_from_config(diff)
    norm = NormStats.identity()
    graphdef, ref, pol = _reference_models(model_cfg)
    peak = matmul_peak()
    rows = []
    for delta in (SAMPLER_SWEEP if sweep is None else sweep):
        c = {**SAMPLER_BASE, **delta}
        pts = np.random.default_rng(0).uniform(-0.5, 0.5, (c["B"], num_points, 3)).astype(np.float32)
        scfg = SelectConfig(mode="implicit", num_candidates=c["N"], num_inference_steps=c["steps"],
                            eta=1.0, reward_samples=c["M"])
        sel = make_selector(graphdef, diff, norm, scfg)
        args = jax.device_put((ref, pol, pts, jax.random.key(0)))
        t = time.perf_counter()
        compiled = sel.lower(*args).compile()
        compile_s = time.perf_counter() - t
        flops = selector_flops(graphdef, ref, args[2], num_candidates=c["N"], steps=c["steps"],
                               samples=c["M"], schedule=schedule)
        jax.block_until_ready(compiled(*args))
        times = _timed(lambda: compiled(*args), budget_s=budget_s)
        med = statistics.median(times)
        row = {**c, "compile_s": compile_s, "median_s": med, "p90_s": float(np.percentile(times, 90)),
               "repeats": len(times), "flops": flops,
               "fraction_of_peak": (flops / med) / peak if flops else None}
        if delta in (STAGED_AT if staged_at is None else staged_at):
            staged = make_staged(graphdef, diff, norm, num_candidates=c["N"], num_inference_steps=c["steps"],
                                 eta=1.0, reward_samples=c["M"], beta=scfg.beta,
                                 t_max=diffusion.timestep_limit(scfg.reward_timestep_frac, diff.num_train_timesteps))
            staged(ref, pol, pts, 0)  # compile its pieces
            st = _timed(lambda: staged(ref, pol, pts, 1), budget_s=budget_s, min_repeats=2, max_repeats=5)
            row.update(staged_median_s=statistics.median(st), staged_repeats=len(st),
                       speedup=statistics.median(st) / med)
        rows.append(row)
    return {"benchmark": "sampler", "num_points": num_points, "model": dataclasses.asdict(model_cfg),
            "diffusion": dataclasses.asdict(diff), "mode": "implicit", "matmul_peak_flops_per_s": peak,
            "rows": rows, "machine": machine()}


def format_sampler(r: dict) -> str:
    m = r["model"]
    head = (f"best-of-N selection, implicit reward, {r['num_points']} points, width {m['width']}, "
            f"{m['layers']} layers, {m['num_tokens']} tokens; {r['machine']['device']} x1; "
            f"matmul peak {r['matmul_peak_flops_per_s'] / 1e9:.1f} GFLOP/s")
    lines = [head, f"{'N':>4} {'B':>2} {'steps':>5} {'M':>4} {'compile s':>9} {'median ms':>10} {'p90 ms':>8} "
                   f"{'GFLOP':>7} {'%peak':>6} {'staged ms':>10} {'speed-up':>8}"]
    for x in r["rows"]:
        staged = f"{x['staged_median_s'] * 1e3:10.0f} {x['speedup']:7.1f}x" if "speedup" in x else f"{'':>10} {'':>8}"
        gf = f"{x['flops'] / 1e9:7.1f}" if x["flops"] else f"{'?':>7}"
        pk = f"{100 * x['fraction_of_peak']:5.1f}%" if x["fraction_of_peak"] else f"{'?':>6}"
        lines.append(f"{x['N']:>4} {x['B']:>2} {x['steps']:>5} {x['M']:>4} {x['compile_s']:9.1f} "
                     f"{x['median_s'] * 1e3:10.1f} {x['p90_s'] * 1e3:8.1f} {gf} {pk} {staged}")
    return "\n".join(lines)
