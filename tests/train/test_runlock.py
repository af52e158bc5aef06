"""One writer per run folder: the lock file, its race, stale locks, and a trainer that finds the
folder taken. (The race between two real `pam-jax train` processes is in tests/train/test_interrupts.py.)"""
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest
from helpers.tiny import tiny_config

from pam_jax.train.loop import train
from pam_jax.train.runlock import LOCK_NAME, RunLock, RunLocked

CONTENDER = """import pathlib, sys, time
from pam_jax.train.runlock import RunLock, RunLocked
gate = pathlib.Path(sys.argv[1]); i = sys.argv[2]
(gate / f"ready{i}").touch()
while not (gate / "go").exists():
    time.sleep(0.001)
try:
    lock = RunLock(sys.argv[3], log=lambda m: None).acquire()
except RunLocked as e:
    print("refused:", e)
    sys.exit(3)
print("holds")
sys.stdout.flush()
while not (gate / "release").exists():   # hold until every other contender has answered
    time.sleep(0.005)
lock.release()
"""


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_contenders_released_at_once_exactly_one_holds(tmp_path):
    gate, run = tmp_path / "gate", tmp_path / "run"
    gate.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(gate), str(i), str(run)],
                              stdout=subprocess.PIPE, text=True) for i in range(4)]
    while not all((gate / f"ready{i}").exists() for i in range(4)):
        time.sleep(0.005)
    (gate / "go").touch()
    while sum(p.poll() == 3 for p in procs) < 3 and all(p.poll() in (None, 3) for p in procs):
        time.sleep(0.01)
    (gate / "release").touch()
    outs = [(p.wait(30), p.stdout.read()) for p in procs]
    holders = [o for rc, o in outs if rc == 0]
    refused = [o for rc, o in outs if rc == 3]
    assert len(holders) == 1 and len(refused) == 3, outs
    assert all("is in use by process" in o and "one trainer per run folder" in o for o in refused)
    assert not (run / LOCK_NAME).exists()            # released by its holder


def test_lock_records_the_owner_and_is_released(tmp_path):
    with RunLock(tmp_path) as lock:
        record = json.loads((tmp_path / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with pytest.raises(RunLocked, match=f"in use by process {os.getpid()} on this host"):
            RunLock(tmp_path).acquire()
        assert lock.held
    assert not (tmp_path / LOCK_NAME).exists()
    assert [p.name for p in tmp_path.iterdir()] == []   # no temporary files left


def test_stale_lock_of_a_dead_process_is_reclaimed(tmp_path):
    pid = _dead_pid()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "x"}))
    said = []
    with RunLock(tmp_path, log=said.append):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert len(said) == 1 and f"process {pid}" in said[0] and "is not running" in said[0]


def test_lock_of_another_host_or_unreadable_names_the_file(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere-" + socket.gethostname()}))
    with pytest.raises(RunLocked, match=r"in use by process 1 on host elsewhere-.*if that process is gone, delete"):
        RunLock(tmp_path).acquire()
    (tmp_path / LOCK_NAME).write_text("{garbage")
    with pytest.raises(RunLocked, match="unreadable lock file"):
        RunLock(tmp_path).acquire()


def test_trainer_on_a_taken_folder_stops_before_writing(tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        with pytest.raises(FileExistsError, match="in use by process"):
            train(tiny_config(run), progress_bar=False, log=lambda *a: None)
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]   # no config, metrics or checkpoints


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_a_reused_pid_does_not_keep_a_dead_owners_lock(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        fields = pathlib.Path(f"/proc/{live.pid}/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19])                        # field 22: start time, clock ticks after boot
        lock = tmp_path / LOCK_NAME
        # the same PID, started at another moment: the owner died and its PID went to `live`
        lock.write_text(json.dumps({"pid": live.pid, "host": socket.gethostname(), "started": "x",
                                    "pid_start": started - 1}))
        said = []
        with RunLock(tmp_path, log=said.append):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
        assert len(said) == 1 and f"process {live.pid}" in said[0] and "is not running" in said[0]
        # the owner itself (same PID, same start time) still holds the folder
        lock.write_text(json.dumps({"pid": live.pid, "host": socket.gethostname(), "started": "x",
                                    "pid_start": started}))
        with pytest.raises(RunLocked, match=f"in use by process {live.pid} on this host"):
            RunLock(tmp_path).acquire()
    finally:
        live.kill()
        live.wait()
