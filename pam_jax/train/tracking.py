"""Experiment tracking: interval means of the step metrics, and where they go (``train.tracker``).

Every run writes ``metrics.jsonl`` (the loss plot and the tools read it). ``train.tracker``
"tensorboard" (the ``tensorboard`` extra: tensorboardX) or "wandb" (the ``wandb`` extra) also
sends every record there; wandb's project and entity come from ``train.wandb_project`` and
``train.wandb_entity``, else from $WANDB_PROJECT / $WANDB_ENTITY. The tracker's run id lives in
``<run>/tracker.json``, so a resumed run continues the same tracked run (the same wandb run, the
same TensorBoard folder).

A run that starts at step S (0, or the checkpoint it resumes from) first drops every record past S:
`metrics.jsonl` is rewritten without them (a new file renamed over the old one), TensorBoard gets a
new event file whose purge step S + 1 hides the old events past S. wandb ignores a step at or below
one it has seen, so there it keeps the first copy of such steps (no step twice, but the old values).
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import uuid

from pam_jax.data.io import write_json_atomic
from pam_jax.train.logging import MetricsWriter

TRACKERS = ("jsonl", "tensorboard", "wandb")


class IntervalMeans:
    """Running sums of per-step metrics between two log lines, in float64 and step order.
    Its state goes into each checkpoint, so a run resumed mid-interval logs the same means as one
    that never stopped."""

    def __init__(self, state: dict | None = None):
        state = state or {}
        self.sums: dict[str, float] = {k: float(v) for k, v in state.get("sums", {}).items()}
        self.count = int(state.get("count", 0))

    def add(self, steps: list[dict]) -> None:
        for m in steps:
            for k, v in m.items():
                self.sums[k] = self.sums.get(k, 0.0) + float(v)
            self.count += 1

    def means(self) -> dict[str, float]:
        return {k: v / self.count for k, v in self.sums.items()} if self.count else {}

    def reset(self) -> None:
        self.sums, self.count = {}, 0

    def state(self) -> dict:
        return {"sums": dict(self.sums), "count": self.count}


class Tracker:
    """Writes records to metrics.jsonl and, when asked, to TensorBoard or wandb."""

    def __init__(self, kind: str, run_dir, *, config: dict | None = None, log=print, start_step: int = 0,
                 wandb_project: str = "", wandb_entity: str = ""):
        if kind not in TRACKERS:
            raise ValueError(f"unknown train.tracker {kind!r}: expected one of {TRACKERS}")
        self.kind, self.run_dir = kind, pathlib.Path(run_dir)
        self.jsonl = MetricsWriter(self.run_dir / "metrics.jsonl")
        dropped = self.jsonl.truncate(start_step)
        if dropped:
            log(f"metrics.jsonl: dropped {dropped} record(s) past step {start_step}, written after its "
                "checkpoint by a run that did not save again")
        self.run_id = _run_id(self.run_dir, kind)
        self._tb = self._wandb = None
        if kind == "tensorboard":
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                raise ImportError("train.tracker=tensorboard needs tensorboardX: pip install 'pam-jax[tensorboard]'") from None
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard" / self.run_id),
                                     purge_step=start_step + 1)
        elif kind == "wandb":
            try:
                import wandb
            except ImportError:
                raise ImportError("train.tracker=wandb needs wandb: pip install 'pam-jax[wandb]'") from None
            where = wandb_destination(wandb_project, wandb_entity)
            self._wandb = wandb.init(id=self.run_id, resume="allow", dir=str(self.run_dir), config=config,
                                     name=self.run_dir.name, **where)
        if kind != "jsonl":
            log(f"tracking with {kind}, run id {self.run_id} ({self.run_dir / 'tracker.json'})")

    def write(self, step: int, record: dict) -> None:
        record = {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        self.jsonl.write(step, record)
        if self._tb is not None:
            for k, v in record.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(record, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def wandb_destination(project: str = "", entity: str = "") -> dict:
    """``wandb.init``'s project and entity: the config's (``train.wandb_project``,
    ``train.wandb_entity``), else $WANDB_PROJECT / $WANDB_ENTITY, else project "pam_jax" and
    wandb's default entity. (An argument to ``wandb.init`` overrides wandb's own reading of the
    environment, so the environment is read here.)"""
    out = {"project": project or os.environ.get("WANDB_PROJECT") or "pam_jax"}
    entity = entity or os.environ.get("WANDB_ENTITY")
    if entity:
        out["entity"] = entity
    return out


def _run_id(run_dir: pathlib.Path, kind: str) -> str:
    """The run id kept in run_dir/tracker.json (made on the first start, read on every resume)."""
    path = run_dir / "tracker.json"
    if path.exists():
        try:
            saved = json.loads(path.read_text())
            if isinstance(saved.get("id"), str) and saved["id"]:
                if saved.get("tracker") != kind:   # the same id serves any tracker; say which ran last
                    write_json_atomic(path, {**saved, "tracker": kind})
                return saved["id"]
        except (ValueError, AttributeError):
            pass                                    # unreadable: a new id (the old tracked run is lost)
    run_id = f"{run_dir.name}-{uuid.uuid4().hex[:8]}"
    write_json_atomic(path, {"tracker": kind, "id": run_id})
    return run_id
