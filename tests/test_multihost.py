"""Two CPU processes over loopback (gloo collectives) run the same train step as one process."""
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

from _tiny import checksum, run_steps, tiny_config

HERE = pathlib.Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_agree_with_one(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs, outs = [], []
    for pid in range(2):
        out = tmp_path / f"p{pid}.json"
        outs.append(out)
        procs.append(subprocess.Popen(
            [sys.executable, str(HERE / "multihost_worker.py"), str(port), "2", str(pid), str(out),
             str(tmp_path / "run")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError("multi-host workers timed out")
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    r0, r1 = (json.loads(o.read_text()) for o in outs)
    assert r0["devices"] == r1["devices"] == 4
    assert r0["losses"] == r1["losses"] and r0["checksum"] == r1["checksum"]
    assert r0["train_step"] == r1["train_step"] == 6
    assert (tmp_path / "run" / "checkpoints" / "6").is_dir()

    # the same 3 steps in this process on 1 device, from the whole global batch
    losses, state = run_steps(tiny_config(tmp_path / "single"), 1)
    np.testing.assert_allclose(r0["losses"], losses, rtol=1e-5, atol=1e-6)
    single = checksum(state.params)
    assert abs(single - r0["checksum"]) < 1e-3 * max(1.0, abs(single))
