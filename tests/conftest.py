"""Test-wide settings: 8 forced CPU devices and cheaper code generation for XLA's CPU programs,
both set before jax is imported anywhere (and inherited by the tests' subprocesses), and a
compilation cache shared by the whole run.

The suite spends most of its CPU time compiling tiny programs (a tiny train step is about a
thousand fusions). Two XLA flags make them compile faster while running no slower at these sizes
(BUILD_NOTES, "Test suite"): LLVM's lowest optimisation level (`--xla_backend_optimization_level=0`:
5.5 -> 3.4 s for the tiny train step) and XLA's legacy CPU emitters instead of its newer fusion
emitters (`--xla_cpu_use_fusion_emitters=false`: about half the CPU time of the compile again;
the suite 17.5 -> 11 minutes on 2 cores). Results can differ from the defaults' in the last bits,
so no test may compare against figures computed with other flags: the ones here compare results
computed in the same process or the same environment.

Under the legacy emitters, two different programs that compute the same thing (a batch of one
inside `lax.map` and one observation alone, a decision from prepared parameters and the one
graph) no longer agree bit for bit, as they do under the default emitters users run. The tests
of that guarantee are marked `bit_identity`: they are skipped here and run in a second pass with
`PAM_JAX_TESTS_CODEGEN=default` (XLA's default emitters), as `make test` does.

Many tests train or select with the same tiny models, so the same programs compile again and
again; a persistent cache in a temporary folder serves the repeats. One folder serves the whole
run: the pytest workers and every subprocess of the tests (the CLI, multi-process runs) find it
in the environment (made by the first process that loads this file, pytest's controller under
xdist, and removed when that process exits, so a run never reads another run's entries). A size
limit is set only because it turns on jax's file lock around every read and write of the cache:
without it, one process could read an entry another is still writing. In-process, the CLI's
"off" leaves the tests' cache on: switching jax's cache folder to None stops its use for the
rest of the process, so every later test compiled its programs afresh.
"""
import atexit
import os
import shutil
import tempfile

import pytest

_CODEGEN = os.environ.setdefault("PAM_JAX_TESTS_CODEGEN", "legacy")
if _CODEGEN not in ("legacy", "default"):
    raise SystemExit(f"PAM_JAX_TESTS_CODEGEN must be 'legacy' or 'default', got {_CODEGEN!r}")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
                      + (" --xla_cpu_use_fusion_emitters=false" if _CODEGEN == "legacy" else ""))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
_SHARED = "PAM_JAX_TESTS_XLA_CACHE"
if os.environ.get(_SHARED):      # a pytest worker, or a subprocess of a test: the run's folder
    _CACHE = os.environ[_SHARED]
else:
    _CACHE = os.environ[_SHARED] = tempfile.mkdtemp(prefix="pam_jax_tests_xla_")
    atexit.register(shutil.rmtree, _CACHE, True)
# set, not defaulted: a cache folder from the caller's environment would let the tests'
# subprocesses read another run's entries
os.environ["PAM_JAX_COMPILE_CACHE"] = _CACHE                # the CLI in subprocesses
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE            # other jax subprocesses
os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(64 << 30)  # -> jax's file lock

import jax  # noqa: E402  (after XLA_FLAGS)

# jax decides once per process, at the first compilation, whether the cache is used: a later
# in-process `pam-jax --compile-cache off` does not turn it off again
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


from pam_jax.train import compile_cache as _compile_cache  # noqa: E402

_enable = _compile_cache.enable


def _enable_keeping_the_tests_cache(choice=None):
    path = _compile_cache.resolve(choice)
    if path is None or str(path) == _CACHE:     # off, or the tests' own: keep the tests' settings
        return path
    return _enable(choice)


_compile_cache.enable = _enable_keeping_the_tests_cache


def pytest_collection_modifyitems(config, items):
    """The tests marked slow (end to end, a minute or more each) go first, so that pytest -n 2
    does not end with one worker running a long test while the other idles. Under the legacy
    emitters, the tests marked bit_identity are skipped: `make test` runs them in a second pass."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    if _CODEGEN == "legacy":
        skip = pytest.mark.skip(reason="compares two programs bit for bit, which holds under XLA's default CPU "
                                       "emitters only: run with PAM_JAX_TESTS_CODEGEN=default (make test does)")
        for item in items:
            if item.get_closest_marker("bit_identity"):
                item.add_marker(skip)
