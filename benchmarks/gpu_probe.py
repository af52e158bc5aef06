"""Where the selector's and the train step's time goes on an accelerator: one run.

    OUT=dir PROBE_TAG=after python benchmarks/gpu_probe.py [sections...]

Sections (default: geometry, sampler, train, hlo): geometry (FPS and kNN forms, B = 1 and 32,
and whether they agree), sampler (the paper's 100/100 and 10/10 rows for each variant), train
(the supervised step at the reference size), hlo (the optimised HLO of the 10/10 selector).
Not in the default list: parity (the fused denoiser picks what the plain one picks at the
paper's settings), stack (the two networks apart and stacked: fusions and times), torch (the
eager PyTorch reference at the same settings).

The sampler variants depend on PROBE_TAG: "before" runs the code as found (put an older copy of
pam_jax first on PYTHONPATH); "after" the current code and the current code without one change
at a time (each change has an environment switch read at trace time); "fused" the current
defaults, the two networks stacked (runtime.stack_models), the fused Pallas denoiser
(runtime.fused="on") and its chain form with stacked networks, then the PyTorch reference; "tune"
the other fused forms and block sizes; "cublas" the plain and stacked forms again, for a process
started with XLA_FLAGS=--xla_gpu_enable_triton_gemm=false (cuBLAS matmuls, the GELU in their
epilogue: 42 launches per DDIM step instead of 44 for an H200). With the current code a row
times the decision from parameters prepared once (Selector.decide); the first variant also times
the one graph from the parameters. The first variant of each section (and the main fused forms) is also traced
(jax.profiler) and its device kernels summarised: kernels per call, their summed time ("busy"),
the span from the first kernel's start to the last one's end, and the costliest kernel names.
Writes $OUT/probe_<tag>.json and prints a line per row.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

try:
    from pam_jax.bench import compute as bench
except ImportError:   # an older pam_jax (the "before" run), from before pam_jax.bench
    from pam_jax.apps import bench

# the stacked and fused forms: benchmarks/experimental/fused.py of this checkout (not installed);
# an older package (PROBE_TAG=before) has neither them nor the runtime section
ROOT = next((p for p in (os.getcwd(), *map(str, __import__("pathlib").Path(__file__).resolve().parents))
             if os.path.isdir(os.path.join(p, "benchmarks", "experimental"))), None)
if ROOT:
    sys.path.insert(0, ROOT)
try:
    import benchmarks.experimental.fused  # noqa: F401  (registers the experimental selector)
except ImportError:
    pass

OUT = os.environ.get("OUT", "bench_out")
TAG = os.environ.get("PROBE_TAG", "plain")
PROFILE = os.environ.get("PROBE_PROFILE", "1") == "1"
SMALL = os.environ.get("PROBE_SMALL") == "1"   # a CPU smoke test of this script: tiny sizes
NP, NS = (300, 32) if SMALL else (3000, 256)
SETTINGS = ((4, 4), (2, 2)) if SMALL else ((100, 100), (10, 10))
# the kernel forms every variant starts from (runtime fields, e.g. PROBE_RUNTIME="knn=top_k")
BASE_FORMS = dict(kv.split("=", 1) for kv in os.environ.get("PROBE_RUNTIME", "").split(",") if kv)
RESULT: dict = {"tag": TAG, "xla_flags": os.environ.get("XLA_FLAGS", ""), "machine": bench.machine(), "base_forms": BASE_FORMS}


def save():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, f"probe_{TAG}.json"), "w") as f:
        json.dump(RESULT, f, indent=1, default=str)


def timed(fn, budget_s=1.0, min_repeats=5, max_repeats=200):
    jax.block_until_ready(fn())
    return statistics.median(bench._timed(fn, budget_s=budget_s, min_repeats=min_repeats, max_repeats=max_repeats))


def kernel_summary(fn, calls=5, top=25):
    """kernel_trace.py of this checkout, loaded by path: the "before" run imports an older pam_jax."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernel_trace.py")
    spec = importlib.util.spec_from_file_location("pam_jax_trace", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.kernel_summary(fn, calls=calls, top=top)


def section_geometry():
    from pam_jax.models import geometry

    rows = []
    rng = np.random.default_rng(0)
    for b in (1, 32):
        pts = jnp.asarray(rng.uniform(-0.5, 0.5, (b, NP, 3)).astype(np.float32))
        variants = [("fps argmax", "fps", "argmax", {}), ("fps rows", "fps", "rows", {}),
                    ("fps pallas", "fps", "pallas", {}), ("knn top_k", "knn", "top_k", {})]
        variants += [(f"knn pallas q{q} w{w}", "knn", "pallas", {"KNN_PALLAS_QUERIES": q, "KNN_PALLAS_WARPS": w})
                     for q, w in ((4, 8), (2, 4), (8, 8))]
        ref = {}
        for name, kind, method, consts in variants:
            saved = {k: getattr(geometry, k) for k in consts}
            try:
                for k, v in consts.items():
                    setattr(geometry, k, v)
                if kind == "fps":
                    f = jax.jit(jax.vmap(lambda p, m=method: geometry.farthest_point_sample(p, NS, m)))
                    arg = pts
                else:
                    centres = jax.vmap(lambda p: p[geometry.farthest_point_sample(p, NS, "argmax")])(pts)
                    f = jax.jit(jax.vmap(lambda c, p, m=method: geometry.knn(c, p, 16, m)))
                    arg = (centres, pts)
                call = (lambda: f(*arg)) if kind == "knn" else (lambda: f(arg))
                idx = np.asarray(call())
                ref.setdefault(kind, idx)
                t = timed(call, budget_s=0.5)
                row = {"variant": name, "B": b, "ms": t * 1e3, "mismatched": int((idx != ref[kind]).sum()),
                       "mismatched_sets": int(sum(set(a) != set(c) for a, c in zip(idx.reshape(-1, idx.shape[-1]),
                                                                                    ref[kind].reshape(-1, idx.shape[-1]))))
                       if kind == "knn" else None}
            except Exception as e:  # noqa: BLE001
                row = {"variant": name, "B": b, "error": f"{type(e).__name__}: {str(e)[:400]}"}
            finally:
                for k, v in saved.items():
                    setattr(geometry, k, v)
            rows.append(row)
            print("geometry", row, flush=True)
            RESULT["geometry"] = rows
            save()


def sampler_variants():
    """(name, runtime fields, SelectConfig overrides); the first (and any named "fused") is profiled."""
    if TAG == "before":
        return [("before", {}, {})]
    on, chain, stack = {"fused": "on"}, {"fused": "chain"}, {"stack_models": True}
    if TAG == "fused":
        return [("plain", {}, {}), ("stacked", stack, {}), ("fused", on, {}),
                ("fused chain, stacked", {**chain, **stack}, {})]
    if TAG == "tune":
        return [("fused chain", chain, {}), ("fused chain, stacked, bf16", {**chain, **stack}, {"compute_dtype": "bfloat16"}),
                ("fused rows 16", {**on, "fused_rows": 16}, {}),
                ("fused warps 8", {**on, "fused_warps": 8}, {}),
                ("fused chain, stacked, unrolled", {**chain, **stack}, {"unroll": "full"}),   # 10/10 only
                ("plain, unrolled", {}, {"unroll": "full"})]   # 10/10 only: no loop, so XLA's command buffers may hold it all
    if TAG == "cublas":   # run with XLA_FLAGS=--xla_gpu_enable_triton_gemm=false (gpu_tune.sh does)
        return [("plain, cuBLAS", {}, {}), ("stacked, cuBLAS", stack, {}),
                ("plain, cuBLAS, unrolled", {}, {"unroll": "full"})]
    return [("after", {}, {}),
            ("after without Pallas FPS", {"fps": "argmax"}, {}),
            ("after without Pallas kNN", {"knn": "top_k"}, {}),
            ("after without padding", {"pad": "off"}, {}),
            ("after without small attention", {"small_attention": 0}, {}),
            ("after, bf16", {}, {"compute_dtype": "bfloat16"})]


PROFILED = ("stacked", "fused", "fused chain", "fused chain, stacked", "plain, unrolled", "stacked, cuBLAS",
            "plain, cuBLAS, unrolled")
TORCH_TAGS = ("fused",)   # the sampler section also times the eager PyTorch reference (when torch imports)


FORMS: dict = {}


def set_forms(fields):
    """The runtime fields of the variants that follow (over BASE_FORMS)."""
    FORMS.clear()
    FORMS.update({**BASE_FORMS, **fields})


def forms() -> dict:
    """The keyword that gives a SelectConfig or Config the current forms ({} with none: an older
    package has no runtime section)."""
    if not FORMS:
        return {}
    from pam_jax import config

    return {"runtime": config.override(config.Config(), [f"runtime.{k}={v}" for k, v in FORMS.items()]).runtime}


def section_sampler():
    from pam_jax.config import DiffusionConfig, ModelConfig
    from pam_jax.normalize import NormStats
    from pam_jax.select import SelectConfig, make_selector

    diff = DiffusionConfig()
    graphdef, ref, pol = bench._reference_models(ModelConfig())
    out = []
    for i, (name, env, kw) in enumerate(sampler_variants()):
        for steps, m in SETTINGS:
            set_forms(env)
            k = dict(kw)
            if k.get("unroll") == "full":
                if steps > 20:
                    continue
                k["unroll"] = steps
            row = {"variant": name, "steps": steps, "M": m}
            try:
                scfg = SelectConfig(mode="implicit", num_candidates=8, num_inference_steps=steps, eta=1.0,
                                    reward_samples=m, **k, **forms())
                sel = make_selector(graphdef, diff, NormStats.identity(), scfg)
                pts = np.random.default_rng(0).uniform(-0.5, 0.5, (1, NP, 3)).astype(np.float32)
                args = jax.device_put((ref, pol, pts, jax.random.key(0)))
                t0 = time.perf_counter()
                if hasattr(sel, "prepare"):   # the decision from parameters prepared once
                    prepared = jax.block_until_ready(sel.prepare(ref, pol))
                    compiled = sel.decide.lower(prepared, *args[2:]).compile()
                    call = lambda: compiled(prepared, *args[2:])  # noqa: E731
                else:                         # an older pam_jax: the one graph from the parameters
                    compiled = sel.lower(*args).compile()
                    call = lambda: compiled(*args)  # noqa: E731
                row["compile_s"] = time.perf_counter() - t0
                row["ms"] = timed(call) * 1e3
                if i == 0 and TAG != "tune" and hasattr(sel, "prepare"):   # and the one graph, for the first variant
                    one = sel.lower(*args).compile()
                    row["one_graph_ms"] = timed(lambda: one(*args)) * 1e3
                if PROFILE and (i == 0 or name in PROFILED):
                    row["profile"] = kernel_summary(call)
            except Exception as e:  # noqa: BLE001
                row["error"] = f"{type(e).__name__}: {str(e)[:400]}"
                traceback.print_exc()
            out.append(row)
            p = row.get("profile", {})
            print("sampler", name, steps, m, {k: row.get(k) for k in ("ms", "one_graph_ms", "compile_s", "error")},
                  {k: p.get(k) for k in ("kernels_per_call", "busy_us_per_call", "span_us_per_call")}, flush=True)
            RESULT["sampler"] = out
            save()
    set_forms({})
    if TAG in TORCH_TAGS:
        section_torch()


def section_torch():
    """The eager PyTorch re-statement of the reference decision (torch_reference.py) at the
    same settings, in this process: the denominator of the speed-up against the reference."""
    try:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import torch_reference

        reference = torch_reference.make_reference()
    except ImportError as e:
        print("torch", e, flush=True)
        return
    rows = []
    for steps, m in SETTINGS:
        pts = np.random.default_rng(0).uniform(-0.5, 0.5, (1, NP, 3)).astype(np.float32)
        kw = dict(num_candidates=8, steps=steps, samples=m)
        reference(pts, **kw)   # warm-up
        times = bench._timed(lambda: reference(pts, **kw), budget_s=2.0, min_repeats=1, max_repeats=3)
        rows.append({"steps": steps, "M": m, "ms": statistics.median(times) * 1e3, "repeats": len(times)})
        print("torch", rows[-1], flush=True)
        RESULT["torch"] = rows
        save()


def section_train():
    """The supervised train step bench_train times (batch 32 x K = 8 x 3000 points), timed and traced.
    Set up here rather than through bench_train(trace=True): the "before" run imports an older
    pam_jax, whose bench_train cannot trace."""
    from pam_jax.config import Config, DataConfig, ModelConfig, TrainConfig
    from pam_jax.toy.data import ToyBimodalData
    from pam_jax.train import sharding
    from pam_jax.train.loop import init_train_state, step_for

    out = []
    bsz = 4 if SMALL else 32
    variants = ([("before", {})] if TAG == "before" else
                [("after", {}), ("after without Pallas kNN", {"knn": "top_k"})])
    for i, (name, env) in enumerate(variants):
        set_forms(env)
        row = {"variant": name}
        try:
            cfg = Config(name="probe", model=ModelConfig(), data=DataConfig(num_points=NP, batch_size=bsz),
                         train=TrainConfig(noise_replicas=8, steps=1000, num_devices=1), **forms())
            mesh = sharding.make_mesh(1)
            data = ToyBimodalData(batch_size=bsz, num_points=NP)
            graphdef, tx, state = init_train_state(cfg, mesh)
            step_fn = step_for(cfg, tx, mesh, data.norm_stats())
            batch = sharding.to_global(data.batch(0), mesh)
            t0 = time.perf_counter()
            compiled = step_fn.lower(state, batch).compile()
            row["compile_s"] = time.perf_counter() - t0
            holder = {"s": state}

            def one():
                holder["s"], m = compiled(holder["s"], batch)
                return m

            row["ms"] = timed(one, budget_s=2.0) * 1e3
            if PROFILE and i == 0:
                row["profile"] = kernel_summary(one, calls=5, top=30)
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {str(e)[:400]}"
            traceback.print_exc()
        out.append(row)
        p = row.get("profile", {})
        print("train", name, {k: row.get(k) for k in ("ms", "compile_s", "error")},
              {k: p.get(k) for k in ("kernels_per_call", "busy_us_per_call", "span_us_per_call")}, flush=True)
        RESULT["train"] = out
        save()
    set_forms({})


def section_hlo():
    """The optimised HLO of the 10/10 selector, to read its fusions and kernels."""
    from pam_jax.config import DiffusionConfig, ModelConfig
    from pam_jax.normalize import NormStats
    from pam_jax.select import SelectConfig, make_selector

    set_forms({"fused": "chain", "stack_models": True} if TAG == "fused" else {})
    graphdef, ref, pol = bench._reference_models(ModelConfig())
    steps, m = SETTINGS[1]
    sel = make_selector(graphdef, DiffusionConfig(), NormStats.identity(),
                        SelectConfig(num_candidates=8, num_inference_steps=steps, eta=1.0, reward_samples=m, **forms()))
    pts, key = np.zeros((1, NP, 3), np.float32), jax.random.key(0)
    lowered = (sel.decide.lower(sel.prepare(ref, pol), pts, key) if hasattr(sel, "prepare")
               else sel.lower(ref, pol, pts, key))
    with open(os.path.join(OUT, f"hlo_{TAG}.txt"), "w") as f:
        f.write(lowered.compile().as_text())
    set_forms({})


def section_parity():
    """The fused denoiser ("on", and "chain" with both networks stacked) against the plain one at the paper's settings (K = 8, B = 1, two
    clouds in turn, the same key): chosen indices, and the largest differences of candidates
    and scores (Triton's float32 matmuls run in TF32, as XLA's do by default)."""
    from pam_jax.config import DiffusionConfig, ModelConfig
    from pam_jax.normalize import NormStats
    from pam_jax.select import SelectConfig, make_selector

    graphdef, ref, pol = bench._reference_models(ModelConfig())

    def noisy(params, seed):   # fresh models output zeros (their output layer starts at zero)
        leaves, tree = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.key(seed), len(leaves))
        return jax.tree.unflatten(tree, [x + 0.02 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])

    ref, pol = noisy(ref, 1), noisy(pol, 2)
    rows = []
    for steps, m in SETTINGS:
        out = {}
        variants = (("plain", {}), ("fused", {"fused": "on"}),
                    ("chain stacked", {"fused": "chain", "stack_models": True}))
        for name, fields in variants:
            set_forms(fields)
            sel = make_selector(graphdef, DiffusionConfig(), NormStats.identity(),
                                SelectConfig(num_candidates=8, num_inference_steps=steps, eta=1.0, reward_samples=m,
                                             **forms()))
            out[name] = [sel(ref, pol, np.random.default_rng(c).uniform(-0.5, 0.5, (1, NP, 3)).astype(np.float32),
                             jax.random.key(c)) for c in range(2)]
        row = {"steps": steps, "M": m, "max_score": max(float(jnp.abs(a.scores).max()) for a in out["plain"])}
        for name in ("fused", "chain stacked"):
            pairs = list(zip(out["plain"], out[name]))
            row[name] = {"same_index": [bool((a.index == b.index).all()) for a, b in pairs],
                         "max_candidate_diff": max(float(jnp.abs(a.candidates - b.candidates).max()) for a, b in pairs),
                         "max_score_diff": max(float(jnp.abs(a.scores - b.scores).max()) for a, b in pairs)}
        rows.append(row)
        print("parity", row, flush=True)
        RESULT["parity"] = rows
        save()
    set_forms({})


def section_stack():
    """Both networks apart or stacked (runtime.stack_models), the decision from prepared
    parameters: fusions (and custom calls) in its compiled HLO, and the median time of each form
    in 3 alternating rounds, with the largest differences of candidates and scores."""
    from pam_jax.config import DiffusionConfig, ModelConfig
    from pam_jax.normalize import NormStats
    from pam_jax.select import SelectConfig, make_selector

    graphdef, ref, pol = bench._reference_models(ModelConfig())
    pts = np.random.default_rng(0).uniform(-0.5, 0.5, (1, NP, 3)).astype(np.float32)
    key = jax.random.key(0)
    rows = []
    for steps, m in SETTINGS:
        built = {}
        for stack in ("off", "on"):
            set_forms({"stack_models": stack == "on"})
            sel = make_selector(graphdef, DiffusionConfig(), NormStats.identity(),
                                SelectConfig(num_candidates=8, num_inference_steps=steps, eta=1.0, reward_samples=m,
                                             **forms()))
            prepared = sel.prepare(ref, pol)
            compiled = sel.decide.lower(prepared, pts, key).compile()
            hlo = compiled.as_text()
            built[stack] = (compiled, prepared, compiled(prepared, pts, key))
            rows.append({"steps": steps, "M": m, "stack": stack, "fusions": hlo.count(" fusion("),
                         "custom_calls": hlo.count(" custom-call(")})
        a, b = built["off"][2], built["on"][2]
        for r in rows[-2:]:
            r.update(same_index=bool((a.index == b.index).all()),
                     max_candidate_diff=float(jnp.abs(a.candidates - b.candidates).max()),
                     max_score_diff=float(jnp.abs(a.scores - b.scores).max()), ms=[])
        for _ in range(3):
            for r, stack in zip(rows[-2:], ("off", "on")):
                compiled, prepared, _ = built[stack]
                r["ms"].append(timed(lambda: compiled(prepared, pts, key)) * 1e3)
        for r in rows[-2:]:
            print("stack", r, flush=True)
        RESULT["stack"] = rows
        save()
    set_forms({})


SECTIONS = {"geometry": section_geometry, "sampler": section_sampler, "train": section_train, "hlo": section_hlo,
            "parity": section_parity, "stack": section_stack, "torch": section_torch}

if __name__ == "__main__":
    chosen = sys.argv[1:] or ["geometry", "sampler", "train", "hlo"]
    for s in chosen:
        t = time.perf_counter()
        SECTIONS[s]()
        print(f"== {s} done in {time.perf_counter() - t:.0f} s", flush=True)
    save()
