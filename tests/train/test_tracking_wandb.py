"""wandb's project and entity: the config's fields, else $WANDB_PROJECT / $WANDB_ENTITY, else
project "pam_jax" and wandb's default entity. wandb itself is faked (a module that records what
`init` got), so these run without the extra."""
from __future__ import annotations

import json
import sys
import types

import pytest
from helpers.tiny import tiny_config

from pam_jax.config import override
from pam_jax.train.loop import train
from pam_jax.train.tracking import Tracker


class FakeRun:
    def __init__(self, kwargs):
        self.id, self.kwargs, self.logged, self.finished = kwargs["id"], kwargs, [], False

    def log(self, record, step):
        self.logged.append((step, dict(record)))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    runs = []

    def init(**kwargs):
        runs.append(FakeRun(kwargs))
        return runs[-1]

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    return runs


def _quiet(*a, **k):
    pass


def test_config_fields_choose_project_and_entity_over_the_environment(fake_wandb, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_PROJECT", "from_env")
    monkeypatch.setenv("WANDB_ENTITY", "env_team")
    Tracker("wandb", tmp_path / "a", log=_quiet, wandb_project="cloth", wandb_entity="lab")
    assert (fake_wandb[-1].kwargs["project"], fake_wandb[-1].kwargs["entity"]) == ("cloth", "lab")


def test_environment_when_the_config_leaves_them_empty(fake_wandb, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_PROJECT", "from_env")
    monkeypatch.setenv("WANDB_ENTITY", "env_team")
    Tracker("wandb", tmp_path / "a", log=_quiet)
    assert (fake_wandb[-1].kwargs["project"], fake_wandb[-1].kwargs["entity"]) == ("from_env", "env_team")


def test_defaults_without_config_or_environment(fake_wandb, tmp_path):
    Tracker("wandb", tmp_path / "a", log=_quiet)
    assert fake_wandb[-1].kwargs["project"] == "pam_jax"
    assert "entity" not in fake_wandb[-1].kwargs        # wandb's own default entity


def test_training_sends_its_records_to_the_configured_project(fake_wandb, tmp_path):
    run = tmp_path / "run"
    cfg = override(tiny_config(run, steps=2, log_every=1, checkpoint_every=2),
                   ["train.tracker=wandb", "train.wandb_project=rope runs", "train.wandb_entity=lab"])
    train(cfg, progress_bar=False, log=_quiet)
    (r,) = fake_wandb
    assert (r.kwargs["project"], r.kwargs["entity"]) == ("rope runs", "lab")
    assert r.kwargs["id"] == json.loads((run / "tracker.json").read_text())["id"] and r.finished
    jsonl = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [s for s, _ in r.logged] == [row["step"] for row in jsonl]
    assert r.kwargs["config"]["train"]["wandb_project"] == "rope runs"
