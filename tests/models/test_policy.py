"""The diffusion policy network: shapes, candidate independence, encoder reuse, the denoiser layer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers.tiny import TINY_MODEL

from pam_jax.config import RuntimeConfig
from pam_jax.models import kernels, layers
from pam_jax.models.layers import apply_rotary, attention, rotary_angles, rotary_columns
from pam_jax.models.policy import DiffusionPolicy, init_policy


@pytest.fixture(scope="module")
def model():
    m = DiffusionPolicy(TINY_MODEL, rngs=nnx.Rngs(0))
    # the output layer and AdaLN gates start at zero (the network starts as eps=0);
    # perturb every parameter so that the tests below see a non-trivial function
    graphdef, params = nnx.split(m, nnx.Param)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    return nnx.merge(graphdef, jax.tree.unflatten(tree, leaves))


def _inputs(b=2, n=5, npts=64, seed=0):
    r = np.random.default_rng(seed)
    pts = jnp.asarray(r.uniform(-1, 1, (b, npts, 3)), jnp.float32)
    x = jnp.asarray(r.normal(size=(b, n, 2, 3)), jnp.float32)
    t = jnp.asarray(r.integers(0, 20, (b, n)), jnp.int32)
    return pts, x, t


def test_output_shape_and_dtype(model):
    pts, x, t = _inputs()
    eps = model(pts, x, t)
    assert eps.shape == (2, 5, 2, 3) and eps.dtype == jnp.float32
    assert np.isfinite(np.asarray(eps)).all()


def test_fresh_policy_predicts_zero_noise():
    g, p = init_policy(TINY_MODEL, 0)
    pts, x, t = _inputs()
    np.testing.assert_allclose(nnx.merge(g, p)(pts, x, t), 0.0, atol=1e-7)


def test_candidates_never_see_each_other(model):
    pts, x, t = _inputs()
    base = model(pts, x, t)
    x2 = x.at[:, 3].set(x[:, 3] + 5.0)   # move candidate 3 only
    t2 = t.at[:, 3].set(0)
    out = model(pts, x2, t2)
    keep = np.array([0, 1, 2, 4])
    np.testing.assert_allclose(out[:, keep], base[:, keep], atol=1e-5)
    assert not np.allclose(out[:, 3], base[:, 3])


def test_batched_candidates_equal_one_at_a_time(model):
    """One pass over N candidates with one encoding == N separate passes."""
    pts, x, t = _inputs(n=4)
    ctx = model.encode(pts)
    together = model.denoise(x, t, ctx)
    for j in range(4):
        alone = model(pts, x[:, j:j + 1], t[:, j:j + 1])
        np.testing.assert_allclose(together[:, j:j + 1], alone, atol=1e-5)


def test_observations_are_independent(model):
    pts, x, t = _inputs(b=3)
    full = model(pts, x, t)
    one = model(pts[1:2], x[1:2], t[1:2])
    np.testing.assert_allclose(full[1:2], one, atol=1e-5)


def test_timestep_conditions_the_output(model):
    pts, x, t = _inputs()
    assert not np.allclose(model(pts, x, t), model(pts, x, t + 7))


@pytest.mark.parametrize("pad", ["off", "on"])
def test_denoiser_layer_is_the_textbook_layer(model, pad, monkeypatch):
    """A denoiser layer from its prepared weights (rotary as elementwise arithmetic on the
    projections and their partner columns; heads padded as on a GPU with "on") equals the layer
    written out from its modules: AdaLN, three head projections, apply_rotary on the queries and
    the self-attention's keys, softmax attention to the context and among a candidate's points,
    gated residuals. With "on" the hidden state is zero-padded too, and its padding stays zero."""
    monkeypatch.setattr(kernels, "_ACTIVE", [RuntimeConfig(pad=pad)])   # traced as inside kernels.using
    den = model.denoiser
    pts, x, t = _inputs()
    h = jax.random.normal(jax.random.key(3), x.shape[:-1] + (TINY_MODEL.width,))
    ctx = model.encode(pts)
    layer, kv, w = den.layers[0], ctx.kv[0], ctx.weights.layers[0]
    dp, wide = w.cross_out[0].shape[0] // den.heads, w.cross_q[0].shape[0]
    assert wide == (64 if pad == "on" else TINY_MODEL.width)
    cond = den.conditioning(t)
    mods = den._split(layers.pad_blocks(cond, TINY_MODEL.width, wide))[0][0]
    got = layer(layers.pad_blocks(h, TINY_MODEL.width, wide),
                rotary_columns(x, TINY_MODEL.width // den.heads, den.max_freq, dp), mods, kv, w)
    np.testing.assert_array_equal(got[..., TINY_MODEL.width:], 0.0)
    got = got[..., :TINY_MODEL.width]
    cross, self_, ffn = den._split(cond)[0][0]

    b, n, a, d = h.shape
    ang = rotary_angles(x, d // den.heads, den.max_freq)
    keys, values = (jnp.moveaxis(z, -1, 1)[..., : d // den.heads] for z in kv)   # (B, S, H, d), unpadded
    y, gate = layer.cross_ln.modulate(h, cross)
    q = apply_rotary(layer.cross_q(y), ang).reshape(b, n * a, den.heads, -1)
    want = h + gate * layer.cross_out(attention(q, keys, values).reshape(b, n, a, d))
    y, gate = layer.self_ln.modulate(want, self_)
    q, k, v = apply_rotary(layer.self_q(y), ang), apply_rotary(layer.self_k(y), ang), layer.self_v(y)
    want = want + gate * layer.self_out(attention(q, k, v).reshape(b, n, a, d))
    y, gate = layer.ffn_ln.modulate(want, ffn)
    want = want + gate * layer.ffn(y)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_too_few_points_is_a_clear_error(model):
    pts, x, t = _inputs(npts=8)
    with pytest.raises(ValueError, match="at least"):
        model(pts, x, t)
