"""The persistent XLA compilation cache of the `pam-jax` command.

Compiling the selector or a train step takes seconds to tens of seconds; with the cache on, a
second run of the same command on the same machine loads the compiled programs from disk.
On by default, in ``$XDG_CACHE_HOME/pam_jax/xla`` (``~/.cache/pam_jax/xla``); ``--compile-cache
DIR`` or the ``PAM_JAX_COMPILE_CACHE`` environment variable choose another folder, and the
value ``off`` turns it off. Entries are keyed by the program, the jax/XLA versions and the
device, so a stale entry is never used.
"""
from __future__ import annotations

import os
import pathlib

ENV = "PAM_JAX_COMPILE_CACHE"
OFF = ("off", "none", "0", "false", "no")
MIN_COMPILE_S = 0.5  # programs that compile faster than this are not worth a disk entry


def default_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "pam_jax" / "xla"


def resolve(choice: str | None = None) -> pathlib.Path | None:
    """The cache folder: `choice` (the flag), else the environment variable, else the default;
    None when turned off."""
    value = choice if choice is not None else os.environ.get(ENV)
    if value is None or value.strip() == "":
        return default_dir()
    if value.strip().lower() in OFF:
        return None
    return pathlib.Path(value).expanduser()


def enable(choice: str | None = None) -> pathlib.Path | None:
    """Point jax's persistent compilation cache at :func:`resolve`'s folder (created if
    missing); -> the folder, or None when off. A folder that cannot be created is an error."""
    import jax

    path = resolve(choice)
    if path is None:
        jax.config.update("jax_compilation_cache_dir", None)
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--compile-cache: cannot create {path}: {e.strerror or e}") from None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
    return path
