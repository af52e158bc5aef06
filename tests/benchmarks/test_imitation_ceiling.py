"""benchmarks/imitation_ceiling.py: K = 1 replays the scripted expert exactly; with K poses every
executed action is one of the first K the expert annotated at that state."""
import json
import pathlib
import sys

import numpy as np

from pam_jax.sim import make_task
from pam_jax.sim.experts import expert_actions

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))

import imitation_ceiling  # noqa: E402  (benchmarks/imitation_ceiling.py)


def test_one_pose_is_the_expert_and_rows_name_their_starts(tmp_path):
    task = make_task("rope")
    task.reset(1000)
    rng = np.random.default_rng([1000, 7])        # the expert baseline's stream (sl_curve)
    while not task.done:
        task.step(expert_actions(task, rng)[0])
    expert_final = float(task.score())

    out = tmp_path / "ceiling.json"
    res = imitation_ceiling.main(["--task", "rope", "--poses", "1", "--starts", "1", "--repeats", "1",
                                  "--out", str(out)])
    (row,) = res["rows"]
    assert row["poses"] == 1 and row["episodes"] == 1
    assert row["final"] == expert_final and row["gap_closed"] == 1.0
    assert json.loads(out.read_text())["start_seeds"] == [1000]


def recorded(monkeypatch, task_name: str):
    """A task whose executed actions, and the expert's annotated poses at each state, are recorded."""
    annotated, executed = [], []

    def recording_expert(task, rng, max_alternatives):
        acts = expert_actions(task, rng, max_alternatives)
        annotated.append(acts)
        return acts

    monkeypatch.setattr(imitation_ceiling, "expert_actions", recording_expert)
    task = make_task(task_name)
    step = task.step
    monkeypatch.setattr(task, "step", lambda a: executed.append(np.array(a)) or step(a))
    return task, annotated, executed


def test_each_executed_action_is_among_the_first_k_annotated(monkeypatch):
    task, annotated, executed = recorded(monkeypatch, "rope")
    imitation_ceiling.episode(task, 1001, poses=3, repeat=1, max_alternatives=10)
    assert executed and len(executed) == len(annotated)
    picks = [int(np.flatnonzero([np.array_equal(e, a) for a in acts])[0]) for e, acts in zip(executed, annotated)]
    assert max(picks) < 3


def test_noise_moves_only_xy_of_a_pose_among_the_first_k(monkeypatch):
    task, annotated, executed = recorded(monkeypatch, "granular")
    imitation_ceiling.episode(task, 1002, poses=2, repeat=1, max_alternatives=10, noise=0.01)
    assert executed and len(executed) == len(annotated)
    for e, acts in zip(executed, annotated):
        offsets = [np.abs(e[:, :2] - a[:, :2]).max() for a in acts[:2]]
        k = int(np.argmin(offsets))
        assert np.array_equal(e[:, 2], acts[k][:, 2]) and 0 < offsets[k] < 0.05
