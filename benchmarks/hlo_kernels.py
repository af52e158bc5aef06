"""Kernel launches per call, read from the text of a compiled (optimised, scheduled) XLA module.

On a GPU a small graph is launch-bound: its time follows the number of kernels it runs, not its
FLOPs. This module counts them statically, so a change can be judged without the device: every
fusion and custom call (cuBLAS, Triton/Pallas) and every unfused compute instruction of a
control computation (the entry, a while body, a called computation) is one launch; a while
loop with a known trip count multiplies its body; bookkeeping ops (parameters, tuples, bitcasts,
constants) launch nothing. `compile_for_gpu` compiles a jitted function for a GPU described by a
target spec (benchmarks/targets/h200.txtpb) on a machine without one, through the CUDA PJRT
plugin's compile-only devices; `pam-jax bench sampler` is the timing, this is the count (`python benchmarks/bench.py kernels`).
"""
from __future__ import annotations

import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

# Instructions of a control computation that launch nothing on the device.
_FREE = frozenset({
    "parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all",
    "opt-barrier", "add-dependency", "partition-id", "replica-id", "domain",
})
_HEADER = re.compile(r"^(?:ENTRY\s+)?%([\w.\-]+)\s.*\{\s*$")
# `%name = SHAPE op(` where SHAPE is a plain shape or a (non-nested) tuple of shapes.
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%[\w.\-]+\s*=\s*(?:\([^()]*\)|\S+)\s+([a-z][a-z0-9\-]*)\(")
_TRIP = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"')


@dataclass
class KernelCount:
    """Launches per call of the entry computation, and what they are."""
    total: int
    by_op: dict[str, int] = field(default_factory=dict)   # fusion / custom-call / other op -> launches
    loops: list[dict] = field(default_factory=list)       # per while: trip count, launches per trip, depth
    in_loops: int = 0                                     # launches inside the outermost loops
    unknown_trip_counts: int = 0                          # loops counted once (trip count not static)


def _computations(text: str) -> tuple[dict[str, list[str]], str]:
    comps: dict[str, list[str]] = {}
    entry, current = "", None
    for line in text.splitlines():
        if current is None:
            m = _HEADER.match(line)
            if m:
                current = m.group(1)
                comps[current] = []
                if line.startswith("ENTRY"):
                    entry = current
        elif line.strip() == "}":
            current = None
        else:
            comps[current].append(line)
    if not entry:
        raise ValueError("no ENTRY computation in this HLO text (pass the compiled module's as_text())")
    return comps, entry


def _callee(line: str, attr: str) -> str | None:
    m = re.search(attr + r"=%([\w.\-]+)", line)
    return m.group(1) if m else None


def count_kernels(hlo_text: str) -> KernelCount:
    """Count the kernel launches of one call of the compiled module `hlo_text`."""
    comps, entry = _computations(hlo_text)
    loops: list[dict] = []
    unknown = 0

    def walk(name: str, stack: tuple[str, ...], depth: int = 0) -> Counter:
        """Launches by op of one execution of computation `name`, inside `depth` loops."""
        nonlocal unknown
        if name in stack:
            raise ValueError(f"recursive computation {name} in HLO text")
        inner = stack + (name,)
        launches: Counter = Counter()
        for line in comps.get(name, ()):
            m = _INSTR.match(line)
            if not m or m.group(1) in _FREE:
                continue
            op = m.group(1)
            if op == "while":
                trip = _TRIP.search(line)
                n = int(trip.group(1)) if trip else 1
                per_trip = walk(_callee(line, "body"), inner, depth + 1)
                if trip is None:   # counted as one trip; its condition runs each trip too
                    unknown += 1
                    per_trip += walk(_callee(line, "condition"), inner, depth + 1)
                loops.append({"body": _callee(line, "body"), "trip_count": n if trip else None,
                              "launches_per_trip": per_trip.total(), "depth": depth})
                launches.update({k: v * n for k, v in per_trip.items()})
            elif op == "conditional":   # the branch with the most launches
                listed = re.search(r"branch_computations=\{([^}]*)\}", line)
                names = (re.findall(r"%([\w.\-]+)", listed.group(1)) if listed else
                         [c for c in (_callee(line, "true_computation"),
                                      _callee(line, "false_computation")) if c])
                launches += max((walk(b, inner, depth) for b in names), key=Counter.total, default=Counter())
            elif op == "call":
                launches += walk(_callee(line, "to_apply"), inner, depth)
            elif op not in ("async-update", "async-done", "copy-done", "send-done", "recv-done"):
                launches[op] += 1   # (an async pair is counted at its start)
        return launches

    by_op = walk(entry, ())
    outer = sum(x["launches_per_trip"] * (x["trip_count"] or 1) for x in loops if x["depth"] == 0)
    return KernelCount(total=by_op.total(), by_op=dict(by_op.most_common()), loops=loops, in_loops=outer,
                       unknown_trip_counts=unknown)


TARGETS_DIR = os.path.join(os.path.dirname(__file__), "targets")
PLUGIN_HINT = ("compiling for a GPU target needs JAX's CUDA plugin: pip install --no-deps "
               "'jax-cuda13-plugin=={v}' 'jax-cuda13-pjrt=={v}' (no GPU or CUDA libraries needed)")


def gpu_target(spec: str = "h200"):
    """A compile-only GPU device described by `spec`: a name in benchmarks/targets/ or a path to a
    GpuTargetConfigProto text file. Needs the CUDA PJRT plugin, not a GPU."""
    path = spec if os.path.exists(spec) else os.path.join(TARGETS_DIR, f"{spec}.txtpb")
    if not os.path.exists(path):
        known = sorted(f[:-6] for f in os.listdir(TARGETS_DIR) if f.endswith(".txtpb"))
        raise ValueError(f"GPU target {spec!r}: neither a file nor one of {known}")
    os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")   # no CUDA libraries are loaded
    from jax.experimental import topologies

    try:
        topo = topologies.get_topology_desc(platform="cuda", topology_name=spec, topology="1x1x1",
                                            target_config=open(path).read())
    except (RuntimeError, NotImplementedError) as e:
        import importlib.util

        why = str(e).splitlines()[0][:120]
        if importlib.util.find_spec("jax_plugins") and importlib.util.find_spec("jax_plugins.xla_cuda13"):
            raise ImportError("the CUDA plugin is installed but did not start (it checks for CUDA libraries "
                              "unless JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1 is set before JAX starts its "
                              f"backends) ({why})") from None
        raise ImportError(f"{PLUGIN_HINT.format(v=jax.__version__)} ({why})") from None
    return topo.devices[0]


def compile_for_gpu(fn, *args, spec: str = "h200") -> str:
    """The optimised HLO text of jitted `fn` on `args` (arrays or ShapeDtypeStructs, any pytree),
    compiled for the GPU `spec`, traced with the GPU's choices (geometry.targeting)."""
    from jax.sharding import SingleDeviceSharding

    from pam_jax.models import geometry

    sharding = SingleDeviceSharding(gpu_target(spec))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), x.dtype, sharding=sharding), args)
    cached = jax.config.jax_enable_compilation_cache
    # a compile-only program cannot be loaded back. This holds only in a process that has not
    # compiled yet (jax fixes its use of the cache at the first compile): the CLI's `bench
    # kernels` keeps the cache off from the start
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        with geometry.targeting("gpu"):
            return fn.trace(*abstract).lower(lowering_platforms=("cuda",)).compile().as_text()
    finally:
        jax.config.update("jax_enable_compilation_cache", cached)


# `python benchmarks/bench.py kernels`: the decision's launches per form of the denoiser, compiled for a GPU target.
FORMS = {   # name -> its runtime config fields (the forms other than plain: benchmarks/experimental/fused.py)
    "plain": {},
    "stacked": {"stack_models": True},
    "fused": {"fused": "on"},
    "chain": {"fused": "chain"},
    "chain-stacked": {"fused": "chain", "stack_models": True},
}


def _experimental_forms() -> None:
    """Register the experimental selector (benchmarks/experimental/fused.py of this checkout)."""
    import importlib
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    importlib.import_module("benchmarks.experimental.fused")


def bench_kernels(*, forms=tuple(FORMS), rows: str = "paper", spec: str = "h200", num_points: int = 3000,
                  compute_dtype: str = "float32", unroll: int = 1, hlo_dir: str | None = None, runtime=None) -> dict:
    """Kernel launches of one decision (Selector.decide, implicit reward, reference model size)
    compiled for the GPU `spec`, per denoiser form and sampler row; no GPU is needed. `unroll`:
    DDIM steps per iteration of the sampling loop (SelectConfig.unroll). `runtime`: the other
    kernel forms (a RuntimeConfig; each form sets its own fields on it)."""
    import dataclasses

    from pam_jax.bench import compute as bench
    from pam_jax.config import DiffusionConfig, ModelConfig, RuntimeConfig
    from pam_jax.models import geometry
    from pam_jax.normalize import NormStats
    from pam_jax.select import SelectConfig, make_selector

    unknown = [f for f in forms if f not in FORMS]
    if unknown:
        raise ValueError(f"unknown form(s) {unknown}: expected some of {list(FORMS)}")
    gpu_target(spec)   # fail early, in one line, without the plugin
    runtime = runtime or RuntimeConfig()
    if any(FORMS[f] for f in forms):
        _experimental_forms()
    graphdef, ref, pol = bench._reference_models(ModelConfig())
    pts = np.zeros((1, num_points, 3), np.float32)
    out = []
    for c in bench.sampler_rows(rows):
        for form in forms:
            with geometry.targeting("gpu"):
                sel = make_selector(graphdef, DiffusionConfig(), NormStats.identity(), SelectConfig(
                    mode="implicit", num_candidates=c["N"], num_inference_steps=c["steps"], eta=1.0,
                    reward_samples=c["M"], compute_dtype=compute_dtype, unroll=unroll,
                    runtime=dataclasses.replace(runtime, **FORMS[form])))
                t = time.perf_counter()
                hlo = compile_for_gpu(sel.decide, sel.prepare(ref, pol), np.repeat(pts, c["B"], 0),
                                      jax.random.key(0), spec=spec)
                seconds = time.perf_counter() - t
            k = count_kernels(hlo)
            if hlo_dir:
                os.makedirs(hlo_dir, exist_ok=True)
                with open(os.path.join(hlo_dir, f"{form}_{c['steps']}_{c['M']}.txt"), "w") as f:
                    f.write(hlo)
            out.append({"form": form, "name": c.get("name", ""), "N": c["N"], "B": c["B"], "steps": c["steps"],
                        "M": c["M"], "launches": k.total, "in_loops": k.in_loops, "outside_loops": k.total - k.in_loops,
                        "per_trip": [x["launches_per_trip"] for x in k.loops], "by_op": k.by_op,
                        "unknown_trip_counts": k.unknown_trip_counts, "compile_s": seconds})
    return {"benchmark": "kernels", "target": spec, "num_points": num_points, "compute_dtype": compute_dtype,
            "unroll": unroll, "rows": out, "machine": bench.machine(runtime)}


def format_kernels(r: dict) -> str:
    lines = [f"kernel launches per decision, compiled for GPU target {r['target']} (counted in the optimised "
             f"HLO; no GPU used), {r['num_points']} points, {r['compute_dtype']}, unroll {r.get('unroll', 1)}",
             f"  {'row':<14} {'form':<14} {'launches':>8} {'in loops':>8} {'per trip':>9} {'outside':>7} "
             f"{'custom calls':>12} {'compile s':>9}"]
    for x in r["rows"]:
        lines.append(f"  {x['name']:<14} {x['form']:<14} {x['launches']:>8} {x['in_loops']:>8} "
                     f"{'/'.join(map(str, x['per_trip'])) or '-':>9} {x['outside_loops']:>7} "
                     f"{x['by_op'].get('custom-call', 0):>12} {x['compile_s']:9.1f}")
    return "\n".join(lines)
