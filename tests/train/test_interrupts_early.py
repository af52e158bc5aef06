"""Ctrl-C from the first instant of `pam-jax train`: during the imports, the set-up and the first
compile as well as between steps. Each run ends with one line and exit code 130, and stops where
the signal found it: the step it names (if any) is the newest checkpoint, and no metric record
lies past it. Each run starts a fresh folder, so every one goes through the whole set-up."""
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

# (seconds after the start, or after the run's summary line: the set-up is done, the first compile begins)
MOMENTS = (("start", 0.3), ("start", 1.0), ("start", 2.5), ("summary", 0.0), ("summary", 1.0), ("summary", 3.0))
TINY = ["model.width=32", "model.num_tokens=8", "model.knn=8", "model.encoder_layers=1", "model.layers=1",
        "model.heads=2", "data.num_points=64", "data.batch_size=4", "train.noise_replicas=2",
        "train.num_devices=1", "train.steps=1000000", "train.log_every=5", "train.checkpoint_every=1000000"]
LINE = re.compile(r"pam-jax: interrupted (?:at step (\d+) \(SIGINT\); checkpoint saved in \S+; run the same "
                  r"command again to resume|(?:while|before|after) [a-z ]+ \(SIGINT\); nothing(?: trained yet,)? "
                  r"(?:nothing )?(?:to )?saved?)")


def _command() -> list[str]:
    script = pathlib.Path(sys.executable).parent / "pam-jax"      # the installed entry point
    return [str(script)] if script.exists() else [sys.executable, "-m", "pam_jax.cli"]


@pytest.mark.slow
def test_sigint_at_any_moment_ends_with_one_line_and_130(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for i, (after, t) in enumerate(MOMENTS):
        run = tmp_path / f"run{i}"
        p = subprocess.Popen([*_command(), "train", "--experiment", "toy_bimodal", "--no-progress", "--set", *TINY,
                              f"train.run_dir={run}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env)
        summary, out = threading.Event(), []

        def read():
            for line in p.stdout:
                out.append(line)
                if "parameters" in line:
                    summary.set()
            summary.set()

        reader = threading.Thread(target=read)
        reader.start()
        if after == "summary":
            assert summary.wait(240) and p.poll() is None, out
        time.sleep(t)
        assert p.poll() is None, (out, p.communicate())
        p.send_signal(signal.SIGINT)
        err = p.communicate(timeout=240)[1]
        reader.join()
        assert p.returncode == 130, (after, t, p.returncode, err[-3000:])
        assert "Traceback" not in err and "Exception ignored" not in err, (after, t, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, (after, t, lines)
        m = LINE.fullmatch(lines[0])
        assert m, (after, t, lines[0])
        saved = sorted(int(d.name) for d in (run / "checkpoints").iterdir()) if (run / "checkpoints").is_dir() else []
        logged = ([json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
                  if (run / "metrics.jsonl").exists() else [])
        if m.group(1) is None:                    # stopped before its first step: nothing written
            assert saved == [] and logged == [], (after, t, saved, logged)
        else:                                     # stopped at a step boundary: saved there, logged up to it
            step = int(m.group(1))
            assert saved == [step] and step >= 1 and all(s <= step for s in logged), (after, t, step, saved, logged)
        assert not (run / ".lock").exists()
        if i == 0:
            assert m.group(1) is None, lines      # 0.3 s: still importing
