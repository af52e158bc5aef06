"""The accelerator paths of models/ (geometry, layers), checked on CPU: the Pallas kNN gives lax.top_k's indices
(interpreted here), both Pallas kernels lower to Triton for CUDA (no GPU needed to lower), and the
denoiser's padded, fused attention layout and the elementwise small attention compute the same
function as the plain layers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers.tiny import perturbed_policy

from pam_jax.config import RuntimeConfig
from pam_jax.models import geometry, kernels, layers


def _cloud(n, b=2, seed=0):
    pts = np.random.default_rng(seed).uniform(-0.5, 0.5, (b, n, 3)).astype(np.float32)
    pts[0, 3] = pts[0, 9]          # an exact duplicate: two points at the same distance from any query
    return jnp.asarray(pts)


@pytest.mark.parametrize("n,q,k", [(300, 32, 16), (37, 10, 5), (100, 7, 16), (16, 3, 16)])
def test_pallas_knn_equals_top_k(n, q, k):
    pts = _cloud(n)
    queries = pts[:, :q] + 0.01
    want = jax.vmap(lambda a, p: geometry.knn(a, p, k, "top_k"))(queries, pts)
    got = jax.jit(jax.vmap(lambda a, p: geometry.knn(a, p, k, "pallas")))(queries, pts)
    np.testing.assert_array_equal(got, want)
    # nearest first: the distances along each row never decrease
    d = np.linalg.norm(np.asarray(pts)[:, None, :, :] - np.asarray(queries)[:, :, None, :], axis=-1)
    dk = np.take_along_axis(d, np.asarray(got), axis=-1)
    assert (np.diff(dk, axis=-1) >= 0).all()


def test_knn_breaks_ties_at_the_lowest_index():
    """On a 4x4x4 grid, the query at a corner has 3 neighbours at distance 1: indices ascending."""
    g = jnp.asarray(np.stack(np.meshgrid(*[np.arange(4.0)] * 3, indexing="ij"), -1).reshape(-1, 3), jnp.float32)
    for method in geometry.KNN_METHODS:
        idx = np.asarray(geometry.knn(g[:1], g, 4, method))[0]
        assert idx.tolist() == [0, 1, 4, 16]      # itself, then +z, +y, +x at distance 1


def test_knn_rejects_bad_requests(monkeypatch):
    pts = _cloud(10)[0]
    with pytest.raises(ValueError, match="neighbours among 10 points"):
        geometry.knn(pts[:2], pts, 11)
    with pytest.raises(ValueError, match="unknown method"):
        geometry.knn(pts[:2], pts, 2, "approx")
    with kernels.using(RuntimeConfig(knn="pallas")):
        assert geometry.default_knn_method() == "pallas"
    with pytest.raises(ValueError, match="runtime.knn must be one of"):
        with kernels.using(RuntimeConfig(knn="faiss")):
            pass
    assert geometry.default_knn_method() == "top_k"     # the CPU default


def test_pallas_kernels_lower_to_triton_for_cuda(monkeypatch):
    """Lowered for CUDA on this CPU machine (jax.export needs no GPU): each kernel becomes a
    Triton custom call. A bare pallas_call would pick Mosaic GPU there, which cannot vmap them."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    unsafe = [jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
    clouds = jax.ShapeDtypeStruct((3, 500, 3), jnp.float32)
    for f in (lambda p: geometry.farthest_point_sample(p, 64, "pallas"),
              lambda p: geometry.knn(p[:40], p, 16, "pallas")):
        text = jax.export.export(jax.jit(jax.vmap(f)), platforms=["cuda"], disabled_checks=unsafe)(clouds).mlir_module()
        assert "xla.gpu.triton" in text and "mosaic" not in text.lower()


def test_portable_graphs_hold_no_pallas_kernel(monkeypatch):
    """`pam-jax export` serialises under geometry.portable(): on a GPU host (faked here) the
    defaults would be the Pallas kernels, which have no CPU lowering and no serialisation
    guarantee; within it the plain forms are traced, even over runtime.fps="pallas"."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(kernels, "_ACTIVE", [RuntimeConfig(fps="pallas")])   # as inside kernels.using
    assert (geometry.default_fps_method(), geometry.default_knn_method()) == ("pallas", "pallas")
    def graph():   # a new function each time: jax caches traces per function, and the switch acts when tracing
        return jax.jit(lambda p: geometry.knn(p[geometry.farthest_point_sample(p, 8)], p, 4))

    cloud = jax.ShapeDtypeStruct((50, 3), jnp.float32)
    with pytest.raises(ValueError, match="interpret mode"):    # a Pallas kernel cannot lower for CPU
        jax.export.export(graph(), platforms=["cpu", "cuda"])(cloud)
    with geometry.portable():
        assert (geometry.default_fps_method(), geometry.default_knn_method()) == ("rows", "top_k")
        exp = jax.export.export(graph(), platforms=["cpu", "cuda"])(cloud)
    assert "triton" not in exp.mlir_module()
    assert geometry.default_fps_method() == "pallas"     # restored on leaving


@pytest.mark.parametrize("tokens", [1, 2, 3, 6])
def test_small_attention_equals_attention(tokens):
    """Its elementwise form (up to SMALL_ATTENTION tokens; above it, the matmul form) computes
    softmax(q k^T / sqrt(d)) v; with zero-padded heads and `dim` the unpadded width, the padded
    columns stay zero and the rest is unchanged."""
    k1, k2, k3 = jax.random.split(jax.random.key(tokens), 3)
    shape = (3, 5, tokens, 2, 12)     # (..., L, H, d)
    q, k, v = (jax.random.normal(kk, shape) for kk in (k1, k2, k3))
    want = layers.attention(q, k, v)
    np.testing.assert_allclose(layers.small_attention(q, k, v), want, rtol=1e-5, atol=1e-6)
    pad = lambda x: jnp.pad(x, [(0, 0)] * 4 + [(0, 4)])  # noqa: E731
    padded = layers.small_attention(pad(q), pad(k), pad(v), dim=12)
    np.testing.assert_allclose(padded[..., :12], want, rtol=1e-5, atol=1e-6)
    assert not np.asarray(padded[..., 12:]).any()
    # runtime.small_attention: how many tokens the elementwise form takes (0: always the matmuls)
    dots = lambda rt: str(jax.make_jaxpr(kernels.traced(layers.small_attention, rt))(q, k, v)).count("dot_general")  # noqa: E731
    assert dots(RuntimeConfig()) == (0 if tokens <= layers.SMALL_ATTENTION else 2)
    assert dots(RuntimeConfig(small_attention=0)) == 2


def _denoiser_out(g, params, pts, x, t, hoist: bool):
    def run(params, pts, x, t):   # jitted afresh on every call: the padding switch acts when tracing
        model = nnx.merge(g, params)
        ctx = model.encode(pts)
        if not hoist:
            ctx = ctx._replace(weights=None)     # the layout made inside the call instead
        return model.denoise(x, t, ctx)

    return jax.jit(run)(params, pts, x, t)


def test_padded_fused_layout_is_the_same_function(monkeypatch):
    """The tiny model's heads (d = 24) padded to 32 and its width (48) to 64 (every matrix that
    reads or writes the hidden state, which is kept padded), as on a GPU, give the unpadded
    denoiser's outputs; so does the layout made per call rather than hoisted into the Context.
    The fused q/k/v matmul is the three projections side by side."""
    g, params = perturbed_policy(0)
    pts = _cloud(64)
    x = jax.random.normal(jax.random.key(1), (2, 4, 2, 3))
    t = jnp.array([[3, 7, 0, 19], [1, 2, 3, 4]], jnp.int32)
    monkeypatch.setattr(kernels, "_ACTIVE", [RuntimeConfig(pad="off")])   # as inside kernels.using
    plain = _denoiser_out(g, params, pts, x, t, hoist=True)
    per_call = _denoiser_out(g, params, pts, x, t, hoist=False)
    monkeypatch.setattr(kernels, "_ACTIVE", [RuntimeConfig(pad="on")])
    model = nnx.merge(g, params)
    assert model.denoiser.padding() == (64, 32)
    w = model.denoiser.prepare().layers[0]
    assert w.cross_q[0].shape == (64, 2 * 32) and w.self_qkv[0].shape == (64, 3 * 2 * 32)
    assert w.cross_out[0].shape == (2 * 32, 64) and w.ffn_in[0].shape[0] == 64 and w.ffn_out[0].shape[1] == 64
    assert not np.asarray(w.cross_out[0][:, 48:]).any() and not np.asarray(w.ffn_out[1][48:]).any()
    # the q block of the fused matrix is self_q's kernel, head by head, zeros in the padding
    layer = model.denoiser.layers[0]
    q_block = np.asarray(w.self_qkv[0][:48, :64]).reshape(48, 2, 32)
    np.testing.assert_array_equal(q_block[:, :, :24], np.asarray(layer.self_q.proj.kernel[...]).reshape(48, 2, 24))
    assert not q_block[:, :, 24:].any() and not np.asarray(w.self_qkv[0][48:]).any()
    padded = _denoiser_out(g, params, pts, x, t, hoist=True)
    np.testing.assert_allclose(per_call, plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(padded, plain, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="runtime.pad must be one of 'auto', 'on', 'off'"):
        with kernels.using(RuntimeConfig(pad="sometimes")):
            pass


def test_padding_leaves_training_gradients_unchanged(monkeypatch):
    """Gradients reach the original (unpadded) parameters through the padded layout unchanged."""
    g, params = perturbed_policy(1)
    pts = _cloud(64)
    x = jax.random.normal(jax.random.key(1), (2, 4, 2, 3))

    def loss(p):
        return jnp.mean(nnx.merge(g, p)(pts, x, jnp.int32(5)) ** 2)

    plain = jax.jit(kernels.traced(jax.grad(loss), RuntimeConfig(pad="off")))(params)
    padded = jax.jit(kernels.traced(jax.grad(loss), RuntimeConfig(pad="on")))(params)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(padded)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
