"""The one-graph best-of-N selector: shapes, determinism, one compiled computation, sharding,
a planted better action, and bad inputs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from _tiny import TINY_MODEL
from pam_jax import diffusion
from pam_jax.config import DiffusionConfig
from pam_jax.models.policy import init_policy
from pam_jax.models.reward import init_reward_model
from pam_jax.normalize import NormStats
from pam_jax.select import (SelectConfig, check_points, implicit_scores, make_selector,
                            select_with_host_scorer)

DIFF = DiffusionConfig(num_train_timesteps=20, num_inference_steps=5, eta=1.0)
NORM = NormStats((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def _perturbed(seed):
    g, p = init_policy(TINY_MODEL, seed)
    leaves, tree = jax.tree.flatten(p)
    keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
    return g, jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


@pytest.fixture(scope="module")
def models():
    g, ref = _perturbed(0)
    _, pol = _perturbed(1)
    return g, ref, pol


def _points(b=2, n=64, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (b, n, 3)).astype(np.float32)


def _cfg(**kw):
    base = dict(num_candidates=4, num_inference_steps=5, eta=1.0, reward_samples=6)
    base.update(kw)
    return SelectConfig(**base)


@pytest.mark.parametrize("mode", ["implicit", "first", "random"])
def test_shapes_and_the_chosen_candidate(models, mode):
    g, ref, pol = models
    sel = make_selector(g, DIFF, NORM, _cfg(mode=mode))
    out = sel(ref, pol, _points(), jax.random.key(0))
    assert out.action.shape == (2, 2, 3) and out.candidates.shape == (2, 4, 2, 3)
    assert out.scores.shape == (2, 4) and out.index.shape == (2,)
    idx = np.asarray(out.index)
    np.testing.assert_array_equal(out.action, np.asarray(out.candidates)[np.arange(2), idx])
    np.testing.assert_array_equal(idx, np.argmax(np.asarray(out.scores), -1))
    if mode == "first":
        assert idx.tolist() == [0, 0]


def test_explicit_mode(models):
    g, ref, _ = models
    rg, rp = init_reward_model(TINY_MODEL, 0, ref)
    sel = make_selector(g, DIFF, NORM, _cfg(mode="explicit"), score_graphdef=rg)
    out = sel(ref, rp, _points(), jax.random.key(0))
    want = nnx.merge(rg, rp)(jnp.asarray(_points()), out.candidates)   # identity normalisation
    np.testing.assert_allclose(out.scores, want, rtol=1e-4, atol=1e-5)


def test_custom_scorer_is_traced_into_the_graph(models):
    g, ref, _ = models
    target = jnp.array([0.2, 0.2, 0.0])

    def nearest_first_point(params, points, cands):   # prefers candidates whose first point is near `target`
        return -jnp.linalg.norm(cands[:, :, 0] - target * params, axis=-1)

    sel = make_selector(g, DIFF, NORM, _cfg(mode="custom"), scorer=nearest_first_point)
    out = sel(ref, jnp.float32(1.0), _points(), jax.random.key(0))
    d = np.linalg.norm(np.asarray(out.candidates)[:, :, 0] - np.asarray(target), axis=-1)
    np.testing.assert_array_equal(np.asarray(out.index), d.argmin(-1))
    with pytest.raises(ValueError, match="scorer"):
        make_selector(g, DIFF, NORM, _cfg(mode="custom"))


def test_deterministic_for_a_fixed_key(models):
    g, ref, pol = models
    sel = make_selector(g, DIFF, NORM, _cfg())
    a = sel(ref, pol, _points(), jax.random.key(3))
    b = sel(ref, pol, _points(), jax.random.key(3))
    c = sel(ref, pol, _points(), jax.random.key(4))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.candidates, c.candidates)


def test_selection_is_one_compiled_computation(models):
    g, ref, pol = models
    sel = make_selector(g, DIFF, NORM, _cfg())
    args = jax.device_put((ref, pol, _points(), jax.random.key(0)))
    hlo = sel.lower(*args).compile().as_text()
    assert "callback" not in hlo.lower()
    sel(*args)
    with jax.transfer_guard("disallow"):   # no host round trip anywhere inside
        out = sel(*args)
        jax.block_until_ready(out)
    assert sel._cache_size() == 1


def test_sharding_observations_or_candidates_changes_nothing(models):
    g, ref, pol = models
    from pam_jax.train.sharding import make_mesh

    mesh = make_mesh(8)
    pts = _points(b=8)
    cfg = _cfg(num_candidates=8)
    plain = make_selector(g, DIFF, NORM, cfg)(ref, pol, pts, jax.random.key(5))
    for shard in ("obs", "candidates"):
        out = make_selector(g, DIFF, NORM, cfg, mesh=mesh, shard=shard)(ref, pol, pts, jax.random.key(5))
        np.testing.assert_allclose(out.candidates, plain.candidates, rtol=1e-3, atol=2e-4)
        np.testing.assert_allclose(out.scores, plain.scores, rtol=1e-2, atol=2e-2)  # beta=100 x fp noise


class _Oracle:
    """A 'model' whose noise prediction is exact for x_t built from one believed action x0*."""

    def __init__(self, schedule, x0_star):
        self.schedule, self.x0_star = schedule, x0_star

    def denoise(self, x, t, ctx):
        abar = self.schedule.alphas_cumprod[t][..., None, None]
        return (x - jnp.sqrt(abar) * self.x0_star) / jnp.sqrt(1 - abar)


class _Zero:
    def denoise(self, x, t, ctx):
        return jnp.zeros_like(x)


def test_implicit_reward_ranks_a_planted_better_action_first():
    schedule = diffusion.make_schedule(100)
    good = jnp.array([[0.3, -0.2, 0.1], [-0.4, 0.5, 0.0]])
    r = np.random.default_rng(0)
    cands = jnp.asarray(np.concatenate([r.uniform(-1, 1, (1, 3, 2, 3)), good[None, None],
                                        r.uniform(-1, 1, (1, 2, 2, 3))], axis=1), jnp.float32)
    scores = implicit_scores(_Oracle(schedule, good), None, _Zero(), None, schedule, cands,
                             jax.random.key(0), samples=10, t_max=10, beta=100.0)
    assert int(jnp.argmax(scores[0])) == 3
    assert float(scores[0, 3]) > 0.0   # the policy beats the reference on the planted action


def test_host_scorer(models):
    g, ref, _ = models
    first = make_selector(g, DIFF, NORM, _cfg(mode="first"))
    out = select_with_host_scorer(first, ref, _points(), jax.random.key(0),
                                  lambda pts, c: np.tile(np.array([0.0, 0.0, 1.0, 0.0]), (len(c), 1)))
    assert out.index.tolist() == [2, 2]
    np.testing.assert_array_equal(out.action, out.candidates[:, 2])
    with pytest.raises(ValueError, match="scorer"):
        select_with_host_scorer(first, ref, _points(), jax.random.key(0), lambda pts, c: np.zeros(3))


@pytest.mark.parametrize("pts,msg", [
    (np.zeros((5, 3)), r"\(B, N, 3\)"),
    (np.zeros((1, 5, 2)), r"\(B, N, 3\)"),
    (np.zeros((1, 0, 3)), "empty"),
    (np.full((1, 5, 3), np.nan), "non-finite"),
])
def test_bad_points(pts, msg):
    with pytest.raises(ValueError, match=msg):
        check_points(pts)


def test_bad_selector_arguments(models):
    g, _, _ = models
    with pytest.raises(ValueError, match="unknown selection mode"):
        make_selector(g, DIFF, NORM, _cfg(mode="best"))
    with pytest.raises(ValueError, match="score_graphdef"):
        make_selector(g, DIFF, NORM, _cfg(mode="explicit"))
    with pytest.raises(ValueError, match="shard"):
        make_selector(g, DIFF, NORM, _cfg(), shard="params")
