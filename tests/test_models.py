"""Networks: shapes, candidate independence, encoder reuse, rotary relativity, geometry."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from _tiny import TINY_MODEL
from pam_jax.config import RuntimeConfig
from pam_jax.models import geometry, kernels
from pam_jax.models import layers
from pam_jax.models.layers import apply_rotary, attention, rotary_angles, rotary_columns, sinusoidal_embedding
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


def test_too_few_points_is_a_clear_error(model):
    pts, x, t = _inputs(npts=8)
    with pytest.raises(ValueError, match="at least"):
        model(pts, x, t)
