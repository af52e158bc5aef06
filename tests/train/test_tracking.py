"""Tracked training: interval means, learning rate and throughput in every
record, validation every N steps, TensorBoard and wandb sinks, and a run id kept across resumes."""
import json
import pathlib
import struct

import numpy as np
import pytest
from helpers.tiny import tiny_config

from pam_jax.config import override
from pam_jax.train.loop import train
from pam_jax.train.state import learning_rate
from pam_jax.train.tracking import IntervalMeans, Tracker


def _quiet(*a, **k):
    pass


def _rows(run):
    return [json.loads(line) for line in (pathlib.Path(run) / "metrics.jsonl").read_text().splitlines()]


def test_interval_means_are_plain_means_and_survive_a_state_round_trip():
    m = IntervalMeans()
    m.add([{"loss": 1.0, "acc": 0.5}, {"loss": 2.0, "acc": 1.0}])
    resumed = IntervalMeans(json.loads(json.dumps(m.state())))    # what a checkpoint keeps
    resumed.add([{"loss": 6.0, "acc": 0.0}])
    assert resumed.means() == {"loss": 3.0, "acc": 0.5}
    resumed.reset()
    assert resumed.means() == {} and resumed.count == 0


def test_records_hold_interval_means_lr_throughput_and_validation(tmp_path):
    cfg = tiny_config(tmp_path / "run", log_every=3, checkpoint_every=3, eval_every=2, eval_batches=2)
    res = train(cfg, progress_bar=False, log=_quiet)
    rows = _rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [2, 3, 4, 6]        # validation at 2, 4, 6; logs at 3, 6
    by_step = {r["step"]: r for r in rows}
    for s in (3, 6):
        r = by_step[s]
        assert {"loss", "grad_norm", "lr", "steps_per_s", "samples_per_s", "data_wait_s"} <= set(r)
        assert r["lr"] == pytest.approx(float(learning_rate(cfg.optim, cfg.train.steps)(s - 1)))
        assert r["samples_per_s"] == pytest.approx(r["steps_per_s"] * cfg.data.batch_size)
        assert r["data_wait_s"] >= 0
    for s in (2, 4, 6):
        assert np.isfinite(by_step[s]["val_loss"])
    assert "loss" not in by_step[2] and res.steps_per_sec


def test_logged_losses_are_interval_means_also_across_a_resume(tmp_path):
    """log_every=3 on 6 steps: each record's loss is the mean of the per-step losses that a
    log_every=1 run of the same config writes (the steps are deterministic). Then Ctrl-C when
    step 5's batch is read (a checkpoint of step 4 is saved, mid-interval) and a resume: the
    record at step 6 still averages steps 4, 5 and 6."""
    from pam_jax.toy.data import ToyBimodalData

    class StopAt4(ToyBimodalData):
        def batch(self, step):
            if step == 4:
                raise KeyboardInterrupt
            return super().batch(step)

    train(tiny_config(tmp_path / "each", log_every=1), progress_bar=False, log=_quiet)
    per_step = {r["step"]: r["loss"] for r in _rows(tmp_path / "each")}
    cut = tiny_config(tmp_path / "cut", log_every=3)
    with pytest.raises(KeyboardInterrupt, match="checkpoint saved"):
        train(cut, data=StopAt4(batch_size=cut.data.batch_size, num_points=cut.data.num_points, seed=cut.data.seed),
              progress_bar=False, log=_quiet)
    train(cut, progress_bar=False, log=_quiet)
    got = {r["step"]: r["loss"] for r in _rows(tmp_path / "cut")}
    assert sorted(got) == [3, 6]
    assert got[3] == pytest.approx(np.mean([per_step[s] for s in (1, 2, 3)]), rel=1e-6)
    assert got[6] == pytest.approx(np.mean([per_step[s] for s in (4, 5, 6)]), rel=1e-6)


def _event_scalars(folder: pathlib.Path) -> dict:
    """{tag: [(step, value)]} read from TensorBoard event files by hand: TFRecord framing
    (u64 length, u32 crc, data, u32 crc) around Event protos."""
    from tensorboardX.proto import event_pb2

    out = {}
    for f in sorted(folder.rglob("events.out.tfevents.*")):
        data = f.read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            ev = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in ev.summary.value:
                out.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return out


def test_tensorboard_event_files_and_the_run_id_kept_on_resume(tmp_path):
    pytest.importorskip("tensorboardX")
    run = tmp_path / "tb"
    cfg = tiny_config(run, tracker="tensorboard", log_every=2, checkpoint_every=2)
    train(override(cfg, ["train.steps=4"]), progress_bar=False, log=_quiet)
    first = json.loads((run / "tracker.json").read_text())
    train(cfg, progress_bar=False, log=_quiet)                 # resumes at step 4
    assert json.loads((run / "tracker.json").read_text()) == first == {"tracker": "tensorboard", "id": first["id"]}
    folders = [p for p in (run / "tensorboard").iterdir()]
    assert [p.name for p in folders] == [first["id"]]          # one tracked run, continued
    scalars = _event_scalars(run / "tensorboard")
    jsonl = {r["step"]: r["loss"] for r in _rows(run)}
    assert [s for s, _ in scalars["loss"]] == [2, 4, 6]
    assert [v for _, v in scalars["loss"]] == pytest.approx([jsonl[s] for s in (2, 4, 6)], rel=1e-6)
    assert {"lr", "steps_per_s", "data_wait_s"} <= set(scalars)


def test_wandb_offline_keeps_the_run_id(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is an optional extra (pip install 'pam-jax[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "wb"
    run.mkdir()
    t = Tracker("wandb", run, config={"a": 1}, log=_quiet)
    run_id = t.run_id
    t.write(1, {"loss": 0.5})
    t.close()
    t2 = Tracker("wandb", run, log=_quiet)                      # a resume
    assert t2.run_id == run_id and t2._wandb.id == run_id
    t2.write(2, {"loss": 0.25})
    t2.close()
    assert any(p.name.endswith(run_id) for p in (run / "wandb").iterdir())   # offline-run-<time>-<id>


def test_an_unknown_tracker_and_missing_validation_data_are_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"train.tracker must be one of"):
        override(tiny_config(tmp_path / "x"), ["train.tracker=mlflow"])
    cfg = override(tiny_config(tmp_path / "y"), ["data.source=tfds", "data.dataset=deformpam/none",
                                                 f"data.data_dir={tmp_path}", "train.eval_every=2"])
    with pytest.raises(ValueError, match=r"train.eval_every=2 needs validation data"):
        from pam_jax.data.train_data import make_validation_data

        make_validation_data(cfg)
