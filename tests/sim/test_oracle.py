"""The oracle annotator: ranking by tried-out gains, published label protocol, label noise."""
import numpy as np
import pytest

from pam_jax.sim import annotate, candidate_gains, make_task
from pam_jax.sim.oracle import PAD


@pytest.fixture(scope="module")
def rope():
    t = make_task("rope")
    t.reset(0)
    return t


def _rope_candidates(t):
    from pam_jax.sim.experts import rope_targets
    v = t.vertices()
    tg = rope_targets(t)
    err = np.linalg.norm(v[:, :2] - tg, axis=1)
    i = int(np.argmax(err))
    good = np.stack([v[i], np.r_[tg[i], 0.0]])                     # fix the worst vertex
    j = int(np.argmin(err))
    bad = np.stack([v[j], np.r_[v[j, :2] + (v[j, :2] - v[:, :2].mean(0)) * 1.5, 0.0]])  # fling a good one out
    noop = np.stack([v[j], v[j]])
    refused = np.full((2, 3), np.nan)
    return np.stack([bad, noop, good, refused])


def test_oracle_ranks_a_clearly_better_action_first(rope):
    s = rope.save_state()
    q = rope.data.qpos.copy()
    cands = _rope_candidates(rope)
    res = annotate(rope, s, cands, None, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(rope.data.qpos, q)              # state restored
    assert rope.steps_taken == s.steps_taken
    gains = res["gains"]
    assert np.isnan(gains[3]) and not res["valid"][3]
    assert gains[2] > gains[1] > gains[0]
    assert res["ranked"][0] == 2
    rows, codes = res["selected_grasp_point_indices"], res["grasp_point_rankings"]
    assert rows.shape == (2 * len(cands) + len(cands), 4) and codes.shape == (rows.shape[0],)
    # The best candidate (points 4, 5) beats every other candidate.
    first = [r for r, c in zip(rows.tolist(), codes.tolist()) if r[:2] == [4, 5] and c != 3]
    assert {tuple(r[2:]) for r in first} == {(0, 1), (2, 3), (6, 7)}
    assert all(c == 0 for r, c in zip(rows.tolist(), codes.tolist()) if r[:2] == [4, 5] and r[2:] == [6, 7])


def test_protocol_layout_with_eight_candidates_and_an_expert():
    t = make_task("granular")
    t.reset(1)
    s = t.save_state()
    rng = np.random.default_rng(3)
    c = t.centres().mean(0)
    dirs = [np.array([np.cos(a), np.sin(a)]) for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)]
    cands = np.stack([np.array([[*(c + 0.25 * d), 0.0], [*(c + 0.05 * d), 0.0]]) for d in dirs])
    expert = np.array([[0.4, 0.4, 0.0], [0.4, 0.36, 0.0]])            # a do-nothing sweep
    res = annotate(t, s, cands, expert, rng=rng)
    rows, codes = res["selected_grasp_point_indices"], res["grasp_point_rankings"]
    assert rows.shape == (24, 4) and codes.shape == (24,)
    assert rows.dtype == np.int64 and set(codes.tolist()) <= {0, 1, 2, 3}
    assert res["points"].shape == (18, 3)
    np.testing.assert_array_equal(res["points"][16:], expert)
    # 16 ranking rows, then 8 expert rows [16, 17, 2k, 2k+1].
    np.testing.assert_array_equal(rows[16:], [[16, 17, 2 * k, 2 * k + 1] for k in range(8)])
    assert rows[:16].max() < 16
    for r, code in zip(rows[:16], codes[:16]):
        if code == 3:
            assert tuple(r) == PAD
        else:
            a, b = r[0] // 2, r[2] // 2
            assert r[1] == r[0] + 1 and r[3] == r[2] + 1 and a in res["ranked"]
            assert res["gains"][a] >= res["gains"][b] - 1e-12
    assert res["expert_gain"] == pytest.approx(0.0, abs=1e-9)
    for k in range(8):
        g = res["gains"][k]
        want = 0 if -g > t.tie_tol else 1 if g > t.tie_tol else 2
        assert codes[16 + k] == want


def test_ties_are_equal_and_indistinguishable_are_not_comparable(rope):
    s = rope.save_state()
    v = rope.vertices()
    noop = np.stack([v[3], v[3]])
    res = annotate(rope, s, np.stack([noop, noop, noop]), None, tie_tol=0.5)
    assert res["ranked"] == []                                       # nothing to tell apart
    assert (res["grasp_point_rankings"] == 3).all()
    cands = _rope_candidates(rope)[:3]
    huge = annotate(rope, s, cands, None, tie_tol=10.0)
    assert (huge["grasp_point_rankings"] == 3).all()
    tied = annotate(rope, s, cands, cands[2], tie_tol=0.0)
    assert 2 in tied["grasp_point_rankings"][-3:].tolist()           # expert == candidate 2


def test_label_noise_flips_only_decided_pairs(rope):
    s = rope.save_state()
    cands = _rope_candidates(rope)
    clean = annotate(rope, s, cands, cands[2], rng=np.random.default_rng(0))
    noisy = annotate(rope, s, cands, cands[2], rng=np.random.default_rng(0), label_noise=1.0)
    c0, c1 = clean["grasp_point_rankings"], noisy["grasp_point_rankings"]
    decided = c0 <= 1
    assert decided.any()
    np.testing.assert_array_equal(c1[decided], 1 - c0[decided])
    np.testing.assert_array_equal(c1[~decided], c0[~decided])
    np.testing.assert_array_equal(clean["selected_grasp_point_indices"], noisy["selected_grasp_point_indices"])


def test_candidate_gains_and_bad_input(rope):
    s = rope.save_state()
    cands = _rope_candidates(rope)
    g, infos = candidate_gains(rope, s, cands)
    assert g.shape == (4,) and len(infos) == 4 and "NaN" in infos[3].reason
    with pytest.raises(ValueError, match="candidates"):
        annotate(rope, s, np.zeros((2, 3)), None)
    with pytest.raises(ValueError, match="expert_action"):
        annotate(rope, s, cands, np.zeros(3))
    with pytest.raises(ValueError, match="label_noise"):
        annotate(rope, s, cands, None, label_noise=2.0)
