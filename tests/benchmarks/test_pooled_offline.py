"""benchmarks/pooled_offline.py: the state-weighted mean and its interval, computed by hand."""
import math
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))

import pooled_offline  # noqa: E402  (benchmarks/pooled_offline.py)


def test_families_are_pooled_by_their_states():
    scorers = {"implicit_s0": {"norm_gain": 0.2, "norm_gain_ci": 1.96 * 0.1, "states": 10},
               "implicit_s1": {"norm_gain": 0.5, "norm_gain_ci": 1.96 * 0.2, "states": 30},
               "reward": {"norm_gain": 0.4, "norm_gain_ci": 1.96 * 0.1, "states": 10},
               "reward_sl_s2": {"norm_gain": 0.1, "norm_gain_ci": 0.0, "states": 5},
               "random": {"norm_gain": 0.0, "norm_gain_ci": 0.0, "states": 10},
               "first": {"norm_gain": -0.3, "norm_gain_ci": 0.1, "states": 10}}
    out = pooled_offline.pooled(scorers)
    assert set(out) == {"implicit", "reward", "reward_sl"}
    imp = out["implicit"]
    assert (imp["seeds"], imp["states"]) == (2, 40)
    assert imp["norm_gain"] == pytest.approx((0.2 * 10 + 0.5 * 30) / 40)          # 0.425
    se = math.sqrt((10 * 0.1) ** 2 + (30 * 0.2) ** 2) / 40
    assert (imp["lo"], imp["hi"]) == pytest.approx((0.425 - 1.96 * se, 0.425 + 1.96 * se))
    assert out["reward"]["norm_gain"] == pytest.approx(0.4) and out["reward_sl"]["lo"] == pytest.approx(0.1)
