"""The kernel forms a graph is traced with: the `runtime` section of the config
(:class:`pam_jax.config.RuntimeConfig`).

Whoever builds a graph (the selector, the training steps, the samplers) passes its
RuntimeConfig explicitly and traces the model inside :func:`traced` (or :func:`using`); the
geometry and the layers read :func:`active` when they trace. Entered inside the jitted function,
the choice is part of what that function was built from, so a compiled graph never mixes forms.
Outside any scope the defaults hold ("auto": the backend's forms).
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable

from pam_jax.config import RuntimeConfig, validate_runtime

_ACTIVE: list[RuntimeConfig] = [RuntimeConfig()]


@contextlib.contextmanager
def using(runtime: RuntimeConfig | None):
    """Within it, graphs are traced with `runtime`'s forms (None: the enclosing ones)."""
    _ACTIVE.append(_ACTIVE[-1] if runtime is None else validate_runtime(runtime))
    try:
        yield
    finally:
        _ACTIVE.pop()


def active() -> RuntimeConfig:
    """The RuntimeConfig of the graph being traced."""
    return _ACTIVE[-1]


def traced(fn: Callable, runtime: RuntimeConfig | None) -> Callable:
    """`fn` traced with `runtime`'s forms: wrap a function before jitting it."""
    if runtime is not None:
        validate_runtime(runtime)

    @functools.wraps(fn)
    def inner(*args, **kwargs):
        with using(runtime):
            return fn(*args, **kwargs)

    return inner
