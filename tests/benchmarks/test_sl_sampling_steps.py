"""benchmarks/sl_sampling_steps.py: one row per (run, setting), pooled rows paired on the same
runs and start states (the first setting's difference to itself is exactly 0)."""
import json
import pathlib
import sys

from helpers.policy_runs import policy_run

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))

import sl_sampling_steps  # noqa: E402  (benchmarks/sl_sampling_steps.py)


def test_rows_per_run_and_setting_and_a_paired_pooled_difference(tmp_path):
    sl = policy_run(tmp_path / "sl", "supervised", 0, "data.task=rope")
    out = tmp_path / "out.json"
    rows = sl_sampling_steps.main(["--task", "rope", "--sl", sl, "--steps", "2", "4", "--starts", "2",
                                   "--max-steps", "2", "--out", str(out)])
    assert [(r["run"], r["ddim_steps"]) for r in rows] == [(sl, 2), (sl, 4), ("pooled", 2), ("pooled", 4)]
    assert all(r["episodes"] == 2 for r in rows)
    assert rows[2]["minus_2_steps"] == 0.0 and rows[2]["final"] == rows[0]["final"]
    assert abs(rows[3]["minus_2_steps"] - (rows[1]["final"] - rows[0]["final"])) < 1e-12
    assert json.loads(out.read_text())["start_seeds"] == [1000, 1001]
