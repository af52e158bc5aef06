"""Benchmarks run end to end at a tiny size (no timing assertions: figures go to BUILD_NOTES)."""
import dataclasses

from _tiny import TINY_MODEL
from pam_jax.apps import bench

TINY = {k: v for k, v in dataclasses.asdict(TINY_MODEL).items()}


def test_sampler_bench_reports_fused_staged_and_flops():
    r = bench.bench_sampler(num_points=64, rows="sweep", sweep=[{}], staged_at=[{}], budget_s=0.05,
                            model_overrides=TINY)
    row = r["rows"][0]
    assert row["name"] == "base" and row["compile_s"] > 0
    assert row["median_s"] > 0 and row["p90_s"] >= row["median_s"] and row["staged_median_s"] > 0
    assert row["speedup"] == row["staged_median_s"] / row["median_s"]
    assert row["flops"] > 0 and 0 < row["fraction_of_peak"]
    assert row["one_graph_median_s"] > 0 and row["prepare_s"] > 0
    assert "speed-up" in bench.format_sampler(r) and "one graph" in bench.format_sampler(r)


def test_sampler_rows_name_the_papers_setting():
    paper = bench.sampler_rows("paper")
    assert [(r["name"], r["N"], r["B"], r["steps"], r["M"], r["staged"]) for r in paper] == [
        ("paper 100/100", 8, 1, 100, 100, True), ("paper 10/10", 8, 1, 10, 10, True)]
    every = bench.sampler_rows("all")
    assert every[:2] == paper and len(every) == 2 + len(bench.SAMPLER_SWEEP)
    assert [r["staged"] for r in bench.sampler_rows("sweep")] == [d in bench.STAGED_AT for d in bench.SAMPLER_SWEEP]
    import pytest

    with pytest.raises(ValueError, match="sampler rows"):
        bench.sampler_rows("fast")


def test_torch_reference_decides_when_torch_is_there():
    import numpy as np
    import pytest

    pytest.importorskip("torch")
    from pam_jax.apps.torch_reference import make_reference

    pts = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 40, 3)).astype(np.float32)
    a = make_reference()(pts, num_candidates=3, steps=2, samples=2, chunk=1)
    assert a.shape == (2, 2, 3) and np.isfinite(a).all() and np.abs(a).max() <= 1.0


def test_train_bench_reports_flops_and_peak():
    r = bench.bench_train(num_points=64, batch_size=4, replicas=2, steps=1, model_overrides=TINY, trace=True)
    assert r["flops_per_step"] > 0 and r["matmul_peak_flops_per_s"] > 0 and r["samples_per_s"] > 0
    assert "of the measured matmul peak" in bench.format_train(r)
    assert r["trace"]["kernels_per_call"] == 0 and "device kernels" in bench.format_train(r)


def test_train_bench_takes_the_bf16_compute_option():
    r = bench.bench_train(num_points=64, batch_size=2, replicas=2, steps=1, model_overrides=TINY,
                          compute_dtype="bfloat16")
    assert r["compute_dtype"] == "bfloat16" and r["step_s_median"] > 0
    assert "bfloat16" in bench.format_train(r)


def test_geometry_bench_times_the_exact_forms_and_they_agree():
    from pam_jax.models.geometry import FPS_METHODS, KNN_METHODS

    r = bench.bench_fps(num_points=100, num_samples=16, knn=4, batch_sizes=(2,), budget_s=0.02)
    # CPU: no Pallas timing
    assert [(x["op"], x["method"]) for x in r["rows"]] == (
        [("fps", m) for m in FPS_METHODS if m != "pallas"] + [("knn", m) for m in KNN_METHODS if m != "pallas"])
    assert all(x["agree"] is True for x in r["rows"] if "agree" in x) and sum("agree" in x for x in r["rows"]) == 2
    assert all(x["median_s"] > 0 for x in r["rows"])
    assert "farthest-point sampling" in bench.format_fps(r)


def test_torch_reference_train_step_updates_the_network():
    import numpy as np
    import pytest

    torch = pytest.importorskip("torch")
    from pam_jax.apps.torch_reference import make_train_step

    step, to_device = make_train_step(replicas=2, device="cpu")
    rng = np.random.default_rng(0)
    batch = to_device(rng.uniform(-0.5, 0.5, (2, 40, 3)).astype(np.float32),
                      rng.uniform(-0.5, 0.5, (2, 2, 3)).astype(np.float32))
    losses = [step(*batch) for _ in range(3)]
    assert all(np.isfinite(losses)) and isinstance(losses[0], float)
    assert torch.get_default_device().type == "cpu"


def test_trace_summary_counts_kernels_per_call():
    """apps.trace on hand-made planes: only device stream lines count (the other lines repeat
    the same kernels), busy is the summed kernel time, span the first start to the last end."""
    from types import SimpleNamespace as NS

    from pam_jax.apps.trace import summarise

    ev = lambda name, start, dur: NS(name=name, start_ns=start, duration_ns=dur)  # noqa: E731
    stream = NS(name="Stream #1(Compute)", events=[ev("gemm", 0, 2000), ev("softmax", 3000, 1000),
                                                   ev("gemm", 10000, 2000), ev("softmax", 13000, 1000)])
    ops = NS(name="XLA Ops", events=[ev("dot", 0, 2000)])
    host = NS(name="/host:CPU", lines=[NS(name="Stream #9", events=[ev("host", 0, 99999)])])
    s = summarise([NS(name="/device:GPU:0", lines=[stream, ops]), host], calls=2)
    assert (s["kernels_per_call"], s["busy_us_per_call"], s["span_us_per_call"]) == (2, 3.0, 7.0)
    assert s["top"][0] == {"kernel": "gemm", "per_call": 1.0, "us_per_call": 2.0}
    assert summarise([host], calls=3)["kernels_per_call"] == 0


def test_sampler_bench_can_trace_its_rows():
    rows = [{"name": "tiny", "N": 2, "B": 1, "steps": 2, "M": 2, "staged": False}]
    r = bench.bench_sampler(num_points=64, rows=rows, budget_s=0.01, model_overrides=TINY, trace=True)
    t = r["rows"][0]["trace"]
    assert t["kernels_per_call"] == 0 and t["top"] == []     # a CPU trace holds no device kernels
    assert "device kernels none traced" in bench.format_sampler(r)
