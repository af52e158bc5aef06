"""Resuming keeps the run's logs consistent with its checkpoint: after a kill -9 or an aborted stop,
metrics.jsonl and the TensorBoard events hold each step once, up to the restored step from before
and from the resumed run after it. A damaged newest checkpoint is moved aside and the run resumes
from the one before."""
import json
import os
import pathlib
import signal
import struct
import subprocess
import sys
import time

import pytest
from helpers.tiny import tiny_config

from pam_jax.train.loop import train

TOTAL = 400
TINY = ["model.width=32", "model.num_tokens=8", "model.knn=8", "model.encoder_layers=1", "model.layers=1",
        "model.heads=2", "data.num_points=64", "data.batch_size=4", "train.noise_replicas=2",
        "train.num_devices=1", f"train.steps={TOTAL}", "train.log_every=3", "train.checkpoint_every=20",
        "train.tracker=tensorboard"]


def _steps(run) -> list[int]:
    path = run / "metrics.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def _checkpoints(run) -> list[int]:
    d = run / "checkpoints"
    return sorted(int(x.name) for x in d.iterdir() if x.name.isdigit()) if d.is_dir() else []


def _events(path: pathlib.Path):
    """The Event protos of one TFRecord file (length, crc, data, crc per record)."""
    from tensorboardX.proto.event_pb2 import Event

    data, i = path.read_bytes(), 0
    while i + 12 <= len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        if i + 12 + n + 4 > len(data):
            break                                    # cut short by the kill
        yield Event.FromString(data[i + 12:i + 12 + n])
        i += 12 + n + 4


def _tensorboard_loss(run) -> dict[int, float]:
    """What TensorBoard shows for "loss": the events of every file in the order written, where a
    session start at step s hides the earlier events at steps >= s."""
    shown: dict[int, float] = {}
    files = sorted((run / "tensorboard").rglob("events.out.tfevents.*"),
                   key=lambda f: next(iter(_events(f))).wall_time)
    for f in files:
        for e in _events(f):
            if e.HasField("session_log") and e.session_log.status == e.session_log.START:
                shown = {s: v for s, v in shown.items() if s < e.step}
            for v in e.summary.value:
                if v.tag == "loss":
                    shown[e.step] = v.simple_value
    return shown


def _start(run):
    return subprocess.Popen([sys.executable, "-m", "pam_jax.cli", "train", "--experiment", "toy_bimodal",
                             "--no-progress", "--set", *TINY, f"train.run_dir={run}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _when_past_a_checkpoint(p, run, after: int) -> None:
    """Wait until a record past the newest checkpoint (itself past `after`) is logged."""
    end = time.monotonic() + 300
    while True:
        ckpts, logged = _checkpoints(run), _steps(run)
        if ckpts and ckpts[-1] > after and logged and logged[-1] > ckpts[-1]:
            return
        assert p.poll() is None and time.monotonic() < end, p.communicate()
        time.sleep(0.01)


@pytest.mark.slow
def test_kill_and_abort_then_resume_log_each_step_once(tmp_path):
    run = tmp_path / "run"
    p = _start(run)                                   # 1: kill -9 after a checkpoint and later records
    _when_past_a_checkpoint(p, run, 0)
    p.kill()
    p.communicate()
    first_ckpt = _checkpoints(run)[-1]

    p = _start(run)                                   # 2: resumed, then Ctrl-C and a second signal at once
    _when_past_a_checkpoint(p, run, first_ckpt)
    p.send_signal(signal.SIGINT)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, err
    assert err.strip() == ("pam-jax: a second signal (SIGTERM): aborted at once, without saving (the newest "
                           "checkpoint is kept)"), err
    assert f"resuming from {run / 'checkpoints'} at step {first_ckpt}" in out, out
    assert _steps(run)[-1] > _checkpoints(run)[-1]     # records past the newest checkpoint again

    p = _start(run)                                   # 3: to the end
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "metrics.jsonl: dropped" in out, out
    logged = _steps(run)
    assert logged == sorted(set(logged)) and logged[-1] == TOTAL, logged
    assert logged == [s for s in range(3, TOTAL + 1, 3)] + ([TOTAL] if TOTAL % 3 else [])
    shown = _tensorboard_loss(run)
    assert sorted(shown) == logged
    rows = {json.loads(line)["step"]: json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()}
    for s in logged:
        assert abs(shown[s] - rows[s]) <= 1e-6 * max(1.0, abs(rows[s])), (s, shown[s], rows[s])


def test_truncated_newest_checkpoint_is_moved_aside_and_the_previous_one_resumes(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(run), progress_bar=False, log=lambda *a: None)     # checkpoints 3 and 6, records 2, 4, 6
    assert _checkpoints(run) == [3, 6]
    files = sorted((f for f in (run / "checkpoints" / "6" / "state").rglob("*") if f.is_file()),
                   key=lambda f: f.stat().st_size)
    big = files[-1]
    cut = big.stat().st_size // 2
    big.write_bytes(big.read_bytes()[:cut])                             # cut short, as by a full disk
    rel = big.relative_to(run / "checkpoints" / "6")

    lines = []
    train(tiny_config(run), progress_bar=False, log=lines.append)
    skipped = [line for line in lines if line.startswith("skipped checkpoint step 6")]
    assert len(skipped) == 1 and "cannot be read" in skipped[0] and "resuming from step 3" in skipped[0], lines
    aside = [d for d in (run / "checkpoints").iterdir() if d.name.startswith("6.corrupt-")]
    assert len(aside) == 1 and str(aside[0]) in skipped[0]
    assert (aside[0] / rel).stat().st_size == cut                    # kept as it was, for inspection
    assert f"resuming from {run / 'checkpoints'} at step 3" in lines
    assert _checkpoints(run) == [3, 6]                # step 6 trained again from 3
    assert _steps(run) == [2, 4, 6]                   # 4 and 6 of the first run dropped, then logged again
