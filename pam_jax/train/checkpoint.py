"""Orbax checkpoints: the train state plus a JSON record (config, normalisation, format version).

Restores go against an abstract target that carries the *current* mesh's shardings, so a run
saved on 8 devices restores on 1 and the reverse. Every failure is one clear `CheckpointError`.
"""
from __future__ import annotations

import json
import os
import pathlib
import time

import jax
import orbax.checkpoint as ocp

from pam_jax.train.errors import CheckpointError  # noqa: F401  (defined apart: the CLI catches it without orbax)

FORMAT_VERSION = 1


class CorruptCheckpoint(CheckpointError):
    """A checkpoint whose files cannot be read back (cut short, missing or garbled); `why` says
    which part, in plain words."""

    def __init__(self, message: str, why: str):
        super().__init__(message)
        self.why = why


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def abstract_like(tree, sharding):
    """ShapeDtypeStructs of `tree`, each carrying `sharding` (a restore target)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


class Checkpointer:
    def __init__(self, directory: str | pathlib.Path, *, keep: int = 3, create: bool = True):
        self.directory = pathlib.Path(directory).absolute()
        if not create and not self.directory.is_dir():
            raise CheckpointError(f"no checkpoint directory at {self.directory}")
        self.manager = ocp.CheckpointManager(
            self.directory,
            # a save cut short by a kill leaves a temporary folder: the trainer (create=True) removes it
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=create, cleanup_tmp_directories=create),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state, meta: dict, *, force: bool = False) -> None:
        meta = {**meta, "format_version": FORMAT_VERSION, "step": int(step)}
        self.manager.save(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=force,
        )

    def _step_or_latest(self, step: int | None) -> int:
        if step is None:
            step = self.latest_step()
            if step is None:
                raise CheckpointError(f"no checkpoint found in {self.directory}")
        elif step not in self.all_steps():
            raise CheckpointError(f"no checkpoint for step {step} in {self.directory} "
                                  f"(have {self.all_steps()})")
        return step

    def restore_meta(self, step: int | None = None) -> dict:
        step = self._step_or_latest(step)
        try:
            meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # noqa: BLE001 - any orbax/IO failure becomes one clear line
            raise CorruptCheckpoint(f"checkpoint step {step} in {self.directory}: unreadable record "
                                    f"({_first_line(e)}){self.way_out(step)}",
                                    "its record (meta) cannot be read: a file is cut short, missing or garbled") from None
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            found = meta.get("format_version") if isinstance(meta, dict) else None
            raise CheckpointError(f"checkpoint step {step} in {self.directory}: format version "
                                  f"{found}, this pam_jax reads {FORMAT_VERSION}")
        return meta

    def restore(self, abstract_state, step: int | None = None, *, expect: dict | None = None):
        """-> (state, meta). `expect` maps meta keys to required values (e.g. the model config)."""
        step = self._step_or_latest(step)
        meta = self.restore_meta(step)
        for key, want in (expect or {}).items():
            have = meta.get(key)
            if json.loads(json.dumps(want)) != have:
                raise CheckpointError(
                    f"checkpoint step {step} in {self.directory} was saved with a different {key}: "
                    f"{_diff(have, want)}")
        try:
            restored = self.manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
        except Exception as e:  # noqa: BLE001 - the record matched this model, so the arrays are damaged
            raise CorruptCheckpoint(f"checkpoint step {step} in {self.directory} is corrupt or does not "
                                    f"match this model ({_first_line(e)}){self.way_out(step)}",
                                    "its arrays cannot be read: a file is cut short, missing or garbled") from None
        return restored["state"], meta

    def restore_newest_intact(self, abstract_state, *, expect: dict | None = None, log=print,
                              chief: bool = True):
        """-> (state, meta) of the newest checkpoint that reads back, or None when none is left.
        A damaged newer one is moved aside to ``<step>.corrupt-<time>`` (by the chief process;
        kept for inspection, never deleted) with one line naming its step and why; a checkpoint
        of another model or config still stops the run (:class:`CheckpointError`)."""
        while (step := self.latest_step()) is not None:
            try:
                return self.restore(abstract_state, step, expect=expect)
            except CorruptCheckpoint as e:
                aside = self.directory / f"{step}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
                older = [s for s in self.all_steps() if s < step]
                _sync(f"pam_jax_corrupt_{step}_before")
                if chief:
                    os.rename(self.directory / str(step), aside)
                _sync(f"pam_jax_corrupt_{step}_after")
                then = f"resuming from step {max(older)}" if older else "no intact checkpoint left: starting over"
                log(f"skipped checkpoint step {step}: {e.why}; moved it aside to {aside}; {then}")
                self.manager.reload()
        return None

    def restore_subtree(self, abstract_subtree: dict, step: int | None = None):
        """-> (part of the saved state, meta): only the fields named in `abstract_subtree` (e.g.
        ``{"params": ...}``) are read, so inference needs no optimiser state."""
        step = self._step_or_latest(step)
        meta = self.restore_meta(step)
        manager = ocp.CheckpointManager(self.directory, item_handlers={"state": ocp.PyTreeCheckpointHandler()},
                                        options=ocp.CheckpointManagerOptions(create=False, read_only=True))
        try:
            args = ocp.args.PyTreeRestore(item=abstract_subtree, partial_restore=True,
                                          restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_subtree))
            restored = manager.restore(step, args=ocp.args.Composite(state=args))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"checkpoint step {step} in {self.directory} is corrupt or does not "
                                  f"match this model ({_first_line(e)}){self.way_out(step)}") from None
        finally:
            manager.close()
        return restored["state"], meta

    def way_out(self, step: int) -> str:
        """The hint of an unreadable checkpoint: which folder to delete to fall back to which step."""
        older = [s for s in self.all_steps() if s < step]
        where = self.directory / str(step)
        if older:
            return f"; to fall back to step {max(older)}, delete {where}"
        return f"; it is the only checkpoint: delete {self.directory} to start over"

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _diff(have, want, prefix="") -> str:
    if isinstance(have, dict) and isinstance(want, dict):
        for k in sorted(set(have) | set(want)):
            if have.get(k) != want.get(k):
                return _diff(have.get(k), want.get(k), f"{prefix}{k}.")
    return f"{prefix.rstrip('.') or 'value'} is {have!r} in the checkpoint, {want!r} now"
