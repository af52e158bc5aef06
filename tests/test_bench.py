"""Benchmarks run end to end at a tiny size (no timing assertions: figures go to BUILD_NOTES)."""
import dataclasses

from _tiny import TINY_MODEL
from pam_jax.apps import bench

TINY = {k: v for k, v in dataclasses.asdict(TINY_MODEL).items()}


def test_sampler_bench_reports_fused_staged_and_flops():
    r = bench.bench_sampler(num_points=64, sweep=[{}], staged_at=[{}], budget_s=0.05, model_overrides=TINY)
    row = r["rows"][0]
    assert row["median_s"] > 0 and row["p90_s"] >= row["median_s"] and row["staged_median_s"] > 0
    assert row["speedup"] == row["staged_median_s"] / row["median_s"]
    assert row["flops"] > 0 and 0 < row["fraction_of_peak"]
    assert "speed-up" in bench.format_sampler(r)


def test_train_bench_reports_flops_and_peak():
    r = bench.bench_train(num_points=64, batch_size=4, replicas=2, steps=1, model_overrides=TINY)
    assert r["flops_per_step"] > 0 and r["matmul_peak_flops_per_s"] > 0 and r["samples_per_s"] > 0
    assert "of the measured matmul peak" in bench.format_train(r)
