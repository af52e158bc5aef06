"""The runtime config's kernel forms: chosen where a graph is built and read when it traces, never
from the environment; the default section gives the selections the package gave before the
section existed, bit for bit, and the non-default forms give what the environment switches they
replace gave."""
import os
import pathlib
import platform

import jax
import numpy as np
import pytest
from helpers.tiny import TINY_MODEL, perturbed_policy, random_clouds

from pam_jax import provenance
from pam_jax.config import DiffusionConfig, RuntimeConfig
from pam_jax.models import geometry, kernels, layers
from pam_jax.models.policy import sample_actions
from pam_jax.models.reward import init_reward_model
from pam_jax.normalize import NormStats
from pam_jax.select import SelectConfig, make_selector

DIFF = DiffusionConfig(num_train_timesteps=20, num_inference_steps=5, eta=1.0)
NORM = NormStats((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
# Selections of the tiny policies computed by the package before the runtime section existed,
# under the test suite's XLA flags ("legacy" and "default" codegen, tests/conftest.py), on an
# x86-64 CPU of each vector extension XLA compiles for differently (AVX-512 and AVX2: their
# kernels round differently, so each has its own figures): with no switch set ("default"), and
# with the environment switches that runtime.pad, runtime.fps and runtime.small_attention replace
# set to on, argmax and 0 ("forced").
SAVED = pathlib.Path(__file__).with_name("selections_before_runtime.npz")
FORMS = {"default": RuntimeConfig(), "forced": RuntimeConfig(pad="on", fps="argmax", small_attention=0)}


SAVED_FOR = ("avx512f", "avx2")     # the vector extensions with saved figures


@pytest.mark.skipif(platform.machine() != "x86_64" or provenance.vector_extension() not in SAVED_FOR,
                    reason="the saved figures are those of x86-64 CPUs with AVX2 or AVX-512")
@pytest.mark.parametrize("form", list(FORMS))
def test_selections_equal_those_before_the_runtime_section(form):
    saved = np.load(SAVED)
    prefix = f"{provenance.vector_extension()}/{os.environ['PAM_JAX_TESTS_CODEGEN']}/{form}/"
    rt = FORMS[form]
    g, ref = perturbed_policy(0)
    _, pol = perturbed_policy(1)
    pts = random_clouds()
    for mode in ("implicit", "explicit"):
        kw, score = {}, pol
        if mode == "explicit":
            kw["score_graphdef"], score = init_reward_model(TINY_MODEL, 0, ref)
        scfg = SelectConfig(mode=mode, num_candidates=4, num_inference_steps=5, eta=1.0, reward_samples=6, runtime=rt)
        got = make_selector(g, DIFF, NORM, scfg, **kw)(ref, score, pts, jax.random.key(3))
        for field in ("candidates", "scores", "index"):
            np.testing.assert_array_equal(getattr(got, field), saved[prefix + f"{mode}_{field}"], err_msg=f"{mode} {field}")
    sampled = sample_actions(g, ref, pts, np.zeros(3, np.float32), np.ones(3, np.float32), jax.random.key(4),
                             num_samples=3, diff=DIFF, action_points=2, runtime=rt)
    np.testing.assert_array_equal(sampled, saved[prefix + "sampled"])


def test_forms_come_from_the_builder_not_the_environment(monkeypatch):
    """The same function jitted with two runtime sections holds two programs (the choice is part
    of what was built); the environment variables that once chose the forms change nothing."""
    for var, value in (("PAM_JAX_FPS", "pallas"), ("PAM_JAX_KNN", "pallas"), ("PAM_JAX_PAD", "on"),
                       ("PAM_JAX_SMALL_ATTENTION", "0"), ("PAM_JAX_FUSED", "chain"), ("PAM_JAX_STACK_MODELS", "on")):
        monkeypatch.setenv(var, value)
    assert (geometry.default_fps_method(), geometry.default_knn_method(), layers.pad_multiples()) == ("rows", "top_k", (1, 1))
    cloud = jax.ShapeDtypeStruct((40, 3), np.float32)

    def group(p):
        return geometry.knn(p[geometry.farthest_point_sample(p, 8)], p, 4)

    plain = str(jax.make_jaxpr(kernels.traced(group, RuntimeConfig()))(cloud))
    pallas = str(jax.make_jaxpr(kernels.traced(group, RuntimeConfig(fps="pallas", knn="pallas")))(cloud))
    assert "pallas_call" not in plain and pallas.count("pallas_call") == 2
    assert kernels.active() == RuntimeConfig()          # the scope ends with the call
    with kernels.using(RuntimeConfig(pad="on")):
        assert layers.pad_multiples() == layers.PAD_MULTIPLES
        with kernels.using(None):                       # None: the enclosing forms
            assert kernels.active().pad == "on"
    assert layers.pad_multiples() == (1, 1)


def test_bad_runtime_fields_fail_in_one_line():
    for bad, message in ((RuntimeConfig(fps="fast"), "runtime.fps must be one of"),
                         (RuntimeConfig(small_attention=-1), "runtime.small_attention must be an integer >= 0"),
                         (RuntimeConfig(fused_rows=24), "runtime.fused_rows must be a power of two >= 16")):
        with pytest.raises(ValueError, match=message):
            make_selector(perturbed_policy(0)[0], DIFF, NORM, SelectConfig(runtime=bad))
    with pytest.raises(TypeError, match="expected a RuntimeConfig"):
        kernels.traced(lambda: None, {"fps": "rows"})
