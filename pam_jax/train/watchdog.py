"""A multi-process run whose peer dies ends promptly, with one line.

Without it a survivor waits inside a collective until the distributed runtime's own heartbeat
gives up (minutes), then aborts with a C++ stack. Here every process bumps a counter of its own in
the coordinator's key-value store every second, from a daemon thread (it runs during compiles and
collectives, which release the GIL), and reads its peers' counters. A peer whose counter has not
moved for `stale_s` seconds (killed, or frozen), or a coordinator that no longer answers, ends
this process with one line on stderr and exit code 1; the newest checkpoint is kept. A process
that ends normally marks itself done first, so a peer that takes longer is not alarmed.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
import time

STALE_S = 15.0
PERIOD_S = 1.0
EXIT_CODE = 1
_stop = threading.Event()
_watching: dict = {}    # the running watch's settings (empty when none runs)


def _key(kind: str, pid: int) -> str:
    return f"pam_jax/watchdog/{kind}/{pid}"


def start(prefix: str = "", *, stale_s: float = STALE_S) -> bool:
    """Watch the peers of this multi-process run (no-op in a one-process run) -> whether it did."""
    from jax._src import distributed

    state = distributed.global_state
    if state.client is None or not state.num_processes or state.num_processes < 2:
        return False
    client, me, n = state.client, state.process_id, state.num_processes
    line = f"{prefix} " if prefix else ""
    _stop.clear()
    _watching.update(line=line, stale_s=stale_s)
    threading.Thread(target=_watch, args=(client, me, n, line, stale_s), name="pam_jax-watchdog",
                     daemon=True).start()
    atexit.register(stop, client, me)   # registered after jax's own shutdown hook, so it runs first
    return True


def stop(client=None, me: int | None = None) -> None:
    """This process ends normally: stop watching, and tell the peers not to wait for it."""
    _stop.set()
    if client is not None and me is not None:
        try:
            client.key_value_set(_key("done", me), "1", allow_overwrite=True)
        except Exception:  # noqa: BLE001 - the coordinator may be gone already
            pass


def fail(error: BaseException) -> None:
    """An unexpected error in a watched run ends this process with one line and exit code 1
    instead of a traceback followed by a shutdown that waits for its peers. A collective most often
    fails because a peer died: the watch is given the time to notice and name it first. Returns
    only when no watch runs."""
    if not _watching or _stop.is_set():
        return
    time.sleep(_watching["stale_s"] + 2 * PERIOD_S)    # the watch thread exits meanwhile if a peer is gone
    text = str(error).strip().splitlines()
    print(f"{_watching['line']}pam-jax: error: {type(error).__name__}: {text[0] if text else ''}; ending this "
          "process (the newest checkpoint is kept)", file=sys.stderr, flush=True)
    os._exit(EXIT_CODE)


def _die(line: str, why: str) -> None:
    if _stop.is_set():
        return
    print(f"{line}pam-jax: {why}; ending this process too (the newest checkpoint is kept)",
          file=sys.stderr, flush=True)
    os._exit(EXIT_CODE)


def _watch(client, me: int, n: int, line: str, stale_s: float) -> None:
    beat = 0
    seen = {p: (None, time.monotonic()) for p in range(n) if p != me}
    while not _stop.wait(PERIOD_S):
        beat += 1
        try:
            client.key_value_set(_key("alive", me), str(beat), allow_overwrite=True)
        except Exception:  # noqa: BLE001
            _die(line, "the coordinator (process 0) no longer answers: it died or its host went away")
            return
        now = time.monotonic()
        for peer, (value, since) in list(seen.items()):
            try:
                if _try_get(client, _key("done", peer)) is not None:
                    del seen[peer]          # ended normally
                    continue
                got = _try_get(client, _key("alive", peer))
            except Exception:  # noqa: BLE001
                _die(line, "the coordinator (process 0) no longer answers: it died or its host went away")
                return
            if got != value:
                seen[peer] = (got, now)
            elif now - since > stale_s:
                _die(line, f"process {peer}/{n} gave no sign of life for {stale_s:.0f} s: it died or hangs")
                return


def _try_get(client, key: str) -> str | None:
    try:
        return client.key_value_try_get(key)
    except Exception as e:  # noqa: BLE001 - "not found" is an answer; anything else is the link
        if "NOT_FOUND" in str(e) or "not found" in str(e).lower():
            return None
        raise
