"""The experimental forms (benchmarks/experimental/fused.py), checked on CPU with the kernels
interpreted: the fused Pallas denoiser computes the plain denoiser's function (DDIM-style one
timestep for all candidates, and Monte-Carlo-style one per candidate; padded rows and widths;
float32 and bfloat16), the selector picks the same actions with it and with both networks
stacked, it lowers to Triton kernels for CUDA, and the runtime config selects it."""
import dataclasses
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers.tiny import TINY_MODEL, perturbed_policy, random_clouds

from pam_jax.config import DiffusionConfig, RuntimeConfig
from pam_jax.models import geometry, kernels, layers
from pam_jax.models.policy import init_policy
from pam_jax.normalize import NormStats
from pam_jax.select import EXPERIMENTAL, SelectConfig, make_selector

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the checkout: benchmarks/ is not installed
from benchmarks.experimental import fused  # noqa: E402

# two layers, heads of 24 (rotated: 4 frequencies x 3 axes x 2), hidden 96 -> padded 128
MODEL = dataclasses.replace(TINY_MODEL, layers=2)


def _noisy(seed):
    g, p = init_policy(MODEL, seed)
    leaves, tree = jax.tree.flatten(p)
    keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
    return g, jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def _pts(b=2, n=64, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(-0.5, 0.5, (b, n, 3)).astype(np.float32))


def _forms(monkeypatch, **fields):
    """Trace what follows with these runtime fields, as inside kernels.using."""
    monkeypatch.setattr(kernels, "_ACTIVE", [RuntimeConfig(**fields)])


def _net(g, params, fused_on: bool):
    model = nnx.merge(g, params)
    return fused.FusedPolicy(model) if fused_on else model


def _denoise(g, params, pts, x, t, fused_on: bool, table, dtype=jnp.float32):
    def run(params):
        model = _net(g, jax.tree.map(lambda a: a.astype(dtype), params), fused_on)
        ctx = model.encode(pts, num_timesteps=table)
        assert isinstance(ctx.weights, fused.FusedWeights) == fused_on
        return model.denoise(x, t, ctx)

    return jax.jit(run)(params)


@pytest.mark.parametrize("per_candidate_t,table,mode", [(False, 20, "on"), (True, None, "on"), (True, 20, "chain"),
                                                        (False, None, "chain")])
def test_fused_denoiser_is_the_plain_function(per_candidate_t, table, mode, monkeypatch):
    """5 candidates (rows padded to 16), 2 clouds, 2 layers: the same epsilon within float32
    rounding, one timestep for every candidate or one each, with or without the table; also with
    each kernel doing the previous sub-layer's residual, the input projection, the rotary tables
    and the output layer computed in the kernels ("chain")."""
    _forms(monkeypatch, fused=mode)
    g, params = _noisy(0)
    pts = _pts()
    x = jax.random.normal(jax.random.key(1), (2, 5, 2, 3))
    t = jnp.array([[3, 7, 0, 19, 2], [1, 2, 3, 4, 5]], jnp.int32) if per_candidate_t else jnp.int32(11)
    want = _denoise(g, params, pts, x, t, False, table)
    got = _denoise(g, params, pts, x, t, True, table)
    assert float(jnp.abs(want).max()) > 0.5       # the perturbed weights make a non-trivial output
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def test_fused_denoiser_in_bfloat16_and_many_rows(monkeypatch):
    """bfloat16 compute against the plain bfloat16 path, with 40 candidates (several row blocks
    of 32), in the chain form (whose layer kernels are those of "on"): the same function up to
    bfloat16 rounding."""
    _forms(monkeypatch, fused="chain")
    g, params = _noisy(2)
    pts = _pts(b=1)
    x = jax.random.normal(jax.random.key(2), (1, 40, 2, 3))
    t = jax.random.randint(jax.random.key(3), (1, 40), 0, 20)
    want = _denoise(g, params, pts, x, t, False, 20, jnp.bfloat16).astype(jnp.float32)
    got = _denoise(g, params, pts, x, t, True, 20, jnp.bfloat16).astype(jnp.float32)
    ref32 = _denoise(g, params, pts, x, t, False, 20)
    err, scale = float(jnp.abs(got - want).max()), float(jnp.abs(ref32).max())
    assert err < 0.03 * scale, (err, scale)
    assert float(jnp.abs(got - ref32).max()) < 0.03 * scale


def test_rotary_folded_into_swapped_columns():
    """rotary(q) == q * cos + q[partner] * sign * sin, for every column of a head (the identity
    the fused weights rely on), including pass-through columns past the 6F rotated ones."""
    d, f = 26, 4                                    # 24 rotated columns, 2 passed through
    q = jax.random.normal(jax.random.key(0), (5, 1, d))
    ang = jax.random.uniform(jax.random.key(1), (5, 3 * f), minval=-3, maxval=3)
    partner, angle, sign = layers.rotary_pairs(d)
    a = jnp.pad(ang, ((0, 0), (0, 1)))[:, angle][:, None, :]
    np.testing.assert_allclose(q * jnp.cos(a) + q[..., partner] * jnp.sin(a) * sign,
                               layers.apply_rotary(q, ang), rtol=1e-6, atol=1e-6)


def test_selector_picks_the_same_with_the_fused_denoiser(monkeypatch):
    """Implicit selection (10 DDIM steps, 6 Monte-Carlo samples, 2 clouds): the same chosen
    indices, candidates and scores within float32 rounding, with the fused denoiser ("on"), and
    with its chain form and both networks stacked (the kernels vmapped over the two models: one
    more grid axis)."""
    g, ref = _noisy(3)
    _, pol = _noisy(4)
    pts = _pts(seed=5)
    diff = DiffusionConfig(num_train_timesteps=20, num_inference_steps=10, eta=1.0)
    scfg = SelectConfig(num_candidates=8, num_inference_steps=10, reward_samples=6)
    norm = NormStats((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    want = make_selector(g, diff, norm, scfg)(ref, pol, pts, jax.random.key(7))
    for form, stack in (("on", False), ("chain", True)):
        sel = make_selector(g, diff, norm, dataclasses.replace(scfg, runtime=RuntimeConfig(fused=form, stack_models=stack)))
        assert "pallas_call" in str(jax.make_jaxpr(sel)(ref, pol, pts, jax.random.key(7)))
        got = sel(ref, pol, pts, jax.random.key(7))
        np.testing.assert_array_equal(got.index, want.index, err_msg=form)
        # ten noisy, clipped DDIM steps amplify float32 rounding: the plain selector alone moves
        # its candidates by 7e-5 between two LLVM optimisation levels, and by 9e-5 when its rotary
        # encoding is a column permutation instead of slices (BUILD_NOTES)
        np.testing.assert_allclose(got.candidates, want.candidates, rtol=1e-4, atol=3e-4, err_msg=form)
        # a score is beta times a sum of squared-error differences, so its rounding error follows
        # the size of the scores, not its own: a score near 0 among scores near 100 moves by 1e-2
        # when the compiled code rounds differently (another LLVM optimisation level)
        scale = float(np.abs(want.scores).max())
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-3, atol=2e-4 * scale, err_msg=form)


@pytest.mark.parametrize("eta,clip,table,n,dtype", [(1.0, True, 20, 8, jnp.float32), (0.0, False, None, 5, jnp.float32),
                                                     (1.0, True, 20, 8, jnp.bfloat16)])
def test_fused_ddim_loop_is_the_plain_sampler(eta, clip, table, n, dtype, monkeypatch):
    """fused.sample (the DDIM loop in the chain kernels' layout, the update in the output kernel)
    against diffusion.sample over the plain denoiser, on the same key: the same x_0 up to float
    rounding, with and without noise and clipping, and with candidates (5) that do not fill the
    row block. In bfloat16 the reference is diffusion.sample over the chain denoiser called per
    step (the kernels round where the plain layers do not, and 5 noisy steps amplify that to
    about 0.3 against the plain bfloat16 sampler, in both chain forms alike)."""
    from pam_jax import diffusion

    _forms(monkeypatch, fused="chain")
    g, params = _noisy(6)
    pts = _pts(seed=8)
    sched = diffusion.schedule_from_config(DiffusionConfig(num_train_timesteps=20))
    x_T = jax.random.normal(jax.random.key(1), (2, n, 2, 3))

    def run(params, fused_on, loop):
        model = _net(g, jax.tree.map(lambda a: a.astype(dtype), params), fused_on)
        ctx = model.encode(pts, num_timesteps=table)
        kw = dict(num_inference_steps=5, eta=eta, clip_sample=clip)
        if loop:
            return fused.sample(model.denoiser, ctx, sched, x_T, jax.random.key(2), **kw)
        return diffusion.sample(lambda x, t: model.denoise(x, t, ctx), sched, x_T, jax.random.key(2), **kw)

    f32 = dtype == jnp.float32
    want = jax.jit(lambda p: run(p, fused_on=not f32, loop=False))(params)
    got = jax.jit(lambda p: run(p, fused_on=True, loop=True))(params)
    assert got.shape == want.shape == x_T.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=2e-4 if f32 else 2e-3, atol=2e-4 if f32 else 2e-3)
    assert float(jnp.abs(got - x_T).max()) > 0.1      # it moved


@pytest.mark.parametrize("mode", ["on", "chain"])
def test_fused_denoiser_lowers_to_triton_for_cuda(monkeypatch, mode):
    """Lowered for CUDA on this CPU machine (jax.export needs no GPU): three Triton kernels per
    layer, one more for the output layer in the chain form (plus the FPS and kNN kernels), no
    Mosaic."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    _forms(monkeypatch, fused=mode)
    g, params = _noisy(0)
    unsafe = [jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
    pts = jax.ShapeDtypeStruct((1, 64, 3), jnp.float32)
    x = jax.ShapeDtypeStruct((1, 8, 2, 3), jnp.float32)

    def run(params, pts, x, t):
        model = fused.FusedPolicy(nnx.merge(g, params))
        return model.denoise(x, t, model.encode(pts, num_timesteps=20))

    for t in (jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((1, 8), jnp.int32)):
        text = jax.export.export(jax.jit(run), platforms=["cuda"], disabled_checks=unsafe)(params, pts, x, t).mlir_module()
        launches = 3 * MODEL.layers + (mode == "chain")   # chain: the output layer is one more
        assert text.count("xla.gpu.triton") == 2 + launches and "mosaic" not in text.lower()


def test_fused_switch(monkeypatch):
    assert not fused.enabled()                    # off by default, until a GPU run measures it
    for on in ("on", "chain"):
        _forms(monkeypatch, fused=on)
        assert fused.enabled() and fused.mode() == on
        with geometry.portable():                 # exported graphs hold no Triton kernel
            assert not fused.enabled()
    with pytest.raises(ValueError, match="runtime.fused must be one of 'off', 'on', 'chain', got 'yes'"):
        kernels.traced(lambda: None, RuntimeConfig(fused="yes"))
    _forms(monkeypatch)
    assert (fused._row_block(5), fused._row_block(800)) == (16, fused.MAX_ROWS)
    _forms(monkeypatch, fused_rows=64)
    assert fused._row_block(5) == 64
    for bad in (RuntimeConfig(fused_rows=24), RuntimeConfig(fused_rows=8), RuntimeConfig(fused_warps=3)):
        with pytest.raises(ValueError, match="must be a power of two"):
            kernels.traced(lambda: None, bad)
    assert fused.supports(256) and not fused.supports(100) and not fused.supports(8)
    from pam_jax.bench import compute as bench  # benchmarks record the kernel forms and XLA flags they ran under
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_enable_triton_gemm=false")
    assert bench.machine(RuntimeConfig(fused="chain"))["runtime"]["fused"] == "chain"
    assert bench.machine()["xla_flags"] == "--xla_gpu_enable_triton_gemm=false"


def test_experimental_forms_need_their_module_and_no_mesh():
    """make_selector routes a runtime asking for an experimental form to the registered builder;
    without it (the package alone) the request fails with one line, as it does under a mesh."""
    from pam_jax.train.sharding import make_mesh

    g, ref = perturbed_policy(0)
    scfg = SelectConfig(num_candidates=4, num_inference_steps=5, reward_samples=6,
                        runtime=RuntimeConfig(stack_models=True))
    norm = NormStats((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    diff = DiffusionConfig(num_train_timesteps=20, num_inference_steps=5)
    with pytest.raises(ValueError, match="do not run under a mesh"):
        make_selector(g, diff, norm, scfg, mesh=make_mesh(8))
    saved = list(EXPERIMENTAL)
    EXPERIMENTAL.clear()
    try:
        with pytest.raises(ValueError, match="experimental forms, not part of the package"):
            make_selector(g, diff, norm, scfg)
    finally:
        EXPERIMENTAL.extend(saved)


def test_both_networks_stacked_score_as_apart():
    """runtime.stack_models (encoders and Monte-Carlo scoring of the reference and the policy
    as one batched pass): the same candidates, indices and scores within float rounding."""
    g, ref = perturbed_policy(0)
    _, pol = perturbed_policy(1)
    pts, key = random_clouds(b=3), jax.random.key(2)
    diff = DiffusionConfig(num_train_timesteps=20, num_inference_steps=5, eta=1.0)
    norm = NormStats((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    scfg = SelectConfig(num_candidates=4, num_inference_steps=5, eta=1.0, reward_samples=6)
    want = make_selector(g, diff, norm, scfg)(ref, pol, pts, key)
    sel = make_selector(g, diff, norm, dataclasses.replace(scfg, runtime=RuntimeConfig(stack_models=True)))
    prepared = sel.prepare(ref, pol)
    assert prepared.signature[-1] == "stacked" and jax.tree.leaves(prepared.score)[0].shape[0] == 2
    got = sel.decide(prepared, pts, key)
    np.testing.assert_array_equal(got.index, want.index)
    np.testing.assert_allclose(got.candidates, want.candidates, rtol=1e-3, atol=5e-4)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-2, atol=2e-2)   # beta = 100 x float rounding
    first = make_selector(g, diff, norm, dataclasses.replace(scfg, mode="first",
                                                             runtime=RuntimeConfig(stack_models=True)))
    assert first.prepare(ref, None).signature[-1] == "apart"   # one network: nothing to stack


def test_fused_context_falls_back_when_tokens_are_not_a_power_of_two():
    """24 point tokens cannot be one Triton block: the fused network's encode gives the plain Context."""
    for tokens, want in ((24, False), (16, True)):
        g, params = init_policy(dataclasses.replace(TINY_MODEL, num_tokens=tokens), 0)
        ctx = jax.eval_shape(kernels.traced(lambda p: fused.FusedPolicy(nnx.merge(g, p)).encode(_pts()),
                                            RuntimeConfig(fused="on")), params)
        assert isinstance(ctx.weights, fused.FusedWeights) == want
