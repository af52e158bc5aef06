"""Closed-loop evaluation: confidence intervals by hand, and a tiny policy run on the rope task."""
import json
import math

import numpy as np
import pytest
from helpers.tiny import tiny_config

from pam_jax.config import override
from pam_jax.eval import closed_loop as evaluate
from pam_jax.eval import report
from pam_jax.train.loop import train

T3 = 3.182446305284263    # Student t, 0.975 quantile, 3 dof
T1 = 12.706204736174707   # ... 1 dof


def _eps(finals, success=None, train_seed=None, seeds=None):
    out = []
    for i, f in enumerate(finals):
        e = {"seed": seeds[i] if seeds else i, "final": f, "success": bool(success[i]) if success else False,
             "steps_to_success": None}
        if train_seed is not None:
            e["train_seed"] = train_seed
        out.append(e)
    return out


def test_summarize_uses_student_t_and_wilson():
    # was 1.96 * sd / sqrt(n) (normal); now the t quantile with n - 1 = 3 dof
    s = evaluate.summarize(_eps([1.0, 2.0, 3.0, 4.0]))
    assert s["final"] == 2.5 and s["final_ci"] == pytest.approx(T3 * math.sqrt(5 / 3) / 2)
    assert (s["final_lo"], s["final_hi"]) == pytest.approx((2.5 - s["final_ci"], 2.5 + s["final_ci"]))
    assert s["train_seeds"] == 1 and s["final_interval"] == "t"
    one = evaluate.summarize(_eps([0.7]))
    assert one["final"] == 0.7 and math.isnan(one["final_ci"])      # one episode: no interval
    # Wilson at 5 of 10: the textbook (0.2366, 0.7634); 0 of n: [0, z^2 / (n + z^2)]
    s = evaluate.summarize(_eps([0.0] * 10, success=[1] * 5 + [0] * 5))
    assert (s["success_lo"], s["success_hi"]) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    z2 = 1.959963984540054 ** 2
    s = evaluate.summarize(_eps([0.0] * 10))
    assert (s["success_lo"], s["success_hi"]) == (0.0, pytest.approx(z2 / (10 + z2)))


def test_summarize():
    eps = [{"final": 0.5, "success": True, "steps_to_success": 3},
           {"final": 0.3, "success": False, "steps_to_success": None}]
    s = evaluate.summarize(eps)
    assert s["final"] == pytest.approx(0.4) and s["success"] == 0.5 and s["steps_to_success"] == 3.0
    assert s["successes"] == 1


def test_paired_difference_matches_seeds():
    sl = [{"seed": 1, "final": 0.2, "success": False}, {"seed": 2, "final": 0.5, "success": False},
          {"seed": 3, "final": 0.1, "success": False}]
    m = [{"seed": 2, "final": 0.6, "success": True}, {"seed": 1, "final": 0.5, "success": False},
         {"seed": 9, "final": 1.0, "success": True}]
    # seeds 1 and 2 only: differences 0.3 and 0.1 -> mean 0.2, half-width t(1 dof) * sd / sqrt(2)
    # (was 1.96 * sd / sqrt(2) with the normal approximation)
    d = evaluate.paired_difference(m, sl)
    assert d["n"] == 2 and d["mean"] == pytest.approx(0.2)
    assert d["ci"] == pytest.approx(T1 * math.sqrt(0.02) / math.sqrt(2))
    assert d["interval"] == "t" and d["lo"] == pytest.approx(0.2 - d["ci"])
    # t = 0.2 / (sqrt(0.02) / sqrt(2)) = 2 with 1 dof: two-sided p = 1 - 2 atan(2) / pi
    assert d["p_value"] == pytest.approx(1 - 2 * math.atan(2.0) / math.pi)
    # success: only seed 2 is discordant (the method solved it, SL did not): McNemar p = 2 * 0.5 = 1
    assert (d["a_only"], d["b_only"], d["mcnemar_p"]) == (1, 0, 1.0)
    assert evaluate.paired_difference([{"seed": 7, "final": 0.0, "success": False}], sl) is None


def test_mcnemar_in_the_paired_difference():
    # 8 start states only the method solved, 1 only the baseline: p = 2 * P(Bin(9, .5) <= 1) = 20/512
    n = 12
    a = _eps([0.5] * n, success=[1] * 8 + [0] * 1 + [1] * 3)
    b = _eps([0.4] * n, success=[0] * 8 + [1] * 1 + [1] * 3)
    d = evaluate.paired_difference(a, b)
    assert (d["a_only"], d["b_only"]) == (8, 1) and d["mcnemar_p"] == pytest.approx(20 / 512)


def test_several_training_seeds():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.6, 30)
    sl = [e for s in range(3) for e in _eps(list(base), train_seed=s)]
    # every seed of the method is the baseline + 0.1: the seed-and-state bootstrap is exactly 0.1
    same = [e for s in range(3) for e in _eps(list(base + 0.1), train_seed=s)]
    d = evaluate.paired_difference(same, sl)
    assert d["interval"] == "hierarchical bootstrap, seeds paired" and d["seeds"] == (3, 3)
    assert (d["lo"], d["mean"], d["hi"]) == pytest.approx((0.1, 0.1, 0.1))
    # SL seeds at different levels (-0.2, 0, +0.2), each fine-tune +0.1 above its own SL seed:
    # paired by seed the gain is exactly 0.1; resampling each method's seeds apart, the SL seeds'
    # level spread enters and the interval holds 0
    levels = (-0.2, 0.0, 0.2)
    sl_lv = [e for s, off in enumerate(levels) for e in _eps(list(base + off), train_seed=s)]
    up = [e for s, off in enumerate(levels) for e in _eps(list(base + off + 0.1), train_seed=s)]
    d = evaluate.paired_difference(up, sl_lv)
    assert (d["lo"], d["mean"], d["hi"]) == pytest.approx((0.1, 0.1, 0.1))
    assert d["lo_unpaired"] < 0.0 < 0.2 < d["hi_unpaired"]
    assert "seeds unpaired: [" in report._diff_cells(d)[0]
    # training seeds that disagree (+0.2, +0.1, 0.0): the mean is still 0.1, but the interval now
    # holds the seed spread, which the t interval over per-state means cannot see (it is 0 here)
    spread = [e for s, off in enumerate((0.2, 0.1, 0.0)) for e in _eps(list(base + off), train_seed=s)]
    d = evaluate.paired_difference(spread, sl)
    assert d["mean"] == pytest.approx(0.1) and d["ci"] == pytest.approx(0.0, abs=1e-12)
    assert d["lo"] < 0.05 and d["hi"] > 0.15
    s = evaluate.summarize(spread)
    assert s["train_seeds"] == 3 and s["final_interval"] == "hierarchical bootstrap"
    assert s["final_lo"] < s["final"] < s["final_hi"]
    assert s["seed_finals"] == pytest.approx({0: base.mean() + 0.2, 1: base.mean() + 0.1, 2: base.mean()})
    # a method run on training seed 0 only is compared with the baseline's seed 0 only (the same
    # SL policy): the seeds 1, 2 that it never ran do not enter, so the difference is exactly 0.3
    one = _eps(list(base + 0.3), train_seed=0)
    sl_spread = [e for s, off in enumerate((0.0, 0.2, -0.2)) for e in _eps(list(base + off), train_seed=s)]
    d = evaluate.paired_difference(one, sl_spread)
    assert d["seeds"] == (1, 1) and d["interval"] == "t" and d["mean"] == pytest.approx(0.3)
    assert d["ci"] == pytest.approx(0.0, abs=1e-12)
    # combine_seeds: per-seed results -> one result, episodes tagged with their training seed
    from pam_jax.eval.summary import combine_seeds
    res = combine_seeds({s: {"task": "rope", "runs": {}, "methods": {"sl": {"episodes": _eps([0.1, 0.2])}}}
                         for s in (0, 4)})
    eps = res["methods"]["sl"]["episodes"]
    assert [e["train_seed"] for e in eps] == [0, 0, 4, 4] and set(res["methods"]["sl"]["seeds"]) == {0, 4}
    assert res["methods"]["sl"]["summary"]["train_seeds"] == 2
    table = report.table_markdown({"task": "rope", "methods": {"sl": {"summary": evaluate.summarize(sl),
                                                                      "episodes": sl},
                                                               "deformpam": {"summary": s, "episodes": spread}}})
    assert "hierarchical bootstrap" in table and "3 x 30" in table


@pytest.mark.slow
def test_tiny_policy_on_rope_writes_a_report(tmp_path):
    # tiny stand-ins for the rope runs: toy-data runs that state task rope (what the run checks
    # read), and a one-step DPO run from the SL run
    cfg = override(tiny_config(tmp_path / "sl"), ["data.task=rope"])
    train(cfg, progress_bar=False, log=lambda *a: None)
    dpo = override(tiny_config(tmp_path / "dpo"), [
        "data.task=rope", "train.stage=dpo", f"preference.init_from={cfg.train.run_dir}", "data.source=toy_preference",
        "data.num_states=4", "data.batch_size=4", "preference.num_candidates=2", "optim.ema_decay=0", "train.steps=1"])
    train(dpo, progress_bar=False, log=lambda *a: None)
    runs = evaluate.Runs(sl=cfg.train.run_dir, dpo=dpo.train.run_dir)
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
    with pytest.raises(ValueError, match="needs a reward run"):
        evaluate.Agent("sl_explicit", evaluate.Runs(sl="x", reward_sl="y"), data_task="rope")
    with pytest.raises(ValueError, match="needs a reward_sl run"):
        evaluate.Agent("sl_explicit_sl", evaluate.Runs(sl="x", reward="y"), data_task="rope")
