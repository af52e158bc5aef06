"""benchmarks/bench.py: `pam-jax bench train|sampler` with the tooling kept out of the package
(device-kernel traces here), at a tiny size; no timing assertions."""
import dataclasses
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))

import bench as bench_script  # noqa: E402  (benchmarks/bench.py)
from helpers.tiny import TINY_MODEL  # noqa: E402

from pam_jax.bench import compute as bench  # noqa: E402

TINY = dataclasses.asdict(TINY_MODEL)


def test_train_bench_reports_flops_and_peak():
    r = bench.bench_train(num_points=64, batch_size=4, replicas=2, steps=1, model_overrides=TINY,
                          probes=[bench_script.trace_probe])
    assert r["flops_per_step"] > 0 and r["matmul_peak_flops_per_s"] > 0 and r["samples_per_s"] > 0
    assert "of the measured matmul peak" in bench.format_train(r)
    assert r["trace"]["kernels_per_call"] == 0 and "device kernels" in bench.format_train(r)


def test_sampler_bench_can_trace_its_rows():
    rows = [{"name": "tiny", "N": 2, "B": 1, "steps": 2, "M": 2, "staged": False}]
    r = bench.bench_sampler(num_points=64, rows=rows, budget_s=0.01, model_overrides=TINY,
                            probes=[bench_script.trace_probe])
    t = r["rows"][0]["trace"]
    assert t["kernels_per_call"] == 0 and t["top"] == []     # a CPU trace holds no device kernels
    assert "device kernels none traced" in bench.format_sampler(r)
