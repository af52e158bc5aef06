"""Summaries: the selection efficiency over the seeds and start states the three methods share."""
import pytest

from pam_jax.eval import summary


def test_selection_efficiency_uses_the_seeds_and_states_all_three_ran():
    def eps(finals):                    # {train seed: {start: final}}
        return [{"train_seed": k, "seed": st, "final": f, "success": False, "steps_to_success": None}
                for k, d in finals.items() for st, f in d.items()]
    sl = {0: {1: 0.2, 2: 0.4}, 1: {1: 0.3, 2: 0.3}}
    oracle = {0: {1: 0.6, 2: 0.8}, 1: {1: 0.5, 2: 0.7}}
    method = {0: {1: 0.4, 2: 0.6}, 1: {1: 0.4, 2: 0.5}, 2: {1: 0.9, 2: 0.9}}   # seed 2: no SL, no oracle
    r = summary.selection_efficiency(eps(method), eps(sl), eps(oracle))
    # seeds 0 and 1: method 0.475, SL 0.3, oracle 0.65 -> 0.175 / 0.35 = 0.5
    assert r["estimate"] == pytest.approx(0.5) and r["seeds"] == 2 and r["states"] == 2
    assert summary.selection_efficiency(eps({3: {1: 0.5}}), eps(sl), eps(oracle)) is None
    assert [e["train_seed"] for e in summary.on_seeds(eps(method), [2])] == [2, 2]
