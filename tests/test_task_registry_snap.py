"""The task registry's metric and pick-snapping entries."""
import dataclasses

import pytest

from pam_jax import tasks


def test_metric_and_snap_rule_per_task():
    assert tasks.get_task("rope").snap == "mean200" and "IoU" in tasks.get_task("rope").metric
    assert tasks.get_task("cloth").snap == "nearest" and "slot grid" in tasks.get_task("cloth").metric
    assert tasks.get_task("granular").snap == "none" and "IoU" in tasks.get_task("granular").metric


def test_an_unknown_snap_rule_is_refused():
    spec = dataclasses.replace(tasks.get_task("toy"), name="toy_snap", snap="closest")
    with pytest.raises(ValueError, match="snap must be one of") as e:
        tasks.register(spec)
    assert "\n" not in str(e.value) and "toy_snap" not in tasks.TASKS
