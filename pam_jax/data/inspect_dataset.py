"""Look at a built dataset: counts, per-field shapes, and a PNG of a few samples seen from above
(the cloud in the task frame with the action points, the annotated alternatives and, for
finetune data, the candidate actions)."""
from __future__ import annotations

import pathlib

import numpy as np

from pam_jax.data import pipeline, sources, stats


def _text(v) -> str:
    return v.decode() if isinstance(v, (bytes, np.bytes_)) else str(v)


def field_summary(ds_dir, split: str = "train", max_records: int | None = 2000) -> dict:
    """{field: {"dtype", "shape"}} where variable axes are given as "min..max" over the
    (first ``max_records``) records of ``split``; plus ``records`` and ``action_types``."""
    src = sources.open_source(ds_dir, split)
    n = len(src) if max_records is None else min(len(src), max_records)
    shapes: dict[str, list] = {}
    dtypes: dict[str, str] = {}
    types: dict[str, int] = {}
    for i in range(n):
        r = src[i]
        for k, v in r.items():
            a = np.asarray(v)
            dtypes[k] = "text" if a.dtype.kind in "SUO" else str(a.dtype)
            shapes.setdefault(k, []).append(a.shape)
        t = _text(r["action_type"])
        types[t] = types.get(t, 0) + 1
    out = {}
    for k, lst in shapes.items():
        dims = []
        for axis in range(len(lst[0])):
            vals = [s[axis] for s in lst]
            lo, hi = min(vals), max(vals)
            dims.append(str(lo) if lo == hi else f"{lo}..{hi}")
        out[k] = {"dtype": dtypes[k], "shape": "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"}
    return {"records": n, "fields": out, "action_types": types}


def render(ds_dir, png, *, split: str = "train", num: int = 4, seed: int = 0,
           augment: bool = False) -> pathlib.Path:
    """Draw ``num`` samples of ``split`` (task frame, as the pipeline makes them) from above."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ds_dir = pathlib.Path(ds_dir)
    task, kind = sources.task_kind_of(ds_dir)
    cfg = pipeline.sample_config(task, kind, shapes=stats.dataset_shapes(ds_dir), augment=augment)
    src = sources.open_source(ds_dir, split)
    idx = np.linspace(0, len(src) - 1, min(num, len(src))).round().astype(int)
    cols = len(idx)
    fig, axes = plt.subplots(1, cols, figsize=(4.2 * cols, 4.4), squeeze=False)
    for ax, i in zip(axes[0], idx):
        rec = src[int(i)]
        s = pipeline.make_sample(rec, cfg, np.random.default_rng([seed, int(i)]))
        p = s["points"]
        ax.scatter(p[:, 0], p[:, 1], c=p[:, 2], s=2, cmap="viridis", alpha=0.5, linewidths=0)
        acts, valid = s["actions"], s["action_valid"]
        for m in range(1, acts.shape[0]):
            if valid[m]:
                a = acts[m]
                ax.plot(a[:, 0], a[:, 1], "-", color="tab:orange", lw=0.8, alpha=0.6)
                ax.plot(a[0, 0], a[0, 1], "o", color="tab:orange", ms=3, alpha=0.6)
        if valid[0]:
            a = acts[0]
            ax.annotate("", xy=a[1, :2], xytext=a[0, :2],
                        arrowprops=dict(arrowstyle="->", color="tab:red", lw=1.8))
            ax.plot(a[0, 0], a[0, 1], "o", color="tab:red", ms=7, label="action point 1")
            ax.plot(a[1, 0], a[1, 1], "^", color="tab:red", ms=7, label="action point 2")
        if kind == "finetune":
            c, cv = s["candidate_points"], s["candidate_valid"]
            c = c[cv]
            for k in range(0, c.shape[0] - 1, 2):
                ax.plot(c[k:k + 2, 0], c[k:k + 2, 1], "--", color="tab:green", lw=0.8)
            ax.plot(c[:, 0], c[:, 1], "x", color="tab:green", ms=5, label="candidates")
        ax.set_aspect("equal")
        ax.set_title(f"{_text(rec['sample_id'])}\nepisode {int(rec['episode_id'])}, "
                     f"{_text(rec['action_type'])}, {int(valid.sum())} poses", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle(f"deformpam/{task}_{kind} [{split}] seen from above (task frame, "
                 f"{'augmented' if augment else 'not augmented'})", fontsize=10)
    fig.tight_layout()
    png = pathlib.Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
