"""Evaluation checks what it is given before any episode: each run's stage, task and model, the
runs the methods need, the counts, and the kind of dataset. Only checkpoint records are read, so
the runs here are records around a one-element state (no training)."""
import json
import pathlib

import numpy as np
import pytest
from helpers.tiny import tiny_config

from pam_jax.cli import app as cli
from pam_jax.config import override
from pam_jax.eval import closed_loop
from pam_jax.eval.checks import check_pairs_dataset, check_runs
from pam_jax.normalize import NormStats
from pam_jax.train.checkpoint import Checkpointer
from pam_jax.train.loop import checkpoint_meta

NORM = NormStats((0.0, 0.0, 0.0), (0.5, 0.5, 0.5))


def _record(path: pathlib.Path, *sets, norm=NORM) -> str:
    """A run folder whose newest checkpoint records tiny_config() with `sets` overrides."""
    cfg = override(tiny_config(path), list(sets))
    ckpt = Checkpointer(path / "checkpoints")
    ckpt.save(1, {"x": np.zeros(1, np.float32)}, checkpoint_meta(cfg, norm, {}))
    ckpt.close()
    return str(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    return {
        "rope_sl": _record(d / "rope_sl", "data.task=rope"),
        "rope_dpo": _record(d / "rope_dpo", "data.task=rope", "train.stage=dpo"),
        "toy_sl": _record(d / "toy_sl"),
        "toy_dpo": _record(d / "toy_dpo", "train.stage=dpo", "data.source=toy_preference"),
        "wide_dpo": _record(d / "wide_dpo", "data.task=rope", "train.stage=dpo", "model.width=64"),
        "other_norm_dpo": _record(d / "other_dpo", "data.task=rope", "train.stage=dpo", norm=NormStats.identity()),
        "nut_sl": _record(d / "nut_sl", "data.task=nut"),
    }


def _eval(capsys, *args) -> str:
    assert cli.main(["eval", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pam-jax: error: "), lines
    return lines[0][len("pam-jax: error: "):]


def test_a_toy_dpo_run_as_sl_fails_at_once(runs, capsys):
    msg = _eval(capsys, "--task", "rope", "--sl", runs["toy_dpo"], "--dpo", runs["rope_dpo"])
    assert msg == f"--sl {runs['toy_dpo']} is a 'dpo' run (tiny); --sl takes a 'supervised' run"
    msg = _eval(capsys, "--task", "rope", "--sl", runs["toy_sl"], "--methods", "sl")
    assert msg == f"--sl {runs['toy_sl']} was trained for task 'toy' (tiny, data.source='toy_bimodal'), not 'rope'"
    msg = _eval(capsys, "--task", "granular", "--sl", runs["rope_sl"], "--methods", "sl")
    assert "was trained for task 'rope'" in msg and "not 'nut'" in msg


def test_missing_and_mismatched_runs_are_reported_before_any_episode(runs, capsys):
    msg = _eval(capsys, "--task", "rope", "--sl", runs["rope_sl"])              # default methods: sl, deformpam
    assert msg == "deformpam needs --dpo RUN (the DPO run)"
    msg = _eval(capsys, "--task", "rope", "--sl", runs["rope_sl"], "--methods", "sl_explicit", "dpo", "deformpam")
    assert msg == "sl_explicit needs --reward RUN (the reward run); dpo, deformpam need --dpo RUN (the DPO run)"
    msg = _eval(capsys, "--task", "rope", "--sl", runs["rope_sl"], "--dpo", runs["rope_sl"])
    assert msg == f"--dpo {runs['rope_sl']} is a 'supervised' run (tiny); --dpo takes a 'dpo' run"
    msg = _eval(capsys, "--task", "rope", "--sl", runs["rope_sl"], "--dpo", runs["wide_dpo"])
    assert msg.startswith(f"--dpo {runs['wide_dpo']} does not fit --sl {runs['rope_sl']}: model.width is 64 there, "
                          "48 in --sl")
    msg = _eval(capsys, "--task", "rope", "--sl", runs["rope_sl"], "--dpo", runs["other_norm_dpo"])
    assert "normalises clouds differently from --sl" in msg


def test_the_python_api_checks_before_the_first_episode(runs):
    with pytest.raises(ValueError, match="deformpam needs --dpo"):
        closed_loop.evaluate("rope", closed_loop.Runs(sl=runs["rope_sl"]), progress=False)
    with pytest.raises(ValueError, match="unknown method"):
        closed_loop.evaluate("rope", closed_loop.Runs(sl=runs["rope_sl"]), methods=("best",), progress=False)
    with pytest.raises(ValueError, match=r"episodes \(seeds\) must be an integer >= 1, got 0"):
        closed_loop.evaluate("rope", closed_loop.Runs(sl=runs["rope_sl"]), seeds=[], progress=False)
    with pytest.raises(ValueError, match="num_candidates must be an integer >= 1, got 0"):
        closed_loop.evaluate("rope", closed_loop.Runs(sl=runs["rope_sl"]), num_candidates=0, progress=False)
    assert set(check_runs("rope", {"sl": runs["rope_sl"], "dpo": runs["rope_dpo"]})) == {"sl", "dpo"}


def test_counts_are_checked_before_any_work(capsys):
    for args, msg in ((["eval", "--run", "x", "--samples", "0"], "--samples must be an integer >= 1, got 0"),
                      (["eval", "--run", "x", "--scenes", "0"], "--scenes must be an integer >= 1, got 0"),
                      (["eval", "--task", "rope", "--sl", "x", "--episodes", "0"],
                       "--episodes must be an integer >= 1, got 0"),
                      (["eval", "--task", "rope", "--sl", "x", "--candidates", "-1"],
                       "--candidates must be an integer >= 1, got -1"),
                      (["eval", "--task", "rope", "--sl", "x", "--reward-samples", "0"],
                       "--reward-samples must be an integer >= 1, got 0"),
                      (["demo", "--eval-episodes", "0"], "--eval-episodes must be an integer >= 1, got 0"),
                      (["demo", "--label-noise", "1.5"], "--label-noise must be in [0, 1], got 1.5"),
                      (["collect", "--task", "rope", "--sl", "x", "--out", "y", "--states", "0"],
                       "--states must be an integer >= 1, got 0"),
                      (["bench", "train", "--repeats", "0"], "--repeats must be an integer >= 1, got 0")):
        assert cli.main(args) == 2, args
        assert capsys.readouterr().err.strip() == f"pam-jax: error: {msg}"


def test_pairs_on_a_supervised_dataset(runs, tmp_path, capsys):
    ds = tmp_path / "deformpam" / "rope_supervised" / "1.0.0"
    ds.mkdir(parents=True)
    (ds / "dataset_info.json").write_text(json.dumps({"configName": "rope_supervised"}))
    msg = _eval(capsys, "--pairs", str(ds), "--sl", runs["rope_sl"], "--dpo", runs["rope_dpo"])
    assert msg.startswith(f"--pairs {ds} is a supervised dataset (deformpam/rope_supervised); pair accuracy needs")
    fine = tmp_path / "deformpam" / "nut_finetune" / "1.0.0"
    fine.mkdir(parents=True)
    (fine / "dataset_info.json").write_text(json.dumps({"configName": "nut_finetune"}))
    assert check_pairs_dataset(fine) == (fine, "nut")
    msg = _eval(capsys, "--pairs", str(fine), "--sl", runs["rope_sl"], "--dpo", runs["rope_dpo"])
    assert msg.endswith("was trained for task 'rope' (tiny, data.source='toy_bimodal'), not 'nut'")
