"""Run-folder logging: JSONL metrics, a progress bar and a loss-curve PNG."""
from __future__ import annotations

import json
import math
import os
import pathlib
import time

from tqdm.auto import tqdm


class MetricsWriter:
    """Appends one JSON object per line; a resumed run keeps appending to the same file."""

    def __init__(self, path: str | pathlib.Path):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, step: int, metrics: dict) -> None:
        record = {"step": int(step), "time": round(time.time(), 3),
                  **{k: float(v) for k, v in metrics.items()}}
        # one write(2) on an O_APPEND descriptor: a signal handler (Python's run between bytecodes)
        # or a kill lands before or after it, so a line is never left half written
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode())
        finally:
            os.close(fd)

    def truncate(self, step: int) -> int:
        """Keep the lines up to `step` (and any line cut short by a kill is dropped too): a new
        file, flushed to disk, renamed over the old one, so a crash leaves one or the other whole.
        -> the number of lines dropped."""
        if not self.path.exists():
            return 0
        lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        keep = []
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            s = row.get("step") if isinstance(row, dict) else None
            if isinstance(s, int) and not isinstance(s, bool) and s <= step:
                keep.append(line)
        if len(keep) == len(lines):
            return 0
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in keep))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        return len(lines) - len(keep)


def read_metrics(path: str | pathlib.Path) -> list[dict]:
    """The records of a metrics JSONL: objects with an integer step. Anything else (a line cut
    short by a kill, garbage written by another program, a non-numeric step) is skipped."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        step = row.get("step") if isinstance(row, dict) else None
        if isinstance(step, int) and not isinstance(step, bool):
            rows.append(row)
    return rows


def progress(total: int, initial: int, desc: str, enabled: bool = True):
    # TQDM_MININTERVAL (tqdm's own variable) sets the seconds between redraws; 1 by default
    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
                mininterval=float(os.environ.get("TQDM_MININTERVAL", 1.0)), disable=not enabled)


def plot_curve(metrics_path: str | pathlib.Path, png_path: str | pathlib.Path, key: str = "loss") -> pathlib.Path | None:
    """Plot `key` over steps from a metrics JSONL (the last record wins for a repeated step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_step = {r["step"]: float(r[key]) for r in read_metrics(metrics_path)
               if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
               and math.isfinite(r[key])}
    if not by_step:
        return None
    steps = sorted(by_step)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [by_step[s] for s in steps])
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    if min(by_step.values()) > 0:
        ax.set_yscale("log")  # DPO losses are negative: those stay linear
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png_path = pathlib.Path(png_path)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
