"""Scripted experts: valid, multimodal alternatives that make progress on the metric."""
import numpy as np
import pytest

from pam_jax.sim import expert_actions, make_task

STEPS = {"rope": 5, "granular": 5, "cloth": 2}


@pytest.mark.parametrize("name", ["rope", "granular", "cloth"])
def test_expert_alternatives_are_valid_and_distinct(name):
    t = make_task(name)
    t.reset(0)
    alts = expert_actions(t, np.random.default_rng(0))
    assert alts.ndim == 3 and alts.shape[1:] == (2, 3) and 2 <= len(alts) <= 10
    assert np.isfinite(alts).all()
    assert all(t.check_action(a).ok for a in alts)
    # multimodal: the alternatives are not all the same action
    assert np.ptp(alts.reshape(len(alts), -1), axis=0).max() > 0.05
    assert len(expert_actions(t, np.random.default_rng(0), max_alternatives=3)) <= 3
    # noisy: another rng gives different actions
    other = expert_actions(t, np.random.default_rng(1))
    assert not np.array_equal(alts[0], other[0])
    with pytest.raises(ValueError, match="max_alternatives"):
        expert_actions(t, np.random.default_rng(0), max_alternatives=0)


@pytest.mark.parametrize("name", ["rope", "granular", "cloth"])
def test_expert_improves_the_metric_on_average(name):
    t = make_task(name)
    gains = []
    for seed in (0, 1):
        t.reset(seed)
        rng = np.random.default_rng(seed)
        before = t.score()
        for _ in range(STEPS[name]):
            info = t.step(expert_actions(t, rng)[0])
            assert info.executed, info.reason
        gains.append(t.score() - before)
    assert np.mean(gains) > 0.03, gains
