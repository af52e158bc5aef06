"""Benchmarks: `pam-jax bench train` and `pam-jax bench sampler`.

Every figure is a median over repeated calls after compilation, and FLOP/s are compared with
this machine's own matmul peak measured in the same run (so noisy shared machines still give a
meaningful ratio): on an accelerator a large bfloat16 matmul (its real peak) and a float32 one,
on CPU a float32 one. The sampler's baseline runs in the same process: the staged JAX baseline
(the reference code's way of calling the same networks). `probes` add figures measured on the
same compiled call (benchmarks/bench.py adds an eager PyTorch re-statement of the reference and
a device-kernel trace this way).
"""
from __future__ import annotations

import dataclasses
import json
import os
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


def matmul_peak(size: int = 1024, repeats: int = 10, dtype=jnp.float32) -> float:
    """Measured matmul FLOP/s on the default device (median of `repeats`)."""
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    med, _ = _median_time(f, a, repeats=repeats)
    return 2 * size**3 / med


def device_peaks() -> dict:
    """The device's matmul peak, measured honestly: on an accelerator a large (8192^2) float32
    and bfloat16 matmul (its real peak is the bfloat16 one); on CPU a 1024^2 float32 matmul."""
    if jax.default_backend() == "cpu":
        return {"float32": matmul_peak()}
    return {"float32": matmul_peak(8192, 5), "bfloat16": matmul_peak(8192, 5, jnp.bfloat16)}


def compiled_flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def machine(runtime=None) -> dict:
    """Where a benchmark ran: the device, the kernel forms it ran with (the runtime config,
    `runtime` or the defaults: every field) and the $XLA_FLAGS it ran under."""
    from pam_jax.config import RuntimeConfig

    return {"platform": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
            "devices": jax.device_count(), "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "jax": jax.__version__,
            "date": time.strftime("%Y-%m-%d"),
            "runtime": dataclasses.asdict(runtime or RuntimeConfig()),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def bench_train(*, num_points: int = 3000, batch_size: int = 32, replicas: int = 8,
                steps: int = 5, model_overrides: dict | None = None, compute_dtype: str = "float32",
                probes=(), runtime=None) -> dict:
    """Supervised train-step throughput at the reference size on 1 device. Each of `probes` is
    called as probe(call, median_s=, setting=) with `call` running one more step, and returns
    fields added to the result. `runtime`: the kernel forms (a RuntimeConfig; default the defaults)."""
    from pam_jax.config import Config, DataConfig, ModelConfig, RuntimeConfig, TrainConfig
    from pam_jax.toy.data import ToyBimodalData
    from pam_jax.train import sharding
    from pam_jax.train.loop import init_train_state, step_for

    cfg = Config(
        name="bench_train",
        model=dataclasses.replace(ModelConfig(), **(model_overrides or {})),
        data=DataConfig(num_points=num_points, batch_size=batch_size),
        train=TrainConfig(noise_replicas=replicas, steps=1000, num_devices=1, compute_dtype=compute_dtype),
        runtime=runtime or RuntimeConfig(),
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
    held = {"state": state}

    def one():
        held["state"], metrics = step_fn(held["state"], batch)
        return metrics

    setting = {"num_points": num_points, "batch_size": batch_size, "replicas": replicas}
    probed = {}
    for probe in probes:
        probed.update(probe(one, median_s=med, setting=setting))
    peaks = device_peaks()
    peak = peaks.get(compute_dtype, max(peaks.values()))
    return {
        "benchmark": "train", "model": dataclasses.asdict(cfg.model), "num_points": num_points,
        "batch_size": batch_size, "noise_replicas": replicas, "compute_dtype": compute_dtype, **probed,
        "compile_s": compile_s,
        "step_s_median": med, "step_s_all": times, "steps_per_s": 1 / med,
        "samples_per_s": batch_size / med, "flops_per_step": flops,
        "achieved_flops_per_s": flops / med if flops else None, "matmul_peak_flops_per_s": peak,
        "peaks": peaks, "fraction_of_peak": (flops / med) / peak if flops else None, "machine": machine(cfg.runtime),
    }


def format_train(r: dict) -> str:
    lines = [
        f"train step, reference size ({r['num_points']} points, batch {r['batch_size']}, "
        f"K={r['noise_replicas']}, width {r['model']['width']}, {r['model']['layers']} layers, "
        f"{r.get('compute_dtype', 'float32')}), {r['machine']['device']} x1",
        f"  compile            {r['compile_s']:.1f} s",
        f"  step (median)      {r['step_s_median'] * 1e3:.0f} ms  ({r['steps_per_s']:.2f} steps/s, "
        f"{r['samples_per_s']:.1f} samples/s)",
    ]
    if r["flops_per_step"]:
        lines += [
            f"  FLOPs/step (XLA)   {r['flops_per_step'] / 1e9:.2f} GFLOP",
            f"  achieved           {r['achieved_flops_per_s'] / 1e9:.2f} GFLOP/s = "
            f"{100 * r['fraction_of_peak']:.1f}% of the measured matmul peak "
            f"({_peaks_text(r)})",
        ]
    if "torch_step_s_median" in r:
        lines.append(f"  PyTorch reference  {r['torch_step_s_median'] * 1e3:.0f} ms per step "
                     f"(eager, full-cloud features): pam_jax is {r['torch_speedup']:.1f}x faster")
    if "trace" in r:
        lines.append(f"  device kernels     {_trace_text(r['trace'])}")
    return "\n".join(lines)


def _trace_text(t: dict) -> str:
    if not t["kernels_per_call"]:
        return "none traced (no device kernels in a CPU trace)"
    return (f"{t['kernels_per_call']:.0f} per call, busy {t['busy_us_per_call'] / 1e3:.2f} ms of a "
            f"{t['span_us_per_call'] / 1e3:.2f} ms span")


# ---------------------------------------------------------------------------------------------
# The geometry: the exact forms of farthest-point sampling and kNN grouping on this device

def bench_fps(*, num_points: int = 3000, num_samples: int = 256, knn: int = 16, batch_sizes=(1, 32),
              budget_s: float = 3.0, runtime=None) -> dict:
    """Median time of one call (vmapped over B clouds) of each method of
    models.geometry.FPS_METHODS (num_points -> num_samples) and KNN_METHODS (the `knn` nearest
    points to each of those samples), and whether the methods of each agree (they must: all are
    exact). Pallas forms are timed on accelerators only (on CPU they are interpreted, for tests).
    The defaults reported are those `runtime` (a RuntimeConfig) picks here."""
    from pam_jax.models import geometry, kernels

    cpu = jax.default_backend() == "cpu"
    rows = []
    for b in batch_sizes:
        pts = jnp.asarray(np.random.default_rng(0).uniform(-0.5, 0.5, (b, num_points, 3)).astype(np.float32))
        centres = jax.vmap(lambda p: p[geometry.farthest_point_sample(p, num_samples, "argmax")])(pts)
        for op, methods in (("fps", geometry.FPS_METHODS), ("knn", geometry.KNN_METHODS)):
            idx = {}
            for method in [m for m in methods if m != "pallas" or not cpu]:
                if op == "fps":
                    f = jax.jit(jax.vmap(lambda p, m=method: geometry.farthest_point_sample(p, num_samples, m)))
                    call = lambda f=f: f(pts)  # noqa: E731
                else:
                    f = jax.jit(jax.vmap(lambda c, p, m=method: geometry.knn(c, p, knn, m)))
                    call = lambda f=f: f(centres, pts)  # noqa: E731
                idx[method] = np.asarray(call())
                times = _timed(call, budget_s=budget_s)
                rows.append({"op": op, "method": method, "B": b, "median_s": statistics.median(times),
                             "repeats": len(times)})
            rows[-1]["agree"] = bool(all(np.array_equal(v, next(iter(idx.values()))) for v in idx.values()))
    with kernels.using(runtime):
        defaults = geometry.default_fps_method(), geometry.default_knn_method()
    return {"benchmark": "fps", "num_points": num_points, "num_samples": num_samples, "knn": knn,
            "default_method": defaults[0], "default_knn_method": defaults[1],
            "rows": rows, "machine": machine(runtime)}


def format_fps(r: dict) -> str:
    lines = [f"geometry: farthest-point sampling {r['num_points']} -> {r['num_samples']} points, then the "
             f"{r.get('knn', 16)} nearest of each; {r['machine']['device']} (defaults here: "
             f"{r['default_method']}, {r.get('default_knn_method', 'top_k')})",
             f"  {'op':<4} {'method':<8} {'B':>4} {'ms/call':>9}"]
    lines += [f"  {x.get('op', 'fps'):<4} {x['method']:<8} {x['B']:>4} {x['median_s'] * 1e3:9.3f}"
              + ("" if x.get("agree", True) else "  DISAGREE") for x in r["rows"]]
    return "\n".join(lines)


def _peaks_text(r: dict) -> str:
    return ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in r.get("peaks", {"float32": r["matmul_peak_flops_per_s"]}).items())


def print_result(r: dict, as_json: bool, formatter) -> None:
    print(json.dumps(r, indent=2) if as_json else formatter(r))




# ---------------------------------------------------------------------------------------------
# Sampler: the fused one-graph selector against a staged baseline of the same maths

SAMPLER_BASE = {"N": 32, "B": 1, "steps": 10, "M": 10}
SAMPLER_SWEEP = [{}, {"N": 8}, {"N": 128}, {"B": 8}, {"steps": 100}, {"M": 100}]
STAGED_AT = [{}, {"steps": 100}, {"M": 100}]
# the paper's test setting: K = 8 candidates, one observation, 100 DDIM steps and M = 100 samples,
# and the cheap 10 / 10 setting; both also run the staged baseline
SAMPLER_PAPER = [{"name": "paper 100/100", "N": 8, "B": 1, "steps": 100, "M": 100, "staged": True},
                 {"name": "paper 10/10", "N": 8, "B": 1, "steps": 10, "M": 10, "staged": True}]
ROW_SETS = ("paper", "sweep", "all")


def sampler_rows(which: str = "all", sweep=None, staged_at=None) -> list[dict]:
    """Named rows: the paper's setting ("paper"), the sweep around SAMPLER_BASE ("sweep"), or both."""
    if which not in ROW_SETS:
        raise ValueError(f"unknown sampler rows {which!r}: expected one of {ROW_SETS}")
    rows = [dict(r) for r in SAMPLER_PAPER] if which in ("paper", "all") else []
    if which in ("sweep", "all"):
        staged_at = STAGED_AT if staged_at is None else staged_at
        for delta in (SAMPLER_SWEEP if sweep is None else sweep):
            name = "base" if not delta else " ".join(f"{k}={v}" for k, v in delta.items())
            rows.append({"name": name, **SAMPLER_BASE, **delta, "staged": delta in staged_at})
    return rows


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
                t_max, beta, runtime=None):
    """The reference code's way: one call per stage, host round trips between stages, the
    encoder recomputed for every Monte-Carlo sample, and a Python loop over DDIM steps (traced
    with `runtime`'s kernel forms)."""
    from flax import nnx

    from pam_jax import diffusion
    from pam_jax.models import kernels
    from pam_jax.models.policy import noise_errors

    schedule = diffusion.schedule_from_config(diff)
    encode = jax.jit(kernels.traced(lambda p, pts: nnx.merge(graphdef, p).encode(pts), runtime))
    denoise = jax.jit(kernels.traced(lambda p, x, t, ctx: nnx.merge(graphdef, p).denoise(x, t, ctx), runtime))
    step = jax.jit(lambda eps, t, x, prev, z: diffusion.ddim_step(
        schedule, eps, t, x, prev_timestep=prev, eta=eta, variance_noise=z, clip_sample=diff.clip_sample))
    errors = jax.jit(kernels.traced(
        lambda p, ctx, x0, t, eps: noise_errors(nnx.merge(graphdef, p), ctx, schedule, x0, t, eps), runtime))
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


def selector_flops(graphdef, ref, pts, *, num_candidates, steps, samples, schedule, runtime=None) -> float | None:
    """FLOPs of one implicit-reward decision, counted per piece: XLA's cost analysis counts a
    while-loop (scan) body once, not once per trip, so the fused graph's own figure undercounts.
    = 2 encodes + steps x (denoise + DDIM update) + (M / chunk) x (score chunk, both models)."""
    from flax import nnx

    from pam_jax import diffusion
    from pam_jax.models import kernels
    from pam_jax.models.policy import noise_errors
    from pam_jax.select import _chunk

    model = lambda p: nnx.merge(graphdef, p)  # noqa: E731
    b, n = pts.shape[0], num_candidates
    c = _chunk(samples, b * n)
    ctx = jax.eval_shape(kernels.traced(lambda p, x: model(p).encode(x), runtime), ref, pts)
    x = jax.ShapeDtypeStruct((b, n, 2, 3), jnp.float32)
    xc = jax.ShapeDtypeStruct((b, n * c, 2, 3), jnp.float32)
    tc = jax.ShapeDtypeStruct((b, n * c), jnp.int32)
    t = jax.ShapeDtypeStruct((), jnp.int32)

    def cost(f, *a):
        return compiled_flops(jax.jit(kernels.traced(f, runtime)).lower(*a).compile())

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


def bench_sampler(*, num_points: int = 3000, rows: str | list = "all", sweep=None, staged_at=None,
                  budget_s: float = 8.0, model_overrides: dict | None = None, compute_dtype: str = "float32",
                  unroll: int = 1, probes=(), runtime=None) -> dict:
    """Fused selector vs staged baseline at the reference size (implicit reward, both models).

    `rows`: a ROW_SETS name or a list of row dicts (name, N, B, steps, M, staged). Each of
    `probes` is called on every row as probe(decide, median_s=, setting=) (`setting`: the row with
    its "points" cloud) and returns fields added to the row. `runtime`: the kernel forms (a
    RuntimeConfig; default the defaults)."""
    from pam_jax import diffusion
    from pam_jax.config import DiffusionConfig, ModelConfig, RuntimeConfig
    from pam_jax.normalize import NormStats
    from pam_jax.select import SelectConfig, make_selector

    model_cfg = dataclasses.replace(ModelConfig(), **(model_overrides or {}))
    runtime = runtime or RuntimeConfig()
    diff = DiffusionConfig()
    schedule = diffusion.schedule_from_config(diff)
    norm = NormStats.identity()
    graphdef, ref, pol = _reference_models(model_cfg)
    peaks = device_peaks()
    peak = peaks.get(compute_dtype, max(peaks.values()))
    out_rows = []
    for c in (sampler_rows(rows, sweep, staged_at) if isinstance(rows, str) else rows):
        pts = np.random.default_rng(0).uniform(-0.5, 0.5, (c["B"], num_points, 3)).astype(np.float32)
        scfg = SelectConfig(mode="implicit", num_candidates=c["N"], num_inference_steps=c["steps"],
                            eta=1.0, reward_samples=c["M"], compute_dtype=compute_dtype, unroll=unroll,
                            runtime=runtime)
        sel = make_selector(graphdef, diff, norm, scfg)
        args = jax.device_put((ref, pol, pts, jax.random.key(0)))
        # the decision a controller pays for: the parameter-only work prepared once beforehand
        t = time.perf_counter()
        prepared = jax.block_until_ready(sel.prepare(ref, pol))
        prepare_s = time.perf_counter() - t   # its compilation included
        t = time.perf_counter()
        compiled = sel.decide.lower(prepared, *args[2:]).compile()
        compile_s = time.perf_counter() - t
        flops = selector_flops(graphdef, ref, args[2], num_candidates=c["N"], steps=c["steps"],
                               samples=c["M"], schedule=schedule, runtime=runtime)
        decide = lambda: compiled(prepared, *args[2:])  # noqa: E731
        jax.block_until_ready(decide())
        times = _timed(decide, budget_s=budget_s)
        med = statistics.median(times)
        # the same decision from the parameters, in one graph (prepare + decide every call)
        one_graph = sel.lower(*args).compile()
        jax.block_until_ready(one_graph(*args))
        one = _timed(lambda: one_graph(*args), budget_s=budget_s / 2)
        row = {**c, "compile_s": compile_s, "median_s": med, "p90_s": float(np.percentile(times, 90)),
               "repeats": len(times), "flops": flops,
               "fraction_of_peak": (flops / med) / peak if flops else None,
               "prepare_s": prepare_s, "one_graph_median_s": statistics.median(one)}
        for probe in probes:
            row.update(probe(decide, median_s=med, setting={**c, "points": pts}))
        if c.get("staged"):
            staged = make_staged(graphdef, diff, norm, num_candidates=c["N"], num_inference_steps=c["steps"],
                                 eta=1.0, reward_samples=c["M"], beta=scfg.beta,
                                 t_max=diffusion.timestep_limit(scfg.reward_timestep_frac, diff.num_train_timesteps),
                                 runtime=runtime)
            staged(ref, pol, pts, 0)  # compile its pieces
            st = _timed(lambda: staged(ref, pol, pts, 1), budget_s=budget_s, min_repeats=2, max_repeats=5)
            row.update(staged_median_s=statistics.median(st), staged_repeats=len(st),
                       speedup=statistics.median(st) / med)
        out_rows.append(row)
    return {"benchmark": "sampler", "num_points": num_points, "model": dataclasses.asdict(model_cfg),
            "diffusion": dataclasses.asdict(diff), "mode": "implicit", "compute_dtype": compute_dtype, "unroll": unroll,
            "matmul_peak_flops_per_s": peak, "peaks": peaks, "rows": out_rows, "machine": machine(runtime)}


def format_sampler(r: dict) -> str:
    m = r["model"]
    head = (f"best-of-N selection, implicit reward, {r['num_points']} points, width {m['width']}, "
            f"{m['layers']} layers, {m['num_tokens']} tokens, {r.get('compute_dtype', 'float32')}; "
            f"{r['machine']['device']} x1; matmul peak {_peaks_text(r)}")
    torch_col = any("torch_speedup" in x for x in r["rows"])
    lines = [head, "median / p90: one decision from parameters prepared once (Selector.decide); one graph: "
                   "the same from the parameters (prepare + decide per call)",
             f"{'row':<14} {'N':>4} {'B':>3} {'steps':>5} {'M':>4} {'compile s':>9} {'median ms':>10} "
                   f"{'p90 ms':>8} {'one graph':>9} {'GFLOP':>7} {'%peak':>6} {'staged ms':>10} {'speed-up':>8}"
                   + (f" {'torch ms':>10} {'speed-up':>8}" if torch_col else "")]
    for x in r["rows"]:
        staged = f"{x['staged_median_s'] * 1e3:10.0f} {x['speedup']:7.1f}x" if "speedup" in x else f"{'':>10} {'':>8}"
        gf = f"{x['flops'] / 1e9:7.1f}" if x["flops"] else f"{'?':>7}"
        one = f"{x['one_graph_median_s'] * 1e3:9.1f}" if "one_graph_median_s" in x else f"{'':>9}"
        pk = f"{100 * x['fraction_of_peak']:5.1f}%" if x["fraction_of_peak"] else f"{'?':>6}"
        tc = ""
        if torch_col:
            tc = (f" {x['torch_median_s'] * 1e3:10.0f} {x['torch_speedup']:7.1f}x" if "torch_speedup" in x
                  else f" {'':>10} {'':>8}")
        lines.append(f"{x.get('name', ''):<14} {x['N']:>4} {x['B']:>3} {x['steps']:>5} {x['M']:>4} "
                     f"{x['compile_s']:9.1f} {x['median_s'] * 1e3:10.1f} {x['p90_s'] * 1e3:8.1f} {one} {gf} {pk} "
                     f"{staged}{tc}")
    lines += [f"  {x.get('name', '')}: device kernels {_trace_text(x['trace'])}" for x in r["rows"] if "trace" in x]
    return "\n".join(lines)
