"""benchmarks/sim_threads.py: each part times the same work both ways and finds it equal."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))

import sim_threads  # noqa: E402  (benchmarks/sim_threads.py)


def test_both_parts_run_on_two_threads_and_report_equal_results(capsys):
    out = sim_threads.main(["--tasks", "rope", "--workers", "2", "--repeats", "1", "--batch", "3"])
    assert [(o["part"], o["task"], o["workers"]) for o in out] == [("oracle", "rope", 2), ("batch", "rope", 2)]
    assert all(o["equal"] and o["one_thread_s"] > 0 and o["threads_s"] > 0 for o in out)
    assert len(capsys.readouterr().out.strip().splitlines()) == 2       # one JSON line per part
