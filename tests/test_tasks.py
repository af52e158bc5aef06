"""One task registry: a new simulated task is one class plus one `tasks.register(...)` call, and
then every tool that takes a task (the simulator factory, the CLI's choices, the closed-loop
evaluation) knows it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.tiny import tiny_config

from pam_jax import tasks
from pam_jax.cli import app as cli
from pam_jax.config import override
from pam_jax.sim import make_task
from pam_jax.sim.base import StepInfo
from pam_jax.train.loop import train


class SlideTask:
    """A dummy task with no physics: a blob of points on the table; an action slides it by
    (place - pick); the score is 1 at the origin, falling linearly to 0 at 0.5 m."""

    action_type = "single_pick_and_place"
    pose_rows = (0, 2)
    step_limit = 3

    def __init__(self, obs_points=None, obs_noise=0.0):
        self.n = obs_points or 200

    def reset(self, seed):
        rng = np.random.default_rng(seed)
        self.centre = rng.uniform(-0.2, 0.2, 2)
        self.offsets = rng.normal(0.0, 0.03, (self.n, 2))
        self.steps_taken = 0

    def observe(self, rng=None):
        xy = self.centre + self.offsets
        return np.concatenate([xy, np.full((self.n, 1), 0.01)], axis=1).astype(np.float32)

    def score(self):
        return float(max(0.0, 1.0 - np.linalg.norm(self.centre) / 0.5))

    def metric(self):
        return {"distance": float(np.linalg.norm(self.centre))}

    def success(self):
        return bool(np.linalg.norm(self.centre) < 0.01)

    def step(self, action):
        action = np.asarray(action, np.float64)
        before = self.score()
        self.centre = self.centre + (action[1, :2] - action[0, :2])
        self.steps_taken += 1
        return StepInfo(executed=True, reason="", action=action, score_before=before,
                        score_after=self.score(), success=self.success(),
                        steps_taken=self.steps_taken, done=self.success() or self.steps_taken >= self.step_limit)


@pytest.fixture
def slide():
    spec = tasks.register(tasks.TaskSpec(
        name="slide", primitive="single_pick_and_place", action_types=("single_pick_and_place",),
        rows=(0, 2), xy_scale=1.0, num_points=64, max_rotation_deg=0.0, depth_offset=0.0,
        swap_pick_prob=0.0, metric="distance to the origin", sim="slide",
        sim_class=f"{__name__}:SlideTask", published=False))
    yield spec
    tasks.unregister("slide")


def test_registry_lookups_by_either_name():
    assert tasks.get_task("granular") is tasks.get_task("nut")
    assert tasks.sim_task_names() == ("cloth", "rope", "granular")
    assert tasks.data_task_names() == ("tshirt_short", "rope", "nut")
    with pytest.raises(ValueError, match="did you mean 'granular'"):
        tasks.get_task("granualr")
    with pytest.raises(ValueError, match="is taken"):
        tasks.register(tasks.TaskSpec(name="mine", primitive="sweep", action_types=("sweep",), rows=(0, 2),
                                      xy_scale=1.0, num_points=10, max_rotation_deg=0.0, depth_offset=0.0,
                                      swap_pick_prob=0.0, sim="rope", sim_class="m:C"))


def test_a_registered_task_runs_through_eval(slide, tmp_path, capsys):
    assert "slide" in tasks.sim_task_names() and isinstance(make_task("slide"), SlideTask)
    sl = override(tiny_config(tmp_path / "sl"), ["train.steps=2", "data.task=slide"])
    train(sl, progress_bar=False, log=lambda *a: None)
    out = tmp_path / "eval"
    assert cli.main(["eval", "--task", "slide", "--sl", str(tmp_path / "sl"), "--methods", "sl", "sl_random",
                     "--episodes", "1", "--max-steps", "1", "--candidates", "2", "--out", str(out)]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["task"] == "slide"
    for m in ("sl", "sl_random"):
        (episode,) = result["methods"][m]["episodes"]
        assert len(episode["scores"]) == 2                      # the start and one step
        assert 0.0 <= episode["final"] <= 1.0
    assert "slide" in capsys.readouterr().out
    with pytest.raises(SystemExit):                              # once removed, the CLI refuses it
        tasks.unregister("slide")
        cli.main(["eval", "--task", "slide", "--sl", str(tmp_path / "sl")])
    tasks.register(slide)                                        # for the fixture's teardown
