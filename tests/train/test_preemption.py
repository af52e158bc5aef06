"""Two `pam-jax train --distributed` processes over loopback (gloo): a skewed SIGTERM stops both at
the same step (they agree on it before saving), and a peer killed outright ends the survivor with
one line instead of a wait inside a collective."""
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
EXPERIMENT = """import sys
sys.path.insert(0, {tests!r})
from helpers.tiny import tiny_config


def get_config():
    return tiny_config({run!r}, num_devices=0, steps=100000, log_every=5, checkpoint_every=100000)
"""
GLOO = re.compile(r"\[Gloo\]|is connected to|Expected number of connected")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=2",
            "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo", "PYTHONUNBUFFERED": "1"}


def _start(tmp_path):
    exp = tmp_path / "exp.py"
    exp.write_text(EXPERIMENT.format(tests=str(HERE.parent), run=str(tmp_path / "run")))
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "pam_jax.cli", "train", "--experiment", str(exp),
                               "--no-progress", "--distributed", "--coordinator", f"127.0.0.1:{port}",
                               "--num-processes", "2", "--process-id", str(i)],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
             for i in range(2)]
    metrics = tmp_path / "run" / "metrics.jsonl"
    end = time.monotonic() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):   # both are stepping
        if any(p.poll() is not None for p in procs) or time.monotonic() > end:
            for p in procs:
                p.kill()
            raise AssertionError([p.communicate() for p in procs])
        time.sleep(0.05)
    return exp, procs


def _finish(procs, timeout):
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise AssertionError(f"still running after {timeout} s")
    return outs


def _lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip() and not GLOO.search(line)]


@pytest.mark.slow
def test_skewed_sigterm_stops_both_at_one_step_and_resumes(tmp_path):
    exp, procs = _start(tmp_path)
    procs[0].send_signal(signal.SIGTERM)
    time.sleep(0.7)
    procs[1].send_signal(signal.SIGTERM)
    outs = _finish(procs, 60)
    steps = []
    for i, (p, (out, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 128 + signal.SIGTERM, (i, p.returncode, err[-3000:])
        lines = _lines(err)
        assert len(lines) == 1 and "Traceback" not in err, (i, err[-3000:])
        m = re.fullmatch(rf"\[process {i}/2\] pam-jax: interrupted at step (\d+) \(SIGTERM\); checkpoint saved in "
                         r"\S+; run the same command again to resume", lines[0])
        assert m, lines[0]
        steps.append(int(m.group(1)))
    assert steps[0] == steps[1], steps                      # one agreed step
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(int(d.name) for d in ckpts.iterdir() if d.name.isdigit()) == [steps[0]]
    logged = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(5, steps[0] + 1, 5)), logged

    # the same run resumed (one process, every device), on to a few steps further
    target = steps[0] + 10
    r = subprocess.run([sys.executable, "-m", "pam_jax.cli", "train", "--experiment", str(exp), "--no-progress",
                        "--set", f"train.steps={target}"], env=_env(), capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming from {ckpts} at step {steps[0]}" in r.stdout and f"done: step {target}" in r.stdout, r.stdout
    logged = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged == sorted(set(logged)) and logged[-1] == target, logged


@pytest.mark.slow
def test_a_killed_peer_ends_the_survivor_with_one_line(tmp_path):
    _, procs = _start(tmp_path)
    procs[1].kill()
    (out, err), _ = _finish(procs, 30)
    assert procs[0].returncode not in (0, None, -signal.SIGKILL), procs[0].returncode
    lines = _lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert re.fullmatch(r"\[process 0/2\] pam-jax: process 1/2 gave no sign of life for \d+ s: it died or hangs; "
                        r"ending this process too \(the newest checkpoint is kept\)", lines[0]), lines[0]
