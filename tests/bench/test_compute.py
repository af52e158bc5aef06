"""Benchmarks run end to end at a tiny size (no timing assertions: figures go to BUILD_NOTES)."""
import dataclasses

from helpers.tiny import TINY_MODEL

from pam_jax.bench import compute as bench

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
