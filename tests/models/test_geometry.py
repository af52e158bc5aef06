"""models/geometry.py: farthest-point sampling and kNN against brute force."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pam_jax.config import RuntimeConfig
from pam_jax.models import geometry, kernels


@pytest.mark.parametrize("method", geometry.FPS_METHODS)
def test_fps_picks_the_ends_of_a_line_first(method):
    pts = jnp.asarray(np.stack([np.linspace(0.0, 1.0, 11), np.zeros(11), np.zeros(11)], 1), jnp.float32)
    idx = np.asarray(geometry.farthest_point_sample(pts, 3, method))
    assert idx.tolist() == [0, 10, 5]


@pytest.mark.parametrize("method", geometry.FPS_METHODS)
def test_fps_matches_brute_force(method):
    r = np.random.default_rng(3)
    pts = r.normal(size=(50, 3)).astype(np.float32)
    idx = np.asarray(geometry.farthest_point_sample(jnp.asarray(pts), 10, method))
    chosen = [0]
    for _ in range(9):
        d = np.min(np.linalg.norm(pts[:, None] - pts[chosen][None], axis=-1), axis=1)
        chosen.append(int(np.argmax(d)))
    assert idx.tolist() == chosen


def test_fps_forms_agree_under_vmap_with_ties_and_the_runtime_choice():
    """The Pallas kernel batched by vmap (a grid axis), on clouds with duplicate points (ties go
    to the lowest index) and a size that is not a power of two, against the scan forms;
    runtime.fps picks the default form and a wrong value is one line."""
    r = np.random.default_rng(5)
    pts = r.uniform(-1, 1, size=(3, 37, 3)).astype(np.float32)
    pts[:, 20:25] = pts[:, 3:4]                                    # duplicates
    got = {m: np.asarray(jax.vmap(lambda p, m=m: geometry.farthest_point_sample(p, 12, m))(jnp.asarray(pts)))
           for m in geometry.FPS_METHODS}
    for m in geometry.FPS_METHODS:
        np.testing.assert_array_equal(got[m], got["argmax"])
    with kernels.using(RuntimeConfig(fps="pallas")):
        assert geometry.default_fps_method() == "pallas"
    with pytest.raises(ValueError, match=r"runtime.fps must be one of 'auto', 'rows', 'argmax', 'pallas', got 'fast'"):
        with kernels.using(RuntimeConfig(fps="fast")):
            pass


def test_knn_matches_brute_force():
    r = np.random.default_rng(4)
    pts = r.normal(size=(40, 3)).astype(np.float32)
    q = r.normal(size=(5, 3)).astype(np.float32)
    idx = np.asarray(geometry.knn(jnp.asarray(q), jnp.asarray(pts), 4))
    want = np.argsort(np.linalg.norm(q[:, None] - pts[None], axis=-1), axis=1)[:, :4]
    np.testing.assert_array_equal(np.sort(idx, 1), np.sort(want, 1))
