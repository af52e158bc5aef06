"""Device-kernel summaries of a jax.profiler trace (benchmarks/kernel_trace.py)."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))


def test_trace_summary_counts_kernels_per_call():
    """kernel_trace.summarise on hand-made planes: only device stream lines count (the other lines repeat
    the same kernels), busy is the summed kernel time, span the first start to the last end."""
    from types import SimpleNamespace as NS

    from kernel_trace import summarise

    ev = lambda name, start, dur: NS(name=name, start_ns=start, duration_ns=dur)  # noqa: E731
    stream = NS(name="Stream #1(Compute)", events=[ev("gemm", 0, 2000), ev("softmax", 3000, 1000),
                                                   ev("gemm", 10000, 2000), ev("softmax", 13000, 1000)])
    ops = NS(name="XLA Ops", events=[ev("dot", 0, 2000)])
    host = NS(name="/host:CPU", lines=[NS(name="Stream #9", events=[ev("host", 0, 99999)])])
    s = summarise([NS(name="/device:GPU:0", lines=[stream, ops]), host], calls=2)
    assert (s["kernels_per_call"], s["busy_us_per_call"], s["span_us_per_call"]) == (2, 3.0, 7.0)
    assert s["top"][0] == {"kernel": "gemm", "per_call": 1.0, "us_per_call": 2.0}
    assert summarise([host], calls=3)["kernels_per_call"] == 0
