"""Reading throughput of the input pipeline (samples/s), for ``pam-jax bench data``.

Measures ``DeformPAMData.batch`` end to end: ArrayRecord read + decode, preprocessing, subsampling
to ``num_points``, augmentation, batching, with grain's threaded prefetch. Without a dataset it
writes and builds a synthetic one (fixture layout) in a temporary folder first.
"""
from __future__ import annotations

import logging
import os
import pathlib
import tempfile
import time

log = logging.getLogger("pam_jax.data")


def run(*, data_dir=None, task: str = "rope", kind: str = "supervised", batch_size: int = 32,
        num_points: int = 3000, num_batches: int = 30, warmup: int = 3,
        num_threads: int | None = None, source_points: int = 6000, num_samples: int = 64,
        seed: int = 0) -> dict:
    """-> {"samples_per_s", "cold_samples_per_s", "batches_per_s", "ms_per_batch", ...}.

    ``samples_per_s``: steady state (the preprocessed clouds cached, i.e. from the second
    epoch on); ``cold_samples_per_s``: without the cache (first epoch: decode + preprocess).
    The other timings are for the steady state.

    ``data_dir``: a TFDS data dir holding ``deformpam/<task>_<kind>`` (or a dataset folder);
    None builds a synthetic one with ``num_samples`` clouds of ~``source_points`` points."""
    from pam_jax.data import pipeline, sources
    from pam_jax.data.build import build as build_dataset

    with tempfile.TemporaryDirectory(prefix="pam_jax_bench_") as tmp:
        if data_dir is None:
            from pam_jax.data import fixtures

            src = pathlib.Path(tmp) / "src"
            per_ep = 4
            fixtures.write_fixture(src, task=task, kind=kind, num_episodes=max(1, num_samples // per_ep),
                                   samples_per_episode=per_ep,
                                   num_points=(int(source_points * 0.9), int(source_points * 1.1)),
                                   num_multiple=10, malformed=(), images=False, seed=seed)
            build_dataset(src, task=task, kind=kind, data_dir=pathlib.Path(tmp) / "tfds",
                          progress=False)
            ds_dir = sources.dataset_dir(pathlib.Path(tmp) / "tfds", task, kind)
        else:
            try:
                ds_dir = sources.dataset_dir(data_dir, task, kind)
            except FileNotFoundError:
                ds_dir = sources.resolve_dataset_dir(data_dir)

        def measure(cache_bytes: int) -> tuple[float, tuple, int]:
            data = pipeline.DeformPAMData(ds_dir, batch_size=batch_size, seed=seed,
                                          num_points=num_points, augment=True,
                                          num_threads=num_threads, cache_bytes=cache_bytes)
            if cache_bytes:   # steady state: every record the timed steps use is cached
                for p in range((warmup + num_batches) * data.global_batch_size):
                    data._prepared(data.record_index(p))
            for s in range(warmup):
                data.batch(s)
            t0 = time.perf_counter()
            for s in range(warmup, warmup + num_batches):
                b = data.batch(s)
            dt = time.perf_counter() - t0
            data.close()
            return dt, tuple(b["points"].shape), data.num_threads

        dt, shape, threads = measure(2 << 30)
        dt_cold, _, _ = measure(0)
    return {
        "samples_per_s": num_batches * batch_size / dt,
        "cold_samples_per_s": num_batches * batch_size / dt_cold,
        "batches_per_s": num_batches / dt,
        "ms_per_batch": 1000 * dt / num_batches,
        "batch_size": batch_size,
        "num_points": num_points,
        "points_shape": shape,
        "augment": True,
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "dataset": str(ds_dir) if data_dir is not None else f"synthetic {task}_{kind} (~{source_points} points/cloud)",
    }
