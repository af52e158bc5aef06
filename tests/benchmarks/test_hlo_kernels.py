"""Kernel launches counted in compiled HLO text (benchmarks/hlo_kernels.py), against hand-counted modules
and against the kernels an H200 trace recorded for the same module."""
import gzip
import importlib.util
import json
import os
import pathlib
import sys

import pytest

from pam_jax.models import geometry, layers

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
import bench as bench_script  # noqa: E402  (benchmarks/bench.py)
import hlo_kernels  # noqa: E402
from hlo_kernels import count_kernels  # noqa: E402

# A hand-written scheduled module: the entry runs 2 fusions and a cuBLAS call, a loop of 5 trips
# whose body runs 4 launches (a fusion, a Triton call, an unfused copy, the counter's add), a conditional whose
# larger branch runs 2, and a called computation that runs 1; the rest launches nothing.
MODULE = """HloModule m, is_scheduled=true

%fused_add (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  ROOT %a = f32[4]{0} add(%p, %p)
}

%body (t: (s32[], f32[4])) -> (s32[], f32[4]) {
  %t = (s32[], f32[4]{0}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  %x = f32[4]{0} get-tuple-element(%t), index=1
  %f = f32[4]{0} fusion(%x), kind=kLoop, calls=%fused_add
  %k = f32[4]{0} custom-call(%f), custom_call_target="__gpu$xla.gpu.triton"
  %c = f32[4]{0} copy(%k)
  %one = s32[] constant(1)
  %j = s32[] add(%i, %one)
  ROOT %r = (s32[], f32[4]{0}) tuple(%j, %c)
}

%cond (t: (s32[], f32[4])) -> pred[] {
  %t = (s32[], f32[4]{0}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  %n = s32[] constant(5)
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

%small (x: f32[4]) -> f32[4] {
  %x = f32[4]{0} parameter(0)
  ROOT %f = f32[4]{0} fusion(%x), kind=kLoop, calls=%fused_add
}

%big (x: f32[4]) -> f32[4] {
  %x = f32[4]{0} parameter(0)
  %f = f32[4]{0} fusion(%x), kind=kLoop, calls=%fused_add
  ROOT %g = f32[4]{0} fusion(%f), kind=kLoop, calls=%fused_add
}

ENTRY %main (x: f32[4], b: s32[]) -> f32[4] {
  %x = f32[4]{0} parameter(0)
  %b = s32[] parameter(1)
  %f0 = f32[4]{0} fusion(%x), kind=kLoop, calls=%fused_add
  %g = f32[4]{0} custom-call(%f0), custom_call_target="__cublas$gemm"
  %zero = s32[] constant(0)
  %t = (s32[], f32[4]{0}) tuple(%zero, %g)
  %w = (s32[], f32[4]{0}) while(%t), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"5"}}
  %y = f32[4]{0} get-tuple-element(%w), index=1
  %z = f32[4]{0} conditional(%b, %y, %y), branch_computations={%small, %big}
  %s = f32[4]{0} call(%z), to_apply=%small
  ROOT %f1 = f32[4]{0} fusion(%s), kind=kLoop, calls=%fused_add
}
"""


def test_hand_counted_module():
    k = count_kernels(MODULE)
    # entry: 2 fusions + 1 cuBLAS; loop 5 x 4; conditional max(1, 2); call 1
    assert k.total == 3 + 20 + 2 + 1
    assert k.loops == [{"body": "body", "trip_count": 5, "launches_per_trip": 4, "depth": 0}] and k.in_loops == 20
    assert k.by_op == {"fusion": 2 + 5 + 2 + 1, "custom-call": 1 + 5, "copy": 5, "add": 5}   # per call, by op
    assert k.unknown_trip_counts == 0


def test_a_loop_without_a_static_trip_count_counts_once_with_its_condition():
    k = count_kernels(MODULE.replace(', backend_config={"known_trip_count":{"n":"5"}}', ""))
    assert k.unknown_trip_counts == 1
    assert k.total == 3 + (4 + 1) + 2 + 1     # one trip: the body, and the compare of the condition


def test_text_without_an_entry_is_refused():
    with pytest.raises(ValueError, match="no ENTRY computation"):
        count_kernels("HloModule m\n")


def test_count_matches_the_kernels_an_h200_traced():
    """The optimised HLO of the 10/10 selector compiled on an H200, and the kernels a profiler
    trace of the same compiled call recorded per call (docs/results/gpu_h200_2026-11-28/call2)."""
    root = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "results", "gpu_h200_2026-11-28", "call2")
    with gzip.open(os.path.join(root, "hlo_after_10_10.txt.gz"), "rt") as f:
        k = count_kernels(f.read())
    with open(os.path.join(root, "probe_after.json")) as f:
        row = next(r for r in json.load(f)["sampler"] if r["variant"] == "after" and r["steps"] == 10)
    traced = row["profile"]["kernels_per_call"]
    assert traced == 854 and abs(k.total - traced) <= 2, (k.total, traced)
    assert [(x["trip_count"], x["launches_per_trip"]) for x in k.loops] == [(10, 57)]   # 57 fusions per DDIM step


def test_targeting_makes_the_accelerator_choices_on_cpu(monkeypatch):
    here = (geometry.default_fps_method(), geometry.default_knn_method(), layers.pad_multiples())
    assert here == ("rows", "top_k", (1, 1))
    with geometry.targeting("gpu"):
        assert geometry.target_backend() == "gpu"
        assert (geometry.default_fps_method(), geometry.default_knn_method(), layers.pad_multiples()) == (
            "pallas", "pallas", layers.PAD_MULTIPLES)
        assert "compiler_params" in geometry._pallas_backend(4)     # Triton, not interpreted
        with geometry.portable():                                  # exported graphs stay plain
            assert (geometry.default_fps_method(), geometry.default_knn_method()) == ("rows", "top_k")
    assert (geometry.default_fps_method(), geometry.default_knn_method(), layers.pad_multiples()) == here


def test_an_unknown_target_is_refused_in_one_line():
    with pytest.raises(ValueError, match="GPU target 'tpu9'.*h200"):
        hlo_kernels.gpu_target("tpu9")


def _cuda_plugin_here() -> bool:
    return importlib.util.find_spec("jax_plugins") is not None and \
        importlib.util.find_spec("jax_plugins.xla_cuda13") is not None


@pytest.mark.skipif(_cuda_plugin_here(), reason="the CUDA plugin is here")
def test_bench_kernels_without_the_cuda_plugin_says_how_to_install_it(capsys):
    assert bench_script.main(["kernels", "--forms", "plain"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "jax-cuda13-plugin" in err[0] and err[0].startswith("benchmarks/bench.py: error:")


def test_bench_kernels_refuses_an_unknown_form():
    with pytest.raises(ValueError, match="unknown form"):
        hlo_kernels.bench_kernels(forms=("plain", "warp-speed"))


def test_bench_kernels_keeps_the_compilation_cache_off(monkeypatch):
    """A program compiled for a GPU this machine lacks cannot be loaded back: `bench kernels`
    turns the persistent cache off before anything compiles (jax fixes whether a process uses the
    cache at its first compile), whatever --compile-cache says; other commands keep the flag."""
    from pam_jax.bench import compute
    from pam_jax.train import compile_cache

    chosen = []
    monkeypatch.setattr(compile_cache, "enable", chosen.append)

    def no_plugin(spec="h200"):
        raise ImportError("no plugin here")
    monkeypatch.setattr(hlo_kernels, "gpu_target", no_plugin)
    monkeypatch.setattr(compute, "bench_sampler", lambda **kw: {"rows": []})
    monkeypatch.setattr(compute, "print_result", lambda *a: None)
    assert bench_script.main(["--compile-cache", "/tmp/somewhere", "kernels", "--forms", "plain"]) == 2
    assert chosen == ["off"]
    assert bench_script.main(["--compile-cache", "/tmp/somewhere", "kernels", "--forms", "warp"]) == 2
    assert bench_script.main(["--compile-cache", "/tmp/somewhere", "sampler"]) == 0
    assert chosen == ["off", "off", "/tmp/somewhere"]
