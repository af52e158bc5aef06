"""The one-graph best-of-N selector: shapes, determinism, one compiled computation, sharding,
a planted better action, prepare once / decide, and bad inputs."""
import dataclasses
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
from pam_jax.config import DiffusionConfig
from pam_jax.models.reward import init_reward_model
from pam_jax.normalize import NormStats
from pam_jax.select import SelectConfig, check_points, implicit_scores, make_selector, select_with_host_scorer, snap_action, task_snap

DIFF = DiffusionConfig(num_train_timesteps=20, num_inference_steps=5, eta=1.0)
NORM = NormStats((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def models():
    g, ref = _perturbed(0)
    _, pol = _perturbed(1)
    return g, ref, pol




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


def _mean_of_xy_neighbourhood(pick, cloud, k):
    """numpy reference of the rope rule: nearest cloud point to `pick` in xy, then the mean xy of
    the k cloud points nearest in xy to that point; z of `pick` kept."""
    anchor = cloud[np.argmin(((cloud[:, :2] - pick[:2]) ** 2).sum(-1))]
    order = np.argsort(((cloud[:, :2] - anchor[:2]) ** 2).sum(-1), kind="stable")[:k]
    return np.array([*cloud[order, :2].mean(0), pick[2]])


@pytest.mark.bit_identity
def test_rope_snap_is_the_mean_of_the_200_xy_nearest_points_and_keeps_z(models):
    """Candidates are scored as sampled (the same key without snapping gives the same candidates
    and, with a scorer of raw values, the same index); what is executed has row 0 moved in xy to
    the mean xy of the 200 points nearest to the cloud point nearest the pick, z kept; row 1 (the
    place) as sampled."""
    g, ref, _ = models
    pts = _points(2, 500, seed=4)
    key = jax.random.key(3)
    free = make_selector(g, DIFF, NORM, _cfg(mode="first"))(ref, None, pts, key).candidates
    out = make_selector(g, DIFF, NORM, _cfg(mode="custom", snap="mean200", snap_rows=(0,)),
                        scorer=lambda _, p, c: c[:, :, 0, 0])(ref, None, pts, key)
    free, cands, ex = np.asarray(free), np.asarray(out.candidates), np.asarray(out.executed)
    np.testing.assert_array_equal(cands, free)                       # scored as sampled
    np.testing.assert_array_equal(np.asarray(out.index), free[:, :, 0, 0].argmax(-1))
    for b in range(2):
        for n in range(free.shape[1]):
            want = _mean_of_xy_neighbourhood(free[b, n, 0].astype(np.float64), pts[b].astype(np.float64), 200)
            np.testing.assert_allclose(ex[b, n, 0], want, atol=1e-5)
            assert ex[b, n, 0, 2] == free[b, n, 0, 2]                 # z kept exactly
    np.testing.assert_array_equal(ex[:, :, 1], free[:, :, 1])
    idx = np.asarray(out.index)
    np.testing.assert_array_equal(np.asarray(out.action), ex[np.arange(2), idx])


def test_rope_snap_on_a_small_cloud_by_hand():
    # Cloud of 4 points, k = 2. The pick (0.9, 0.1, 0.3) is nearest to (1, 0, 0); the 2 points
    # nearest (1, 0) are itself and (1, 0.5): mean xy (1, 0.25); z 0.3 kept.
    cloud = jnp.array([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.5, 0.1], [3.0, 3.0, 0.0]]])
    act = jnp.array([[[[0.9, 0.1, 0.3], [2.0, 2.0, 2.0]]]])
    out = np.asarray(snap_action(act, cloud, "mean200", (0,), k=2))
    np.testing.assert_allclose(out[0, 0], [[1.0, 0.25, 0.3], [2.0, 2.0, 2.0]], atol=1e-7)
    # the cloth rule: the nearest point's xyz, both rows ((2, 2) is sqrt(2) from (3, 3) and
    # sqrt(3.25) from (1, 0.5))
    out = np.asarray(snap_action(act, cloud, "nearest", (0, 1)))
    np.testing.assert_allclose(out[0, 0], [[1.0, 0.0, 0.0], [3.0, 3.0, 0.0]], atol=1e-7)


def test_cloth_snap_picks_are_cloud_points(models):
    """Fling: both picks of every executed candidate are points of the cloud (exactly), the one
    nearest in xy to the sampled pick."""
    g, ref, _ = models
    pts = _points()
    key = jax.random.key(5)
    out = make_selector(g, DIFF, NORM, _cfg(mode="random", snap="nearest", snap_rows=(0, 1)))(ref, None, pts, key)
    cands, ex = np.asarray(out.candidates), np.asarray(out.executed)
    for b in range(2):
        for n in range(cands.shape[1]):
            for r in (0, 1):
                d2 = ((pts[b, :, :2] - cands[b, n, r, :2]) ** 2).sum(-1)
                np.testing.assert_array_equal(ex[b, n, r], pts[b, np.argmin(d2)])
    np.testing.assert_array_equal(np.asarray(out.action), ex[np.arange(2), np.asarray(out.index)])


def test_task_snap_rules():
    assert task_snap("rope") == {"snap": "mean200", "snap_rows": (0,)}
    assert task_snap("cloth") == {"snap": "nearest", "snap_rows": (0, 1)}
    assert task_snap("granular") == {"snap": "none", "snap_rows": ()}
    assert task_snap("rope", enabled=False) == {"snap": "none", "snap_rows": ()}


def test_bad_snap_settings(models):
    g, _, _ = models
    with pytest.raises(ValueError, match="snap rule"):
        make_selector(g, DIFF, NORM, _cfg(snap="closest", snap_rows=(0,)))
    with pytest.raises(ValueError, match="snap_rows"):
        make_selector(g, DIFF, NORM, _cfg(snap="nearest"))


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
    sel = make_selector(g, DIFF, NORM, _cfg(), checked=False)   # the host check reads the clouds: a transfer
    args = jax.device_put((ref, pol, _points(), jax.random.key(0)))
    hlo = sel.lower(*args).compile().as_text()
    assert "callback" not in hlo.lower()
    sel(*args)
    with jax.transfer_guard("disallow"):   # no host round trip anywhere inside
        out = sel(*args)
        jax.block_until_ready(out)
    assert sel._cache_size() == 1
    prepared = sel.prepare(args[0], args[1])
    with jax.transfer_guard("disallow"):   # nor in the decision from a Prepared
        jax.block_until_ready(sel.decide(prepared, *args[2:]))
        jax.block_until_ready(sel.decide(prepared, *args[2:]))
    assert sel.decide._cache_size() == 1


@pytest.mark.bit_identity
@pytest.mark.parametrize("mode", ["implicit", "explicit", "custom", "first"])
def test_prepare_once_then_decide_equals_the_one_graph(models, mode):
    """decide(prepare(params), ...) is select(params, ...), bit for bit on CPU, for every cloud
    a Prepared serves (the sharded decision: test_sharding_...)."""
    g, ref, pol = models
    kw, score = {}, pol
    if mode == "explicit":
        kw["score_graphdef"], score = init_reward_model(TINY_MODEL, 0, ref)
    elif mode == "custom":
        kw["scorer"] = lambda p, pts, c: jnp.sum(c[..., 0], axis=-1) * p
        score = jnp.float32(2.0)
    sel = make_selector(g, DIFF, NORM, _cfg(mode=mode), **kw)
    prepared = sel.prepare(ref, score)
    for seed in (0, 1):
        pts, key = _points(seed=seed), jax.random.key(seed)
        want, got = sel(ref, score, pts, key), sel.decide(prepared, pts, key)
        for field in ("candidates", "scores", "index", "action"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=f"{mode} {field}")


def test_decide_reads_what_was_prepared_and_refuses_another_selectors(models):
    g, ref, pol = models
    sel = make_selector(g, DIFF, NORM, _cfg())
    prepared = sel.prepare(ref, pol)
    # the conditioning table is read, not recomputed: poisoned, every candidate is NaN
    poisoned = dataclasses.replace(prepared, ref_ctx=prepared.ref_ctx._replace(cond=prepared.ref_ctx.cond * jnp.nan))
    assert np.isnan(np.asarray(sel.decide(poisoned, _points(), jax.random.key(0)).candidates)).all()
    # a Prepared of a selector with other DDIM steps or another mode would read the wrong rows
    for other in (_cfg(num_inference_steps=4), _cfg(mode="first"), _cfg(compute_dtype="bfloat16")):
        with pytest.raises(ValueError, match="prepared for another selector"):
            make_selector(g, DIFF, NORM, other).decide(prepared, _points(), jax.random.key(0))
    with pytest.raises(TypeError, match="expected the Prepared of this selector's prepare"):
        sel.decide(ref, _points(), jax.random.key(0))


def test_sharding_observations_or_candidates_changes_nothing(models):
    g, ref, pol = models
    from pam_jax.train.sharding import make_mesh

    mesh = make_mesh(8)
    pts = _points(b=8)
    cfg = _cfg(num_candidates=8)
    plain = make_selector(g, DIFF, NORM, cfg)(ref, pol, pts, jax.random.key(5))
    for shard in ("obs", "candidates"):
        sel = make_selector(g, DIFF, NORM, cfg, mesh=mesh, shard=shard)
        outs = [sel(ref, pol, pts, jax.random.key(5))]
        if shard == "obs":   # and the decision from a Prepared, on the mesh
            outs.append(sel.decide(sel.prepare(ref, pol), pts, jax.random.key(5)))
        for out in outs:
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
    sel = make_selector(g, DIFF, NORM, _cfg(mode="first"))
    first = functools.partial(sel.decide, sel.prepare(ref, None))
    out = select_with_host_scorer(first, _points(), jax.random.key(0),
                                  lambda pts, c: np.tile(np.array([0.0, 0.0, 1.0, 0.0]), (len(c), 1)))
    assert out.index.tolist() == [2, 2]
    np.testing.assert_array_equal(out.action, out.candidates[:, 2])
    with pytest.raises(ValueError, match="scorer"):
        select_with_host_scorer(first, _points(), jax.random.key(0), lambda pts, c: np.zeros(3))


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


# --------------------------------------------------------------------------- the implicit reward's noise


class _TimeBias(_Oracle):
    """Exact for x_t built from x0*, plus a bias of (t + 1): its error is (t + 1)^2 whatever eps is."""

    def denoise(self, x, t, ctx):
        return super().denoise(x, t, ctx) + (t + 1.0)[..., None, None]


@pytest.fixture
def eager():
    """These fakes are cheap: run them op by op instead of compiling a scan for each call."""
    with jax.disable_jit():
        yield


def _identical(b=2, n=5):
    good = jnp.array([[0.3, -0.2, 0.1], [-0.4, 0.5, 0.0]])
    return good, jnp.broadcast_to(good, (b, n, 2, 3))


@pytest.mark.parametrize("budget", [4096, 20])   # 20: M = 6 is scanned in chunks of 2
def test_one_timestep_per_monte_carlo_sample_is_shared_by_the_candidates(monkeypatch, budget, eager):
    """A policy whose error relative to the reference depends on t only: N identical candidates
    get identical scores exactly when they share t in every Monte-Carlo sample."""
    import pam_jax.select as select_lib

    monkeypatch.setattr(select_lib, "CHUNK_BUDGET", budget)
    schedule = diffusion.make_schedule(10)
    good, cands = _identical()
    kw = dict(samples=6, t_max=10, beta=1.0)
    for noise in ("shared_t", "crn"):
        s = np.asarray(implicit_scores(_TimeBias(schedule, good), None, _Oracle(schedule, good), None, schedule,
                                       cands, jax.random.key(0), noise=noise, **kw))
        np.testing.assert_allclose(s, s[:, :1].repeat(5, 1), atol=1e-3)
        # each score is -mean over the 6 samples of (t + 1)^2: 6 * score is minus an integer >= 6
        np.testing.assert_allclose(6 * s, np.round(6 * s), atol=1e-2)
        assert (6 * s <= -6 + 1e-2).all()
    s = np.asarray(implicit_scores(_TimeBias(schedule, good), None, _Oracle(schedule, good), None, schedule,
                                   cands, jax.random.key(0), noise="independent", **kw))
    assert (np.ptp(s, axis=1) > 0.5).all()   # the old estimator: a t of its own for every candidate


def test_eps_is_drawn_per_candidate_unless_common_random_numbers(eager):
    """A policy whose error relative to the reference depends on eps only (the reference is exact,
    the policy predicts zero: its error is mean eps^2)."""
    schedule = diffusion.make_schedule(10)
    good, cands = _identical()
    kw = dict(samples=6, t_max=10, beta=1.0)
    crn = np.asarray(implicit_scores(_Zero(), None, _Oracle(schedule, good), None, schedule, cands,
                                     jax.random.key(1), noise="crn", **kw))
    np.testing.assert_allclose(crn, crn[:, :1].repeat(5, 1), atol=1e-4)
    shared = np.asarray(implicit_scores(_Zero(), None, _Oracle(schedule, good), None, schedule, cands,
                                        jax.random.key(1), noise="shared_t", **kw))
    assert (np.ptp(shared, axis=1) > 1e-2).all()
    # the same model on both sides: the reference sees the same t and eps, so every reward is 0
    for noise in ("shared_t", "crn", "independent"):
        same = implicit_scores(_TimeBias(schedule, good), None, _TimeBias(schedule, good), None, schedule, cands,
                               jax.random.key(2), noise=noise, **kw)
        np.testing.assert_array_equal(same, 0.0)


def test_reward_noise_setting(models):
    from pam_jax.config import Config, PreferenceConfig

    g, _, _ = models
    cfg = Config(preference=PreferenceConfig(reward_noise="crn", reward_samples=100))
    scfg = SelectConfig.from_config(cfg)
    assert (scfg.reward_noise, scfg.reward_samples) == ("crn", 100)
    assert SelectConfig().reward_noise == "shared_t"                     # the paper's estimator
    assert SelectConfig.from_config(cfg, reward_noise="independent").reward_noise == "independent"
    with pytest.raises(ValueError, match="unknown reward_noise"):
        make_selector(g, DIFF, NORM, _cfg(reward_noise="per_candidate"))
    with pytest.raises(ValueError, match="unknown reward_noise"):
        implicit_scores(_Zero(), None, _Zero(), None, diffusion.make_schedule(10), _identical()[1],
                        jax.random.key(0), samples=2, t_max=10, beta=1.0, noise="t")


# --------------------------------------------------------------------------- clouds checked before the graph


def test_checked_selector_rejects_bad_clouds_before_the_graph(models):
    from pam_jax.select import CLOUD_RANGE_FACTOR, check_clouds, checked_selector

    g, ref, pol = models
    norm = NormStats((0.4, 0.0, 0.0), (0.5, 0.5, 0.5))   # training actions within 0.4 +- 0.5 m
    select = checked_selector(make_selector(g, DIFF, norm, _cfg(mode="first")), norm)
    ok = 0.4 + 0.3 * _points()
    sel = select(ref, None, ok, jax.random.key(0))
    assert np.asarray(sel.candidates).shape == (2, 4, 2, 3)
    with pytest.raises(ValueError, match=r"got one cloud of shape \(64, 3\).*pass points\[None\]"):
        select(ref, None, ok[0], jax.random.key(0))
    nan = ok.copy()
    nan[1, 5, 2] = np.nan
    with pytest.raises(ValueError, match="1 non-finite values"):
        select(ref, None, nan, jax.random.key(0))
    with pytest.raises(ValueError, match=r"cloud 0, point \d+ has \w = .*normalisation scales from the training"):
        select(ref, None, ok * 1e6, jax.random.key(0))       # a plausible-looking frame, the wrong unit
    # the limit: CLOUD_RANGE_FACTOR scales from the centre, per axis
    edge = np.full((1, 16, 3), 0.4, np.float32)
    edge[0, 0, 0] = 0.4 + 0.5 * CLOUD_RANGE_FACTOR * 0.99
    check_clouds(edge, norm)
    edge[0, 0, 0] = 0.4 + 0.5 * CLOUD_RANGE_FACTOR * 1.01
    with pytest.raises(ValueError, match="x = "):
        check_clouds(edge, norm)
    with pytest.raises(ValueError, match="expected numbers"):
        check_clouds(np.array([[["a", "b", "c"]]]), norm)
