"""`pam-jax train --distributed`: two CPU processes over loopback (gloo collectives), 2 devices
each, train the same run as one process on one device; only process 0 writes the run folder's
config, metrics and plot, and every log line names its process."""
import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
from helpers.tiny import checksum, tiny_config

from pam_jax.train.loop import train
from pam_jax.train.restore import load_policy

TESTS = pathlib.Path(__file__).resolve().parents[1]   # helpers/ lives there
EXPERIMENT = """import sys
sys.path.insert(0, {tests!r})
from helpers.tiny import tiny_config


def get_config():
    return tiny_config({run!r}, num_devices=0)
"""


GLOO_REPORT = re.compile(r"(\[Gloo\])?\s*(Rank)?\s*\d*\s*is connected to\s*\d+\s*peer ranks\.\s*"
                         r"Expected number of connected peer ranks is\s*:\s*\d*|\[Gloo\]\s*(Rank)?")
GLOO_PIECE = re.compile(r"is connected to|peer ranks|\[Gloo\]|^(Rank)?\s*\d*$")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_from_the_cli_agree_with_one(tmp_path):
    exp = tmp_path / "tiny_exp.py"
    exp.write_text(EXPERIMENT.format(tests=str(TESTS), run=str(tmp_path / "run")))
    # 2 devices per process; the rest of the suite's XLA flags (its cheaper CPU code generation) kept
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=2",
           "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"}
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "pam_jax.cli", "train", "--experiment", str(exp),
                               "--no-progress", "--distributed", "--coordinator", f"127.0.0.1:{port}",
                               "--num-processes", "2", "--process-id", str(pid)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
             for pid in range(2)]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=240))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError("the two training processes timed out")
    for pid, (p, (out, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, err[-3000:]
        # gloo's C++ code prints its own connection report to the same stdout, sometimes split across
        # writes; remove its pieces wherever they landed, then every remaining line must be ours
        out = GLOO_REPORT.sub("", out)
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        # ... and pieces of it that other writes split apart (a line never holds both ours and its)
        stray = [line for line in lines
                 if not line.startswith(f"[process {pid}/2] ") and not GLOO_PIECE.search(line)]
        assert lines and not stray, f"process {pid}: lines without the prefix: {stray}"
        assert "done: step 6" in lines[-1]
    chief = outs[0][0]
    assert "4 device(s), 2 process(es)" in chief and "parameters" not in outs[1][0]   # the run summary: process 0

    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]    # one writer: no row twice
    assert (run / "config.json").is_file() and (run / "checkpoints" / "6").is_dir()

    # the same run in this process on 1 device, from the whole global batch
    single = tiny_config(tmp_path / "single")
    train(single, progress_bar=False, log=lambda *a: None)
    want = [json.loads(line) for line in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["loss"] for r in rows], [r["loss"] for r in want], rtol=1e-5, atol=1e-6)
    a, b = checksum(load_policy(run).params), checksum(load_policy(tmp_path / "single").params)
    assert abs(a - b) < 1e-3 * max(1.0, abs(b))


def test_distributed_flags_are_checked_before_joining(capsys):
    from pam_jax.cli import app as cli

    def error(*argv):
        assert cli.main(["train", "--experiment", "toy_bimodal", *argv]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pam-jax: error: "), lines
        return lines[0][len("pam-jax: error: "):]

    assert error("--coordinator", "127.0.0.1:1234") == "--coordinator need(s) --distributed"
    assert error("--distributed", "--coordinator", "nohost") == "--coordinator must be HOST:PORT, got 'nohost'"
    assert error("--distributed", "--coordinator", "h:1", "--num-processes", "2", "--process-id", "2") == \
        "--process-id must be in [0, 1], got 2"
    assert error("--distributed", "--num-processes", "0") == "--num-processes must be an integer >= 1, got 0"
