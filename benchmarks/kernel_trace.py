"""The device kernels of a compiled call, read from a jax.profiler trace: how many run per call,
their summed time ("busy"), the span from the first one's start to the last one's end, and the
costliest by name. `python benchmarks/bench.py sampler|train --trace` adds this to each row; on a GPU a
launch-bound graph shows as many short kernels, and busy time well under the span as the host
falling behind. CPU traces hold no device kernels (the summary says 0)."""
from __future__ import annotations

import glob
import os
import tempfile

import jax


def kernel_summary(fn, *, calls: int = 5, top: int = 15) -> dict:
    """Trace `calls` calls of fn (after one untraced call) and summarise their device kernels."""
    from jax.profiler import ProfileData

    jax.block_until_ready(fn())
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        try:
            for _ in range(calls):
                jax.block_until_ready(fn())
        finally:
            jax.profiler.stop_trace()
        paths = glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)
        if not paths:
            return summarise([], calls, top)
        data = ProfileData.from_file(paths[0])
        return summarise(data.planes, calls, top)


def summarise(planes, calls: int, top: int = 15) -> dict:
    """Kernel events of the device planes ("/device:...") on their stream lines ("Stream ...";
    the other lines repeat them grouped by XLA op or module) -> per-call figures."""
    by_name: dict[str, list] = {}
    spans = []
    for plane in planes:
        if not plane.name.startswith("/device:"):
            continue
        for line in plane.lines:
            if not line.name.startswith("Stream"):
                continue
            for e in line.events:
                spans.append((e.start_ns, e.start_ns + e.duration_ns))
                entry = by_name.setdefault(e.name, [0, 0.0])
                entry[0] += 1
                entry[1] += e.duration_ns
    if not spans:
        return {"kernels_per_call": 0, "busy_us_per_call": 0.0, "span_us_per_call": 0.0, "top": []}
    busy = sum(b - a for a, b in spans)
    span = max(b for _, b in spans) - min(a for a, _ in spans)
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1][1])[:top]
    return {"kernels_per_call": len(spans) / calls, "busy_us_per_call": busy / calls / 1e3,
            "span_us_per_call": span / calls / 1e3, "distinct_kernels": len(by_name),
            "top": [{"kernel": k, "per_call": n / calls, "us_per_call": t / calls / 1e3} for k, (n, t) in ranked]}
