"""`pam-jax bench serve`: the policy server under N concurrent loopback clients, against the
same selection graph called in process one request at a time (and one full batch at a time).

Every client sends its share of `requests` one after another (a robot waits for its action);
latencies are per request as the client sees them, compilation excluded (the server compiles
its batch sizes before it listens).
"""
from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np

from pam_jax.bench.compute import _reference_models, machine
from pam_jax.serving import PolicyClient
from pam_jax.serving.graph import ServedPolicy, served_policy, versions
from pam_jax.serving.server import PolicyServer, batch_sizes

REFERENCE = {"N": 8, "steps": 10, "M": 10}   # selection of the run-free benchmark (reference-size model)


def reference_served(num_points: int, batching: str = "exact") -> ServedPolicy:
    """Random reference-size SL and DPO networks, implicit selection with REFERENCE settings."""
    from pam_jax.config import DiffusionConfig, ModelConfig
    from pam_jax.normalize import NormStats
    from pam_jax.select import SelectConfig, make_selector

    model, diff = ModelConfig(), DiffusionConfig()
    graphdef, ref, pol = _reference_models(model)
    scfg = SelectConfig(mode="implicit", num_candidates=REFERENCE["N"], num_inference_steps=REFERENCE["steps"],
                        eta=1.0, reward_samples=REFERENCE["M"])
    norm = NormStats.identity()
    meta = {"task": "none (random reference-size networks)", "mode": "implicit", "num_points": num_points,
            "selection": dataclasses.asdict(scfg), "batching": batching, "versions": versions()}
    return served_policy(make_selector(graphdef, diff, norm, scfg), ref, pol, norm, num_points, meta, batching)


def _clouds(served: ServedPolicy, count: int) -> np.ndarray:
    c, s = np.asarray(served.norm.center, np.float32), np.asarray(served.norm.scale, np.float32)
    rng = np.random.default_rng(0)
    return (c + s * rng.uniform(-0.8, 0.8, (count, served.num_points, 3))).astype(np.float32)


def _stats(latencies_s: list[float], wall_s: float) -> dict:
    ms = np.asarray(latencies_s) * 1e3
    return {"requests": len(ms), "requests_per_s": len(ms) / wall_s, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def bench_serve(served: ServedPolicy, *, clients: int = 8, requests: int = 64, max_batch: int = 8,
                window_ms: float = 5.0) -> dict:
    if clients < 1 or requests < clients:
        raise ValueError(f"need 1 <= --clients <= --requests, got {clients} clients, {requests} requests")
    clouds = _clouds(served, requests)
    server = PolicyServer(served, port=0, sizes=batch_sizes(max_batch), window_ms=window_ms)
    t = time.perf_counter()
    thread = server.start_in_thread()   # compiles every batch size, the in-process one (1) included
    compile_s = time.perf_counter() - t
    try:
        # in process, one request at a time (batch 1, the same compiled graph)
        lat, t0 = [], time.perf_counter()
        for i in range(requests):
            t = time.perf_counter()
            served.select_batch(clouds[i:i + 1], [i])
            lat.append(time.perf_counter() - t)
        alone = _stats(lat, time.perf_counter() - t0)
        # in process, full batches of max_batch (what perfect batching without a network gives)
        lat, t0 = [], time.perf_counter()
        for i in range(0, requests - max_batch + 1, max_batch):
            t = time.perf_counter()
            served.select_batch(clouds[i:i + max_batch], list(range(i, i + max_batch)))
            lat += [time.perf_counter() - t] * max_batch
        batched = _stats(lat, time.perf_counter() - t0) if lat else None
        # the server, `clients` concurrent clients
        conns = [PolicyClient("127.0.0.1", server.port) for _ in range(clients)]
        lat, lock, start = [], threading.Lock(), threading.Barrier(clients + 1)

        def client(k):
            start.wait()
            for i in range(k, requests, clients):
                t = time.perf_counter()
                conns[k].select(clouds[i], seed=i)
                with lock:
                    lat.append(time.perf_counter() - t)

        workers = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for w in workers:
            w.start()
        before = server.batcher.batches
        start.wait()
        t0 = time.perf_counter()
        for w in workers:
            w.join()
        served_stats = _stats(lat, time.perf_counter() - t0)
        served_stats["mean_batch"] = requests / max(server.batcher.batches - before, 1)
        for c in conns:
            c.close()
    finally:
        server.stop()
        thread.join(30)
    return {"benchmark": "serve", "clients": clients, "max_batch": max_batch, "batch_window_ms": window_ms,
            "batch_sizes": list(server.sizes), "compile_s": compile_s, "metadata": served.metadata,
            "in_process": alone, "in_process_batched": batched, "server": served_stats, "machine": machine()}


def format_serve(r: dict) -> str:
    m, sel = r["metadata"], r["metadata"]["selection"]
    head = (f"policy server, {m['mode']} selection, N={sel['num_candidates']}, {sel['num_inference_steps']} DDIM "
            f"steps, M={sel['reward_samples']}, {m['num_points']} points, {m['batching']} batching; "
            f"{r['clients']} loopback clients, max batch {r['max_batch']}, window {r['batch_window_ms']:g} ms; "
            f"{r['machine']['device']} x1; batch sizes {r['batch_sizes']} compiled in {r['compile_s']:.1f} s")
    rows = [("in process, 1 at a time", r["in_process"]),
            (f"in process, batches of {r['max_batch']}", r["in_process_batched"]),
            (f"server, {r['clients']} clients (mean batch {r['server']['mean_batch']:.1f})", r["server"])]
    lines = [head, f"{'':44} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}"]
    lines += [f"{name:44} {x['requests']:8d} {x['requests_per_s']:8.1f} {x['p50_ms']:8.1f} {x['p99_ms']:8.1f}"
              for name, x in rows if x]
    return "\n".join(lines)
