"""Ctrl-C and SIGTERM in the middle of training steps, on real `pam-jax train` runs.

Each signal is sent to a subprocess while its loop is stepping (log_every is large, so the
loop never waits on a metric): when the progress bar first shows the run, i.e. during the
first step (tracing it, and loading the program the race's winner compiled into the test run's
compilation cache), and 3 and 30 steps later, alternating SIGINT and SIGTERM. Every
interrupted run must exit with 128 + the signal number, print one line and no traceback, and
leave a checkpoint at the step it names; the same command then resumes. After the three
interrupts the run finishes bitwise equal to an uninterrupted run. The uninterrupted run is the
winner of a race between two trainers started at the same moment on one folder: exactly one
proceeds.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

TOTAL = 300
TINY = ["model.width=32", "model.num_tokens=8", "model.knn=8", "model.encoder_layers=1", "model.layers=1",
        "model.heads=2", "data.num_points=64", "data.batch_size=4", "train.noise_replicas=2",
        "train.num_devices=1", f"train.steps={TOTAL}", "train.log_every=100000", "train.checkpoint_every=100000"]
# (steps past the resumed start when the signal goes out (0: inside the first step), the signal)
MOMENTS = ((1, signal.SIGINT), (3, signal.SIGTERM), (30, signal.SIGINT))
BAR = re.compile(rb"\|\s*(\d+)/(\d+) \[")
RACER = """import pathlib, sys, time
from pam_jax.cli import app as cli
gate = pathlib.Path(sys.argv[1]); (gate / f"ready{sys.argv[2]}").touch()
while not (gate / "go").exists():
    time.sleep(0.002)
sys.exit(cli.main(sys.argv[3:]))
"""


def _args(run_dir) -> list[str]:
    return ["train", "--experiment", "toy_bimodal", "--set", *TINY, f"train.run_dir={run_dir}"]


def _env() -> dict:
    # the compilation cache is the test run's (conftest.py), shared with these subprocesses
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "0"}


class Run:
    """A `pam-jax train` subprocess whose progress bar (stderr) is read as it is drawn."""

    def __init__(self, run_dir, env):
        self.p = subprocess.Popen([sys.executable, "-m", "pam_jax.cli", *_args(run_dir)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.err, self.counts = b"", []
        self.cv = threading.Condition()
        self.out_thread = threading.Thread(target=lambda: setattr(self, "out", self.p.stdout.read()))
        self.err_thread = threading.Thread(target=self._read_err)
        self.out_thread.start()
        self.err_thread.start()

    def _read_err(self):
        while chunk := self.p.stderr.read1(65536):
            with self.cv:
                self.err += chunk
                self.counts += [int(m.group(1)) for m in BAR.finditer(chunk)]
                self.cv.notify_all()
        with self.cv:
            self.cv.notify_all()

    def wait_for(self, pred, timeout=180.0):
        """Block until pred(counts) holds (-> True) or the process has ended (-> False)."""
        end = time.monotonic() + timeout
        with self.cv:
            while not (self.counts and pred(self.counts)):
                if self.p.poll() is not None or time.monotonic() > end:
                    return False
                self.cv.wait(0.05)
        return True

    def finish(self, timeout=180.0) -> tuple[int, str, str]:
        rc = self.p.wait(timeout)
        self.out_thread.join()
        self.err_thread.join()
        return rc, self.out.decode(), self.err.decode(errors="replace")


def _messages(err: str) -> list[str]:
    """stderr without the progress bar's redraws."""
    return [l for l in re.split(r"[\r\n]", err) if l.strip() and not l.startswith("toy_bimodal [supervised]")]


def _interrupt_chain(run_dir, env) -> list[int]:
    saved = []
    for k, sig in MOMENTS:
        run = Run(run_dir, env)
        assert run.wait_for(lambda c: True), f"no progress bar: {run.finish()}"
        start = run.counts[0]
        ok = run.wait_for(lambda c: c[-1] >= start + k)
        assert ok, f"the run ended before step {start + k}: {run.finish()}"
        run.p.send_signal(sig)
        rc, out, err = run.finish()
        assert rc == 128 + sig, (rc, out, err)
        assert "Traceback" not in err and "Exception ignored" not in err, err
        lines = _messages(err)
        assert len(lines) == 1, lines
        m = re.fullmatch(rf"pam-jax: interrupted at step (\d+) \({signal.Signals(sig).name}\); checkpoint saved "
                         rf"in \S+; run the same command again to resume", lines[0])
        assert m, lines[0]
        step = int(m.group(1))
        assert step >= start + k and (run_dir / "checkpoints" / str(step)).is_dir()
        assert not (run_dir / ".lock").exists()
        saved.append(step)
    rc, out, err = Run(run_dir, env).finish()          # the same command, to the end
    assert rc == 0 and f"done: step {TOTAL}" in out, (rc, out, err)
    return saved


def _race(gate, run_dir, env) -> list[tuple[int, str, str]]:
    """Two trainers released at the same moment on one folder -> [(rc, stdout, stderr)] x 2."""
    gate.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(gate), str(i), *_args(run_dir), "--no-progress"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) for i in range(2)]
    while not all((gate / f"ready{i}").exists() for i in range(2)):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    (gate / "go").touch()
    return [(p.wait(300), *(s.decode() for s in p.communicate())) for p in procs]


def _final_state(run_dir):
    from pam_jax import config as config_lib
    from pam_jax.train import sharding
    from pam_jax.train.checkpoint import Checkpointer, abstract_like
    from pam_jax.train.loop import init_train_state

    cfg = config_lib.from_dict(json.loads((run_dir / "config.json").read_text()))
    mesh = sharding.make_mesh(1)
    _, _, state = init_train_state(cfg, mesh)
    ckpt = Checkpointer(run_dir / "checkpoints", create=False)
    try:
        restored, _ = ckpt.restore(abstract_like(state, sharding.replicated(mesh)), TOTAL)
    finally:
        ckpt.close()
    return restored


@pytest.mark.slow
def test_signals_inside_steps_save_and_resume_bitwise(tmp_path):
    env = _env()
    results = _race(tmp_path / "gate", tmp_path / "ref", env)   # first: its winner fills the compilation cache
    saved = _interrupt_chain(tmp_path / "chain", env)

    # the race: exactly one trainer proceeds, the other stops at once with one line
    winners = [r for r in results if r[0] == 0]
    losers = [r for r in results if r[0] != 0]
    assert len(winners) == 1 and len(losers) == 1, results
    assert f"done: step {TOTAL}" in winners[0][1]
    rc, out, err = losers[0]
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, losers
    assert re.match(r"pam-jax: error: run folder \S+ is in use by process \d+ on this host", err), err

    assert len(saved) == len(MOMENTS) and saved == sorted(saved), saved
    ref = jax.tree.leaves(_final_state(tmp_path / "ref"))
    got = jax.tree.leaves(_final_state(tmp_path / "chain"))
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    last = json.loads((tmp_path / "chain" / "metrics.jsonl").read_text().splitlines()[-1])
    ref_last = json.loads((tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == TOTAL and last["loss"] == ref_last["loss"]


def test_deferred_signals_record_the_first_and_abort_on_the_second():
    from pam_jax.train.interrupts import DeferredSignals

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    aborted = []
    with DeferredSignals(on_abort=aborted.append, before_abort=lambda: aborted.append("released")) as sig:
        os.kill(os.getpid(), signal.SIGTERM)      # handled between two bytecodes, no exception
        time.sleep(0.01)
        assert sig.received == signal.SIGTERM and aborted == []
        os.kill(os.getpid(), signal.SIGINT)       # the second one aborts
        time.sleep(0.01)
        assert aborted == ["released", signal.SIGINT]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
