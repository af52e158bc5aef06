"""One writer per run folder: an exclusive lock file holding the owner's PID and host.

The lock (``<run_dir>/.lock``, JSON ``{"pid", "host", "started", "pid_start"}``) is created in one atomic
step: the record is written to a private file, then hard-linked to the lock name, which fails if
the name exists. So a second trainer on the same folder gets a one-line :class:`RunLocked` error
before it writes anything. A lock left by a process that is gone (same host, PID not running) is
reclaimed, with a message; a lock of another host cannot be checked, so the error names the
file to delete. ``pid_start`` is the owner's start time in clock ticks since boot (field 22 of
``/proc/<pid>/stat``, where the system has it): a PID since reused by another process has another
start time, so the dead owner's lock is still recognised as stale.
"""
from __future__ import annotations

import json
import os
import pathlib
import socket
import time
import uuid
from typing import Callable

LOCK_NAME = ".lock"


class RunLocked(FileExistsError):
    """The run folder is in use by another process (its lock file exists)."""


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None where /proc cannot tell."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:   # the command name (field 2) may hold spaces and parentheses: count after its last ")"
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def _pid_alive(pid: int, pid_start: int | None = None) -> bool:
    """Whether process `pid` runs, and (when the lock recorded it) is the one that started then."""
    if pid <= 0:
        return False
    if pid_start is not None:
        now = _start_time(pid)
        if now is not None and now != pid_start:
            return False       # the PID was reused by a later process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True            # it exists, owned by another user
    return True


def _read(path: pathlib.Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


class RunLock:
    """``with RunLock(run_dir):`` or :meth:`acquire` / :meth:`release`."""

    def __init__(self, run_dir, *, log: Callable[[str], None] = print):
        self.path = pathlib.Path(run_dir) / LOCK_NAME
        self.log = log
        self.record = {"pid": os.getpid(), "host": socket.gethostname()}
        if (start := _start_time(os.getpid())) is not None:
            self.record["pid_start"] = start
        self.held = False

    def _try_create(self) -> bool:
        tmp = self.path.with_name(f".lock.{uuid.uuid4().hex[:12]}.tmp")
        tmp.write_text(json.dumps({**self.record, "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        try:
            os.link(tmp, self.path)     # atomic: fails if the lock exists
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _reclaim(self, holder: dict) -> None:
        """Move a dead process's lock aside; if a live lock took its place meanwhile, put it back."""
        aside = self.path.with_name(f".lock.{uuid.uuid4().hex[:12]}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return                      # another process reclaimed it first
        moved = _read(aside)
        if moved != holder:             # not the lock we judged stale: restore it
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
        else:
            self.log(f"reclaimed the lock of {self.path.parent}: process {holder.get('pid')} on "
                     f"{holder.get('host')} (started {holder.get('started', '?')}) is not running")
        aside.unlink(missing_ok=True)

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            if self._try_create():
                self.held = True
                return self
            holder = _read(self.path)
            if holder is None:
                continue                # released between our two calls: try again
            pid, host = holder.get("pid"), holder.get("host")
            if not isinstance(pid, int) or not host:
                raise RunLocked(f"run folder {self.path.parent} has an unreadable lock file {self.path}; "
                                "if no trainer uses this folder, delete it")
            if host != self.record["host"]:
                raise RunLocked(f"run folder {self.path.parent} is in use by process {pid} on host {host}; "
                                f"if that process is gone, delete {self.path}")
            pid_start = holder.get("pid_start")
            if _pid_alive(pid, pid_start if isinstance(pid_start, int) else None):
                raise RunLocked(f"run folder {self.path.parent} is in use by process {pid} on this host "
                                f"(started {holder.get('started', '?')}); one trainer per run folder")
            self._reclaim(holder)
        raise RunLocked(f"could not take the lock {self.path}: it keeps changing hands")

    def release(self) -> None:
        if self.held and (_read(self.path) or {}).get("pid") == self.record["pid"]:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
