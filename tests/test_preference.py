"""Preference pairs and losses against hand-computed values; the DPO gradient's direction;
the implicit reward ranking a planted better action first."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pam_jax import preference as pf


def test_pairs_for_every_code():
    idx = np.array([[0, 1, 2, 3], [4, 5, 0, 1], [2, 3, 6, 7], [6, 7, 4, 5], [16, 17, 2, 3]])
    codes = np.array([0, 1, 2, 3, 0])
    pairs, out = pf.pairs_from_rankings(idx, codes, num_candidates=9)
    np.testing.assert_array_equal(pairs, [[0, 1], [2, 0], [1, 3], [3, 2], [8, 1]])
    np.testing.assert_array_equal(out, [0, 1, 2, 3, 0])


@pytest.mark.parametrize("row", [[1, 2, 2, 3],      # points 1, 2 are not one candidate
                                 [0, 1, 0, 1],      # a candidate against itself
                                 [0, 1, 18, 19],    # candidate 9 does not exist
                                 [-2, -1, 0, 1]])
def test_malformed_rows_become_not_comparable(row):
    pairs, codes = pf.pairs_from_rankings(np.array([row]), np.array([0]), num_candidates=9)
    assert codes.tolist() == [pf.NOT_COMPARABLE]
    assert pairs.min() >= 0 and pairs.max() < 9


@pytest.mark.parametrize("idx,codes,msg", [
    (np.zeros((3, 3)), np.zeros(3), r"\(P, 4\)"),
    (np.zeros((3, 4)), np.zeros(2), "grasp_point_rankings"),
    (np.zeros((1, 4)), np.array([7]), "codes must be 0..3"),
])
def test_bad_ranking_inputs(idx, codes, msg):
    with pytest.raises(ValueError, match=msg):
        pf.pairs_from_rankings(idx, codes, 8)


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_deformpam_loss_hand_computed():
    # pair 0: first better; pair 1: second better; pair 2: equal (ignored); pair 3: n/c (ignored)
    ep1 = jnp.array([[0.10, 0.30, 0.5, 0.9]])
    er1 = jnp.array([[0.12, 0.25, 0.1, 0.1]])
    ep2 = jnp.array([[0.20, 0.20, 0.7, 0.3]])
    er2 = jnp.array([[0.18, 0.22, 0.2, 0.2]])
    codes = jnp.array([[0, 1, 2, 3]])
    beta = 10.0
    d0 = (0.10 - 0.12) - (0.20 - 0.18)     # winner = first
    d1 = (0.20 - 0.22) - (0.30 - 0.25)     # winner = second
    want = (-_sig(-beta * d0) - _sig(-beta * d1)) / 2
    got = pf.deformpam_dpo_loss(ep1, er1, ep2, er2, codes, beta)
    assert float(got) == pytest.approx(want, rel=1e-5)
    want_dpo = (-math.log(_sig(-beta * d0)) - math.log(_sig(-beta * d1))) / 2
    assert float(pf.diffusion_dpo_loss(ep1, er1, ep2, er2, codes, beta)) == pytest.approx(want_dpo, rel=1e-5)
    # a per-state min-SNR weight multiplies beta
    w = jnp.array([0.5])
    want_w = (-_sig(-5 * d0) - _sig(-5 * d1)) / 2
    assert float(pf.deformpam_dpo_loss(ep1, er1, ep2, er2, codes, beta, weight=w)) == pytest.approx(want_w, rel=1e-5)


def test_cpl_bt_and_sft_hand_computed():
    e1 = jnp.array([[1.0, 2.0, 0.4]])
    e2 = jnp.array([[3.0, 0.5, 0.6]])
    codes = jnp.array([[0, 1, 2]])
    # CPL: -log(exp(-e_w)/(exp(-e_w)+exp(-e_l)))
    want = (-math.log(math.exp(-1) / (math.exp(-1) + math.exp(-3)))
            - math.log(math.exp(-0.5) / (math.exp(-0.5) + math.exp(-2)))) / 2
    assert float(pf.cpl_loss(e1, e2, codes)) == pytest.approx(want, rel=1e-5)
    # Bradley-Terry on rewards: -log softmax of the winner
    r1, r2 = jnp.array([[2.0, 0.0, 9.0]]), jnp.array([[1.0, 1.5, -9.0]])
    want_bt = (-math.log(math.exp(2) / (math.exp(2) + math.exp(1)))
               - math.log(math.exp(1.5) / (math.exp(1.5) + math.exp(0)))) / 2
    assert float(pf.bradley_terry_loss(r1, r2, codes)) == pytest.approx(want_bt, rel=1e-5)
    assert float(pf.sft_equal_loss(e1, e2, codes)) == pytest.approx(0.5, rel=1e-6)


def test_no_valid_pairs_gives_zero_not_nan():
    z = jnp.zeros((2, 3))
    codes = jnp.array([[2, 3, 3], [3, 3, 2]])
    for f in (lambda: pf.deformpam_dpo_loss(z, z, z, z, codes, 100.0),
              lambda: pf.diffusion_dpo_loss(z, z, z, z, codes, 100.0),
              lambda: pf.cpl_loss(z, z, codes), lambda: pf.bradley_terry_loss(z, z, codes)):
        assert float(f()) == 0.0


def test_codes_2_and_3_never_reach_the_dpo_term():
    r = np.random.default_rng(0)
    ep1, er1, ep2, er2 = (jnp.asarray(r.random((1, 4)), jnp.float32) for _ in range(4))
    codes = jnp.array([[0, 2, 3, 1]])
    base = pf.deformpam_dpo_loss(ep1, er1, ep2, er2, codes, 50.0)
    # changing the errors of the code-2/3 pairs changes nothing
    ep1b = ep1.at[0, 1].set(9.0).at[0, 2].set(-9.0)
    assert float(pf.deformpam_dpo_loss(ep1b, er1, ep2, er2, codes, 50.0)) == pytest.approx(float(base))
    g = jax.grad(lambda e: pf.deformpam_dpo_loss(e, er1, ep2, er2, codes, 50.0))(ep1)
    assert float(g[0, 1]) == 0.0 and float(g[0, 2]) == 0.0 and float(g[0, 0]) != 0.0


def test_min_snr_weight():
    np.testing.assert_allclose(pf.min_snr_weight(jnp.array([1.0, 5.0, 50.0]), 5.0), [1.0, 1.0, 0.1])


def test_dpo_gradient_lowers_the_winner_error_relative_to_the_reference():
    """A gradient step on the DPO loss makes e_theta(a_w) - e_ref(a_w) fall relative to the loser."""
    er1, er2 = jnp.array([[0.3]]), jnp.array([[0.3]])
    codes = jnp.array([[0]])                  # candidate 1 wins
    theta = jnp.array([0.3, 0.3])             # toy "policy": its errors on (winner, loser)

    def loss(th):
        return pf.deformpam_dpo_loss(th[:1][None], er1, th[1:][None], er2, codes, 10.0)

    new = theta - 0.1 * jax.grad(loss)(theta)
    assert float(new[0] - er1[0, 0]) < 0.0 < float(new[1] - er2[0, 0])


def test_implicit_reward_formula():
    ep = jnp.array([[[0.1, 0.3], [0.5, 0.5]]])   # (B=1, N=2, M=2)
    er = jnp.array([[[0.2, 0.2], [0.4, 0.4]]])
    np.testing.assert_allclose(pf.implicit_reward(ep, er, 10.0), [[-10 * 0.0, -10 * 0.1]], atol=1e-6)


def test_dpo_batch_appends_the_annotator_action():
    b, k = 1, 2
    cp = np.arange(b * 2 * k * 3, dtype=np.float32).reshape(b, 2 * k, 3)
    actions = np.full((b, 3, 2, 3), 7.0, np.float32)
    batch = {"points": np.zeros((b, 5, 3)), "candidate_points": cp, "actions": actions,
             "candidate_valid": np.array([[True, True, True, False]]),
             "pair_indices": np.array([[[0, 1, 2, 3], [4, 5, 0, 1], [4, 5, 2, 3]]]),
             "rankings": np.array([[1, 0, 0]]), "action_mask": np.ones((b, 2))}
    out = pf.dpo_batch(batch)
    assert out["candidates"].shape == (1, 3, 2, 3)
    np.testing.assert_array_equal(out["candidates"][0, 2], actions[0, 0])
    np.testing.assert_array_equal(out["pairs"][0], [[0, 1], [2, 0], [2, 1]])
    # candidate 1 has an invalid (padded) point: its pairs are not comparable
    np.testing.assert_array_equal(out["rankings"][0], [3, 0, 3])
    # without the annotator's pairs, the row naming it (candidate 2) is not comparable either
    batch["candidate_valid"] = np.ones((1, 4), bool)
    np.testing.assert_array_equal(pf.dpo_batch(batch)["rankings"][0], [1, 0, 0])
    np.testing.assert_array_equal(pf.dpo_batch(batch, annotator_pairs=False)["rankings"][0], [1, 3, 3])

    # a simulated sample also stores the annotator's action as its last candidate (index 2), and
    # the pairs name that copy: it is left out too, the sampled candidates' pair kept
    stored = {**batch, "candidate_points": np.concatenate([cp, actions[:, 0]], axis=1),
              "candidate_valid": np.ones((1, 6), bool)}
    out = pf.dpo_batch(stored)
    assert out["candidates"].shape == (1, 4, 2, 3)
    np.testing.assert_array_equal(out["rankings"][0], [1, 0, 0])
    np.testing.assert_array_equal(pf.dpo_batch(stored, annotator_pairs=False)["rankings"][0], [1, 3, 3])


def test_dpo_noise_fresh_for_each_action_of_each_pair_or_one_per_candidate():
    """A 'policy' that predicts zero noise has error mean(eps^2): equal errors mean equal noise."""
    from pam_jax import diffusion
    from pam_jax.train.preference_steps import pair_errors

    class Zero:
        def denoise(self, x, t, ctx):
            return jnp.zeros_like(x)

    x0 = jnp.asarray(np.random.default_rng(0).normal(size=(1, 2, 2, 3)), jnp.float32)
    pairs = jnp.array([[[0, 1], [0, 1], [0, 0]]])        # the same pair twice, then candidate 0 against itself
    t = jnp.array([[3]])
    sched = diffusion.make_schedule(10)
    args = (Zero(), None, Zero(), None, sched, x0, pairs, t, jax.random.key(0))
    p1, p2, r1, r2 = (np.asarray(a)[0] for a in pair_errors(*args, pair_noise="per_candidate"))
    assert p1[0] == p1[1] == p1[2] == p2[2] and p2[0] == p2[1] and p1[0] != p2[0]
    np.testing.assert_array_equal(np.stack([p1, p2]), np.stack([r1, r2]))   # the reference: same t and eps
    p1, p2, r1, r2 = (np.asarray(a)[0] for a in pair_errors(*args, pair_noise="per_pair"))
    assert len({*p1.tolist(), *p2.tolist()}) == 6                         # six actions, six noises
    np.testing.assert_array_equal(np.stack([p1, p2]), np.stack([r1, r2]))
    with pytest.raises(ValueError, match="pair_noise"):
        pair_errors(*args, pair_noise="per_state")
