"""Closed-loop evaluation: confidence intervals by hand, and a tiny policy run on the rope task."""
import json
import math

import numpy as np
import pytest

from _tiny import tiny_config
from pam_jax.eval import closed_loop as evaluate
from pam_jax.eval import report
from pam_jax.train.loop import train


def test_mean_ci_hand_computed():
    m, h = evaluate.mean_ci([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5
    assert h == pytest.approx(1.96 * math.sqrt(5 / 3) / 2)
    assert evaluate.mean_ci([0.7]) == (0.7, 0.0)
    assert evaluate.mean_ci([None, 2.0, None, 4.0])[0] == 3.0
    assert all(math.isnan(v) for v in evaluate.mean_ci([None]))


def test_summarize():
    eps = [{"final": 0.5, "success": True, "steps_to_success": 3},
           {"final": 0.3, "success": False, "steps_to_success": None}]
    s = evaluate.summarize(eps)
    assert s["final"] == pytest.approx(0.4) and s["success"] == 0.5 and s["steps_to_success"] == 3.0
    assert s["successes"] == 1


def test_paired_difference_matches_seeds():
    sl = [{"seed": 1, "final": 0.2}, {"seed": 2, "final": 0.5}, {"seed": 3, "final": 0.1}]
    m = [{"seed": 2, "final": 0.6}, {"seed": 1, "final": 0.5}, {"seed": 9, "final": 1.0}]
    # seeds 1 and 2 only: differences 0.3 and 0.1 -> mean 0.2, half-width 1.96 * sd / sqrt(2)
    mean, half = evaluate.paired_difference(m, sl)
    assert mean == pytest.approx(0.2) and half == pytest.approx(1.96 * math.sqrt(0.02) / math.sqrt(2))
    assert evaluate.paired_difference([{"seed": 7, "final": 0.0}], sl) is None


def test_wilson_interval_closed_forms():
    z2 = 1.96 ** 2
    # 0 of n: [0, z^2 / (n + z^2)]; n of n mirrors it; 5 of 10: the textbook (0.2366, 0.7634)
    assert evaluate.wilson(0, 10) == (0.0, pytest.approx(z2 / (10 + z2)))
    assert evaluate.wilson(10, 10) == (pytest.approx(10 / (10 + z2)), 1.0)
    assert evaluate.wilson(5, 10) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert all(math.isnan(v) for v in evaluate.wilson(0, 0))


def test_tiny_policy_on_rope_writes_a_report(tmp_path):
    cfg = tiny_config(tmp_path / "sl")
    train(cfg, progress_bar=False, log=lambda *a: None)
    runs = evaluate.Runs(sl=cfg.train.run_dir, dpo=cfg.train.run_dir)   # any policy works as "DPO"
    result = evaluate.evaluate("rope", runs, methods=("sl", "deformpam", "oracle"), seeds=[0, 1],
                               num_candidates=3, reward_samples=2, max_steps=2, progress=False)
    for m in ("sl", "deformpam", "oracle"):
        eps = result["methods"][m]["episodes"]
        assert [e["seed"] for e in eps] == [0, 1]
        assert all(1 <= len(e["scores"]) <= 3 for e in eps)
    # the same seeded start states for every method
    starts = {m: [e["scores"][0] for e in r["episodes"]] for m, r in result["methods"].items()}
    assert starts["sl"] == starts["deformpam"] == starts["oracle"]
    paths = report.write_report(result, tmp_path / "report")
    def no_constants(name):
        raise AssertionError(f"eval.json holds {name}: not strict JSON")
    data = json.loads(open(paths["json"]).read(), parse_constant=no_constants)
    assert set(data["methods"]) == {"sl", "deformpam", "oracle"}
    assert "DeformPAM" in open(paths["markdown"]).read()
    for key in ("curves", "filmstrip"):
        assert np.asarray(open(paths[key], "rb").read(4)).size and paths[key].endswith(".png")


def test_bad_method_and_missing_runs(tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        evaluate.Agent("best", evaluate.Runs(sl="x"), data_task="rope")
    with pytest.raises(ValueError, match="needs a DPO run"):
        evaluate.Agent("deformpam", evaluate.Runs(sl="x"), data_task="rope")
