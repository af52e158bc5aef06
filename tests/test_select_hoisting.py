"""The selector's x-independent work is done once: the geometry (FPS + kNN) once per decision
for every model, the timestep conditioning once per model, DDIM's noise and coefficients before
the loop; and the results equal an unfused re-statement (each model grouping its own cloud,
conditioning computed per call, a Python loop of ddim_step drawing each step's noise)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers.tiny import TINY_MODEL
from helpers.tiny import perturbed_policy as _perturbed
from helpers.tiny import random_clouds as _points

from pam_jax import diffusion
from pam_jax.config import DiffusionConfig, PreferenceConfig
from pam_jax.models import geometry
from pam_jax.models.policy import init_policy
from pam_jax.models.reward import init_reward_model
from pam_jax.normalize import NormStats
from pam_jax.select import SelectConfig, implicit_scores, make_selector

DIFF = DiffusionConfig(num_train_timesteps=20, num_inference_steps=5, eta=1.0)
NORM = NormStats((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
FPS_LEN = TINY_MODEL.num_tokens - 1      # an FPS scan runs num_tokens - 1 iterations


@pytest.fixture(scope="module")
def models():
    g, ref = _perturbed(0)
    _, pol = _perturbed(1)
    return g, ref, pol




def _scans(jaxpr, length: int) -> int:
    """Scans of `length` iterations anywhere in a jaxpr (inside jit, scan, cond, ... bodies)."""
    count = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan" and eqn.params["length"] == length:
            count += 1
        for v in eqn.params.values():
            for sub in v if isinstance(v, (tuple, list)) else (v,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    count += _scans(sub.jaxpr, length)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    count += _scans(sub, length)
    return count


def test_one_fps_scan_per_model_call_counts():
    """The counter itself: one encode = one FPS scan, two encodes = two."""
    g, p = init_policy(TINY_MODEL, 0)
    pts = _points()
    one = jax.make_jaxpr(lambda p, x: nnx.merge(g, p).encode(x))(p, pts)
    two = jax.make_jaxpr(lambda p, x: (nnx.merge(g, p).encode(x), nnx.merge(g, p).encode(x)))(p, pts)
    assert (_scans(one.jaxpr, FPS_LEN), _scans(two.jaxpr, FPS_LEN)) == (1, 2)


@pytest.mark.parametrize("mode", ["implicit", "explicit", "first"])
def test_the_geometry_runs_once_per_decision(models, mode):
    g, ref, pol = models
    kw, score = {}, pol
    if mode == "explicit":
        rg, score = init_reward_model(TINY_MODEL, 0, ref)
        kw = dict(score_graphdef=rg)
    sel = make_selector(g, DIFF, NORM, SelectConfig(mode=mode, num_candidates=4, num_inference_steps=5,
                                                   eta=1.0, reward_samples=6), **kw)
    jaxpr = jax.make_jaxpr(sel)(ref, score, _points(), jax.random.key(0))
    assert _scans(jaxpr.jaxpr, FPS_LEN) == 1


def test_the_dpo_loss_groups_each_cloud_once(models):
    from pam_jax.train.preference_steps import dpo_loss

    g, ref, pol = models
    r = np.random.default_rng(1)
    batch = {"points": _points(), "candidates": r.uniform(-1, 1, (2, 4, 2, 3)).astype(np.float32),
             "pairs": np.array([[[0, 1], [2, 3]]] * 2, np.int32), "rankings": np.zeros((2, 2), np.int32),
             "action_mask": np.ones((2, 2), np.float32)}
    schedule = diffusion.make_schedule(20)
    loss = lambda p: dpo_loss(p, ref, g, schedule, batch, jax.random.key(0), pcfg=PreferenceConfig(),  # noqa: E731
                              norm=NORM)[0]
    assert _scans(jax.make_jaxpr(jax.grad(loss))(pol).jaxpr, FPS_LEN) == 1


def _unfused(g, ref_p, pol_p, points, key, scfg: SelectConfig, diff: DiffusionConfig):
    """The selector's maths without its shortcuts: both models encode (and group) the cloud
    themselves, the conditioning is computed in every denoiser call, and the DDIM chain is a
    Python loop of ddim_step, each step drawing its noise from its own key."""
    schedule = diffusion.schedule_from_config(diff)
    k_init, k_loop, k_score = jax.random.split(key, 3)
    ref, pol = nnx.merge(g, ref_p), nnx.merge(g, pol_p)
    pts = jnp.asarray(points)
    ctx_ref, ctx_pol = ref.encode(pts), pol.encode(pts)
    assert ctx_ref.cond is None and ctx_pol.cond is None
    x = jax.random.normal(k_init, (pts.shape[0], scfg.num_candidates, 2, 3))
    T, steps = diff.num_train_timesteps, scfg.num_inference_steps
    ts = diffusion.ddim_timesteps(T, steps)
    for t, k in zip(ts, jax.random.split(k_loop, len(ts))):
        eps = ref.denoise(x, jnp.int32(t), ctx_ref)
        x = diffusion.ddim_step(schedule, eps, int(t), x, prev_timestep=int(t) - T // steps, eta=scfg.eta,
                                key=k, clip_sample=diff.clip_sample)
    t_max = diffusion.timestep_limit(scfg.reward_timestep_frac, T)
    scores = implicit_scores(pol, ctx_pol, ref, ctx_ref, schedule, x, k_score, samples=scfg.reward_samples,
                             t_max=t_max, beta=scfg.beta, noise=scfg.reward_noise)
    return x, scores


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_results_equal_the_unfused_restatement(models, eta):
    g, ref, pol = models
    scfg = SelectConfig(num_candidates=4, num_inference_steps=5, eta=eta, reward_samples=6)
    diff = DiffusionConfig(num_train_timesteps=20, num_inference_steps=5, eta=eta)
    out = make_selector(g, diff, NORM, scfg)(ref, pol, _points(), jax.random.key(7))
    unfused = jax.jit(_unfused, static_argnums=(0, 5, 6))   # compiled too: same rounding regime
    x, scores = unfused(g, ref, pol, _points(), jax.random.key(7), scfg, diff)
    # float32 rounding differs (one matmul for all AdaLNs, another op order) and the perturbed
    # network amplifies it over the chain: agreement to 1e-4 on O(1) actions
    np.testing.assert_allclose(out.candidates, x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.scores, scores, rtol=1e-3, atol=1e-2)   # beta = 100 x float noise
    np.testing.assert_array_equal(out.index, np.argmax(np.asarray(scores), -1))


def test_conditioning_table_rows_equal_per_call_conditioning(models):
    g, ref, _ = models
    den = nnx.merge(g, ref).denoiser
    t = jnp.array([[0, 3], [19, 7]], jnp.int32)
    full = den.conditioning_table(20)
    np.testing.assert_allclose(full[t], den.conditioning(t), rtol=1e-5, atol=1e-6)
    part = den.conditioning_table(20, [3, 7, 3])
    np.testing.assert_allclose(part[jnp.array([3, 7])], full[jnp.array([3, 7])], rtol=1e-5, atol=1e-6)
    assert np.isnan(np.asarray(part[0])).all()   # a row nobody asked for fails loudly
    with pytest.raises(ValueError, match=r"\[0, 19\]"):
        den.conditioning_table(20, [20])


def test_hoisted_ddim_noise_equals_per_step_draws():
    """sample() draws all steps' noise before its loop, from the same per-step keys as a loop
    of ddim_step would: the chains agree."""
    s = diffusion.make_schedule(50)
    denoise = lambda x, t: 0.3 * x + 0.01 * t.astype(jnp.float32)  # noqa: E731
    x_T = jax.random.normal(jax.random.key(1), (3, 4, 2, 3))
    key = jax.random.key(2)
    got = diffusion.sample(denoise, s, x_T, key, num_inference_steps=10, eta=0.7)
    ts = diffusion.ddim_timesteps(50, 10)
    x = x_T
    for t, k in zip(ts, jax.random.split(key, len(ts))):
        x = diffusion.ddim_step(s, denoise(x, jnp.int32(t)), int(t), x, prev_timestep=int(t) - 5, eta=0.7, key=k)
    np.testing.assert_allclose(got, x, rtol=1e-6, atol=1e-6)
    for unroll in (2, 3):   # partial unrolling changes nothing (3 does not divide the 10 steps)
        np.testing.assert_allclose(diffusion.sample(denoise, s, x_T, key, num_inference_steps=10, eta=0.7,
                                                    unroll=unroll), got, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", geometry.FPS_METHODS)
def test_fps_breaks_ties_at_the_lowest_index(method):
    """Corners of a unit square from corner 0: the far corner (3) is unique; then corners 1 and 2
    tie at distance 1 and the lower index wins."""
    sq = jnp.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], jnp.float32)
    assert np.asarray(geometry.farthest_point_sample(sq, 4, method)).tolist() == [0, 3, 1, 2]
    dup = jnp.zeros((5, 3), jnp.float32)   # all points equal: every distance ties at 0
    assert np.asarray(geometry.farthest_point_sample(dup, 3, method)).tolist() == [0, 0, 0]


def test_every_fps_method_picks_the_same_points():
    pts = jnp.asarray(np.random.default_rng(5).normal(size=(500, 3)), jnp.float32)
    picked = [jax.jit(lambda p, m=m: geometry.farthest_point_sample(p, 64, m))(pts) for m in geometry.FPS_METHODS]
    for other in picked[1:]:
        np.testing.assert_array_equal(other, picked[0])
    with pytest.raises(ValueError, match="unknown method"):
        geometry.farthest_point_sample(pts, 4, "approx")


# --------------------------------------------------------------------------- bfloat16 compute


def test_bfloat16_compute_agrees_with_float32():
    """Parameters stay float32 (cast inside the graph). Models: initialisation + N(0, 0.02)
    on every parameter; T = 100, 10 DDIM steps, eta = 1. Over 8 decisions the bfloat16
    candidates lie within 0.02 of the float32 ones (normalised units; O(1) actions), and wherever
    float32's best candidate leads the runner-up by more than 1 (beta = 100 units), bfloat16
    picks the same one."""
    models = []
    for seed in (0, 1):
        g, p = init_policy(TINY_MODEL, seed)
        leaves, tree = jax.tree.flatten(p)
        keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
        models.append(jax.tree.unflatten(tree, [x + 0.02 * jax.random.normal(k, x.shape)
                                                for x, k in zip(leaves, keys)]))
    ref, pol = models
    pts = _points(b=8)
    diff = DiffusionConfig(num_train_timesteps=100, num_inference_steps=10, eta=1.0)
    kw = dict(num_candidates=4, num_inference_steps=10, eta=1.0, reward_samples=10)
    f32 = make_selector(g, diff, NORM, SelectConfig(**kw))(ref, pol, pts, jax.random.key(3))
    b16 = make_selector(g, diff, NORM, SelectConfig(compute_dtype="bfloat16", **kw))(ref, pol, pts, jax.random.key(3))
    assert b16.candidates.dtype == b16.scores.dtype == jnp.float32
    np.testing.assert_allclose(b16.candidates, f32.candidates, atol=2e-2)
    top2 = np.sort(np.asarray(f32.scores), -1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1.0
    assert clear.sum() >= 4
    np.testing.assert_array_equal(np.asarray(b16.index)[clear], np.asarray(f32.index)[clear])
    with pytest.raises(ValueError, match="compute_dtype"):
        make_selector(g, DIFF, NORM, SelectConfig(compute_dtype="float16", **kw))
    with pytest.raises(ValueError, match="unroll"):
        make_selector(g, DIFF, NORM, SelectConfig(unroll=0, **kw))


def test_bfloat16_dpo_loss_and_gradients_stay_close(models):
    """The DPO loss on bfloat16 copies of both networks' parameters: float32 gradients pointing
    the same way as float32's (cosine > 0.99), the loss within 2%. (The supervised loss casts
    its parameters the same way: train.steps.supervised_loss's compute_dtype.)"""
    from pam_jax.train.preference_steps import dpo_loss

    g, ref, pol = models
    r = np.random.default_rng(2)
    pref = {"points": _points(), "candidates": r.uniform(-1, 1, (2, 4, 2, 3)).astype(np.float32),
            "pairs": np.array([[[0, 1], [2, 3]]] * 2, np.int32), "rankings": np.array([[0, 1], [1, 0]], np.int32),
            "action_mask": np.ones((2, 2), np.float32)}
    schedule = diffusion.make_schedule(20)

    def loss(p, dt):
        return dpo_loss(p, ref, g, schedule, pref, jax.random.key(0), pcfg=PreferenceConfig(beta=1.0), norm=NORM,
                        compute_dtype=dt)[0]

    vg = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    l32, g32 = vg(pol, "float32")
    l16, g16 = vg(pol, "bfloat16")
    a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(g32)])
    b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(g16)])
    assert b.dtype == np.float32
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99
    np.testing.assert_allclose(l16, l32, rtol=2e-2)


def test_one_projection_makes_every_layers_keys_and_values():
    """Context.kv from the prepared ContextWeights (every layer's context LayerNorm folded into one
    key/value matrix: one matmul) equals the per-layer form (LayerNorm, then a key and a value
    projection per layer), with heads padded or not, and so do its gradients (training encodes
    through it too)."""
    import dataclasses

    from pam_jax.models.layers import apply_rotary, rotary_angles, to_context_layout

    g, p = init_policy(dataclasses.replace(TINY_MODEL, layers=2), 0)
    leaves, tree = jax.tree.flatten(p)   # every weight perturbed, the LayerNorm scales and offsets too
    keys = jax.random.split(jax.random.key(1), len(leaves))
    p = jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    tokens, xyz = jax.jit(lambda q: nnx.merge(g, q).encoder(_points(b=2, n=64, seed=3)))(p)

    def per_layer(den, t, dp):
        """The re-statement: per layer its LayerNorm, key and value projections, rotary keys, pads."""
        out = []
        for layer in den.layers:
            c = layer.ctx_norm(t)
            k, v = layer.cross_k(c), layer.cross_v(c)
            k = apply_rotary(k, rotary_angles(xyz, k.shape[-1], layer.max_freq))
            pad = ((0, 0), (0, 0), (0, 0), (0, dp - k.shape[-1]))
            out.append(to_context_layout(jnp.pad(k, pad), jnp.pad(v, pad)))
        return tuple(out)

    @functools.partial(jax.jit, static_argnums=(1, 2))
    def kv(params, dp, folded):
        den = nnx.merge(g, params).denoiser
        return den.context(tokens, xyz, den.context_weights(dp)) if folded else per_layer(den, tokens, dp)

    d = TINY_MODEL.width // TINY_MODEL.heads
    for dp in (d, d + 8):
        got, want = kv(p, dp, True), kv(p, dp, False)
        assert len(got) == 2
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert a.shape == b.shape == (2, TINY_MODEL.heads, dp, TINY_MODEL.num_tokens)
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # per observation (the ContextWeights made beforehand, once per parameters): one matmul
    den = nnx.merge(g, p).denoiser
    dots = lambda f, *a: str(jax.make_jaxpr(f)(*a)).count("dot_general")  # noqa: E731
    assert dots(lambda t, w: den.context(t, xyz, w), tokens, den.context_weights(d)) == 1
    assert dots(lambda t: per_layer(den, t, d), tokens) == 2 * 2   # 2 layers x (key, value)
    loss = lambda q, folded: sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(kv(q, d, folded)))  # noqa: E731
    for a, b in zip(jax.tree.leaves(jax.grad(loss)(p, True)), jax.tree.leaves(jax.grad(loss)(p, False))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_encoder_layer_projects_queries_keys_and_values_in_one_matmul():
    """An encoder layer with its q/k/v matrices side by side (made once per parameters in a
    Prepared: PointEncoder.weights) equals the re-statement with three projections and two
    rotations, and runs one projection matmul per observation instead of three."""
    from pam_jax.models.layers import apply_rotary, attention, rotary_angles

    g, p = _perturbed(2)
    layer = nnx.merge(g, p).encoder.layers[0]
    h = jax.random.normal(jax.random.key(0), (2, TINY_MODEL.num_tokens, TINY_MODEL.width))
    xyz = jax.random.normal(jax.random.key(1), (2, TINY_MODEL.num_tokens, 3))
    x = layer.norm1(h)
    q, k, v = layer.q(x), layer.k(x), layer.v(x)
    ang = rotary_angles(xyz, q.shape[-1], layer.max_freq)
    a = h + layer.out(attention(apply_rotary(q, ang), apply_rotary(k, ang), v).reshape(h.shape))
    want = a + layer.mlp(layer.norm2(a))
    np.testing.assert_allclose(layer(h, xyz), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer(h, xyz, layer.weights()), want, rtol=1e-5, atol=1e-5)
    dots = lambda f, *a: str(jax.make_jaxpr(f)(*a)).count("dot_general")  # noqa: E731
    # q/k/v, the two attention products, the output projection, the MLP's two layers
    assert dots(lambda t, w: layer(t, xyz, w), h, layer.weights()) == 1 + 2 + 1 + 2
