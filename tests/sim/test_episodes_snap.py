"""Collection with pick snapping: candidates_fn gives (as sampled, as executed); the oracle ranks
and the rollout executes them as executed, the sample stores them as sampled."""
import numpy as np

from pam_jax.sim import episodes

N_POINTS, K = 400, 3


def _executed_fn(seed: int):
    """K picks on the observed cloud, each placed up to 8 cm away (what the robot executes)."""
    rng = np.random.default_rng(seed)

    def fn(cloud):
        picks = cloud[rng.choice(len(cloud), K, replace=False)].astype(np.float64)
        places = picks + np.c_[rng.uniform(-0.08, 0.08, (K, 2)), np.zeros(K)]
        return np.stack([picks, places], axis=1)
    return fn


def test_oracle_ranks_executed_candidates_and_the_sample_keeps_the_sampled_ones(tmp_path):
    shift = np.array([0.5, 0.5, 0.0])            # the sampled picks lie far off the rope
    executed = _executed_fn(0)

    def pair_fn(cloud):
        ex = executed(cloud)
        raw = ex.copy()
        raw[:, 0] += shift
        return raw, ex

    kw = dict(states=2, seed=7, num_points=N_POINTS, max_alternatives=2, execute="first", progress=False)
    snapped = episodes.write_preference_round("rope", tmp_path / "a", candidates_fn=pair_fn, **kw)
    plain = episodes.write_preference_round("rope", tmp_path / "b", candidates_fn=_executed_fn(0), **kw)
    assert len(snapped["records"]) == len(plain["records"]) == 2
    for s, p in zip(snapped["records"], plain["records"]):
        # same states, same oracle gains and labels: the oracle tried the executed candidates
        assert (s["episode_idx"], s["step"]) == (p["episode_idx"], p["step"])
        np.testing.assert_array_equal(s["gains"], p["gains"])
        np.testing.assert_array_equal(s["rankings"], p["rankings"])
        # ... but the sample holds the candidates as sampled
        np.testing.assert_allclose(s["candidates"][:, 0], p["candidates"][:, 0] + shift)
        np.testing.assert_array_equal(s["executed_candidates"], p["candidates"])
        np.testing.assert_allclose(s["candidate_points"][:2 * K].reshape(K, 2, 3), s["candidates"])
