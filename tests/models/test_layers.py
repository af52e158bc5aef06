"""models/layers.py: rotary embeddings, attention, the linear layer, sinusoidal embeddings."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pam_jax.models import layers
from pam_jax.models.layers import apply_rotary, rotary_angles, rotary_columns, sinusoidal_embedding


def _inputs(b=2, n=5, npts=64, seed=0):
    r = np.random.default_rng(seed)
    pts = jnp.asarray(r.uniform(-1, 1, (b, npts, 3)), jnp.float32)
    x = jnp.asarray(r.normal(size=(b, n, 2, 3)), jnp.float32)
    t = jnp.asarray(r.integers(0, 20, (b, n)), jnp.int32)
    return pts, x, t


def test_rotary_scores_depend_only_on_relative_position():
    r = np.random.default_rng(0)
    q = jnp.asarray(r.normal(size=(1, 24)), jnp.float32)
    k = jnp.asarray(r.normal(size=(1, 24)), jnp.float32)
    pq, pk, shift = (jnp.asarray(r.normal(size=3), jnp.float32) for _ in range(3))

    def score(a, b):
        qa = apply_rotary(q, rotary_angles(a, 24, 8.0)[None])
        kb = apply_rotary(k, rotary_angles(b, 24, 8.0)[None])
        return float(jnp.sum(qa * kb))

    assert score(pq, pk) == pytest.approx(score(pq + shift, pk + shift), rel=1e-4, abs=1e-4)
    assert score(pq, pk) != pytest.approx(score(pq, pk + shift), rel=1e-3)
    # a rotation preserves the norm
    rotated = apply_rotary(q, rotary_angles(pq, 24, 8.0)[None])
    assert float(jnp.linalg.norm(rotated)) == pytest.approx(float(jnp.linalg.norm(q)), rel=1e-5)


def test_rotate_is_apply_rotary_as_arithmetic():
    """rotate (x * cos + x[partner] * signed sin) == apply_rotary for heads of 26 columns (24
    rotated, 2 passed through) zero-padded to 32: the same real columns, zeros in the padding,
    where rotary_columns gives cos 1 and sin 0."""
    d, pad = 26, 32
    xyz = jax.random.uniform(jax.random.key(0), (5, 3), minval=-2, maxval=2)
    q = jax.random.normal(jax.random.key(1), (5, 2, d))   # 5 tokens, 2 heads
    rot = rotary_columns(xyz, d, 8.0, pad)
    assert rot[0].shape == rot[1].shape == (5, 1, pad)
    got = layers.rotate(jnp.pad(q, ((0, 0), (0, 0), (0, pad - d))), rot, d)
    np.testing.assert_allclose(got[..., :d], apply_rotary(q, rotary_angles(xyz, d, 8.0)), rtol=1e-6, atol=1e-6)
    assert not np.asarray(got[..., d:]).any()
    np.testing.assert_array_equal(rot[0][..., 24:], 1.0)
    np.testing.assert_array_equal(rot[1][..., 24:], 0.0)


def test_few_inputs_is_the_linear_layer():
    lin = nnx.Linear(3, 7, rngs=nnx.Rngs(0))
    lin.bias[...] = jnp.arange(7.0)
    x = jax.random.normal(jax.random.key(2), (4, 2, 3))
    np.testing.assert_allclose(layers.few_inputs(x, lin.kernel[...], lin.bias[...]), lin(x), rtol=1e-6, atol=1e-6)


def test_rotary_needs_six_dims():
    with pytest.raises(ValueError, match="head_dim"):
        rotary_angles(jnp.zeros((2, 3)), 4, 8.0)


def test_sinusoidal_embedding_values():
    e = sinusoidal_embedding(jnp.array([0, 3]), 8)
    # t = 0: cos = 1, sin = 0
    np.testing.assert_allclose(e[0], [1, 1, 1, 1, 0, 0, 0, 0], atol=1e-7)
    freqs = np.exp(-np.log(10000.0) * np.arange(4) / 4)
    np.testing.assert_allclose(e[1], np.concatenate([np.cos(3 * freqs), np.sin(3 * freqs)]), rtol=1e-5)
