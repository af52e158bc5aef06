"""Simulator work spread over CPU threads.

MuJoCo's ``mj_step`` releases the GIL, and almost all of a primitive's time is spent in it, so
separate simulators stepped from separate threads run on separate cores. Two users:

* the closed loop steps every running episode of a batch together (each episode owns its
  simulator);
* the oracle tries K candidates from one saved state: the task's :meth:`~Task.replicas` (clones
  of the same model, restored to that state) each try a share of them.

Every result equals the sequential one bit for bit: a simulator is only ever touched by one
thread at a time, and a restored state steps exactly as the original (:meth:`Task.save_state`).
``workers=None`` means every core this process may run on; ``workers=1`` runs inline, in order.
"""
from __future__ import annotations

import concurrent.futures
import os
import threading
from typing import Callable, Iterable, TypeVar

__all__ = ["available_cores", "resolve_workers", "map_ordered"]

T = TypeVar("T")
R = TypeVar("R")

_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] | None = None     # (pid, size): a forked child builds its own pool


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                     # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None) -> int:
    """None -> :func:`available_cores`; otherwise a positive int, or a one-line ValueError."""
    if workers is None:
        return available_cores()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected a positive int or None, got {workers!r}")
    return workers


def _executor(size: int) -> concurrent.futures.ThreadPoolExecutor:
    global _pool, _pool_key
    with _lock:
        key = (os.getpid(), size)
        if _pool is None or _pool_key is None or _pool_key[0] != key[0] or _pool_key[1] < size:
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=size, thread_name_prefix="pam-sim")
            _pool_key = key
        return _pool


def map_ordered(fn: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> list[R]:
    """``[fn(x) for x in items]`` on up to ``workers`` threads: thread j runs items j, j + n,
    j + 2n, ... in turn (n threads), so at most n items run at once. An exception is raised once
    every thread has stopped. ``fn`` must not call :func:`map_ordered` itself (the pool's threads
    would wait on each other)."""
    items = list(items)
    n = min(resolve_workers(workers), len(items))
    if n <= 1:
        return [fn(x) for x in items]

    def share(j: int) -> list:
        return [fn(items[i]) for i in range(j, len(items), n)]

    futures = [_executor(n).submit(share, j) for j in range(n)]
    concurrent.futures.wait(futures)
    shares = [f.result() for f in futures]
    return [shares[i % n][i // n] for i in range(len(items))]
