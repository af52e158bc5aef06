"""Ctrl-C and SIGTERM that never land inside a training step.

A handler that raises `KeyboardInterrupt` can fire anywhere: after a jitted step has taken its
(donated) input buffers, the state to save is gone ("Array has been deleted"), and inside a JAX
gc callback the exception is swallowed and the run goes on. So :class:`DeferredSignals` only
records the signal; the loop checks :attr:`DeferredSignals.received` between steps, saves, and
raises :class:`Interrupted`. A second signal while the first is pending aborts at once, without
saving (for a user who will not wait for a long step to finish).

The `pam-jax` entry point calls :func:`install_early` in its first lines, before any heavy import
(this module imports only the standard library): from then on a signal during the imports, the
set-up or the first compile is recorded too, and :func:`check` (at the set-up's milestones)
turns it into :class:`Interrupted` with nothing to save. A :class:`DeferredSignals` entered later
inherits a signal the early handler recorded.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal after saving; `exit_code` is 128 + the signal number."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# "[process i/n] " in a multi-process run (set when it joins), so that the last line names its process
LINE_PREFIX = ""
_early: "DeferredSignals | None" = None


def set_line_prefix(prefix: str) -> None:
    global LINE_PREFIX
    LINE_PREFIX = f"{prefix} " if prefix else ""


def _abort(signum: int) -> None:
    print(f"{LINE_PREFIX}pam-jax: a second signal ({signal_name(signum)}): aborted at once, without saving "
          "(the newest checkpoint is kept)", file=sys.stderr, flush=True)
    os._exit(128 + signum)


class DeferredSignals:
    """Context manager: SIGINT/SIGTERM set :attr:`received` (the signal number) instead of
    raising. A second one calls `on_abort(signum)` (default: one line on stderr, then exit at
    once with 128 + signum; `before_abort` runs first, e.g. to release a lock). Outside the main
    thread, where Python cannot install handlers, it does nothing."""

    def __init__(self, *, on_abort: Callable[[int], None] | None = None,
                 before_abort: Callable[[], None] | None = None):
        self.received: int | None = None
        self._on_abort = on_abort or _abort
        self._before_abort = before_abort
        self._old: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum
            return
        if self._before_abort is not None:
            try:
                self._before_abort()
            except Exception:  # noqa: BLE001 - aborting must not fail
                pass
        self._on_abort(signum)

    def __enter__(self) -> "DeferredSignals":
        if _early is not None and self is not _early and _early.received:
            self.received = _early.received
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()


def install_early() -> DeferredSignals:
    """Record SIGINT/SIGTERM from now on (the first lines of the entry point); idempotent."""
    global _early
    if _early is None:
        _early = DeferredSignals().__enter__()
    return _early


def received() -> int | None:
    """The signal the early handler recorded, if any."""
    return _early.received if _early is not None else None


def check(when: str = "before training started") -> None:
    """Raise :class:`Interrupted` if a signal arrived already (a point with nothing to save)."""
    signum = received()
    if signum:
        raise Interrupted(f"interrupted {when} ({signal_name(signum)}); nothing to save", signum)


def hand_back(when: str = "before the command started") -> None:
    """For commands that handle Ctrl-C themselves: :func:`check`, then the handlers that were in
    place before :func:`install_early`."""
    global _early
    check(when)
    if _early is not None:
        _early.__exit__(None, None, None)
        _early = None
