"""Count the kernel launches of an older commit's selector compiled for an H200 without one, to
check `python benchmarks/bench.py kernels` against a real GPU compile of the same code.

    PYTHONPATH=<CUDA plugin> python benchmarks/kernels_at_commit.py 5a7644b [STEPS]

Commit 5a7644b is the code whose 10/10 one graph the H200 compiled and traced on 2026-11-28
(docs/results/gpu_h200_2026-11-28/call2: hlo_after_10_10.txt.gz, 854 kernels per call). That
code has no `geometry.targeting`, so `jax.default_backend` is patched to say "gpu" while it
traces. Prints the count of the compile here and, for 5a7644b at 10 steps, of the stored H200
HLO. The H200's traces per call: 5a7644b 854 (10/10) and 5973 (100/100); e1c62a7 2040 and 8587
(call2/probe_after.json, probe_before.json).
"""
import gzip
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def main(commit: str, steps: int = 10) -> None:
    os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")   # before JAX starts: no CUDA libraries here
    old = tempfile.mkdtemp(prefix="pam_jax_")
    archive = subprocess.run(["git", "-C", REPO, "archive", commit, "pam_jax", "experiments", "data_builders"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
    sys.path.insert(0, old)
    import jax
    import numpy as np

    import pam_jax
    assert pam_jax.__file__.startswith(old), pam_jax.__file__
    try:
        from pam_jax.bench import compute as bench
    except ImportError:               # a checkout from before the benchmarks left pam_jax.apps
        from pam_jax.apps import bench
    from pam_jax.config import DiffusionConfig, ModelConfig
    from pam_jax.normalize import NormStats
    from pam_jax.select import SelectConfig, make_selector

    graphdef, ref, pol = bench._reference_models(ModelConfig())
    sel = make_selector(graphdef, DiffusionConfig(), NormStats.identity(),
                        SelectConfig(num_candidates=8, num_inference_steps=steps, eta=1.0, reward_samples=steps))
    args = (ref, pol, np.zeros((1, 3000, 3), np.float32), jax.random.key(0))
    sys.path.remove(old)
    for name in [m for m in sys.modules if m == "pam_jax" or m.startswith("pam_jax.")]:
        del sys.modules[name]          # the counting code is this checkout's
    sys.path.insert(0, REPO)
    sys.path.insert(0, HERE)
    from hlo_kernels import compile_for_gpu, count_kernels

    jax.default_backend = lambda: "gpu"   # the old code's trace-time switch
    here = count_kernels(compile_for_gpu(sel, *args))
    print(f"{commit} one graph {steps}/{steps}, compiled here for an H200: {here.total} launches, "
          f"{[x['launches_per_trip'] for x in here.loops]} per loop trip")
    if steps == 10 and "5a7644b".startswith(commit[:7]):
        path = os.path.join(REPO, "docs", "results", "gpu_h200_2026-11-28", "call2", "hlo_after_10_10.txt.gz")
        with gzip.open(path, "rt") as f:
            h200 = count_kernels(f.read())
        print(f"the H200's own compile of it: {h200.total} launches, "
              f"{[x['launches_per_trip'] for x in h200.loops]} per loop trip (its trace: 854 kernels per call)")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
