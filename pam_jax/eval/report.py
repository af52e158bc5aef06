"""Report formatting of the evaluators: tables (Markdown, text), strict JSON, plots."""
from __future__ import annotations

import json
import math
import pathlib

import numpy as np

from pam_jax.eval.closed_loop import paired_difference

NAMES = {"sl": "SL", "sl_random": "SL + random", "sl_explicit": "SL + explicit RAS", "dpo": "DPO alone",
         "deformpam": "DeformPAM (SL + implicit RAS)", "oracle": "oracle best-of-N"}


def percent(acc: float | None) -> str:
    """An accuracy as printed: '63.9%', or 'n/a' when there was no pair to count."""
    return "n/a" if acc is None else f"{100 * acc:.1f}%"


def _strict_json(x):
    """Numbers and containers -> plain JSON values; NaN (no success, no pairs) becomes null."""
    if isinstance(x, dict):
        return {k: _strict_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict_json(v) for v in x]
    if isinstance(x, np.ndarray):
        return _strict_json(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if math.isnan(x) or math.isinf(x) else float(x)
    return x


def table_markdown(result: dict) -> str:
    n = {r["summary"]["episodes"] for r in result["methods"].values()}
    rows = [f"Task `{result['task']}`, {'/'.join(map(str, sorted(n)))} episodes per method: mean ± 95% CI "
            "(normal), success rate [95% Wilson interval]; steps to success over the successful episodes; "
            "final score minus SL's on the same start states (paired)",
            "", "| method | final score | success rate | steps to success | vs SL (paired) |", "|---|---|---|---|---|"]
    for m, r in result["methods"].items():
        s = r["summary"]
        k = s["successes"]
        d = paired_difference(r["episodes"], result["methods"]["sl"]["episodes"]) if "sl" in result["methods"] else None
        vs_sl = "" if m == "sl" or d is None else f"{d[0]:+.3f} ± {d[1]:.3f}"
        steps = ("no success" if k == 0 else f"{s['steps_to_success']:.1f} (1 success)" if k == 1
                 else f"{s['steps_to_success']:.1f} ± {s['steps_to_success_ci']:.1f} ({k} successes)")
        rows.append(f"| {NAMES.get(m, m)} | {s['final']:.3f} ± {s['final_ci']:.3f} | "
                    f"{100 * s['success']:.0f}% [{100 * s['success_lo']:.0f}, {100 * s['success_hi']:.0f}] | {steps} | {vs_sl} |")
    return "\n".join(rows)


def write_report(result: dict, out_dir) -> dict:
    """JSON, Markdown, a metric-over-steps plot and a filmstrip of one episode -> their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    slim = {**result, "methods": {m: {"summary": r["summary"],
                                      "episodes": [{k: v for k, v in e.items() if k != "frames"}
                                                   for e in r["episodes"]]}
                                  for m, r in result["methods"].items()}}
    paths = {"json": out / "eval.json", "markdown": out / "eval.md", "curves": out / "metric_over_steps.png",
             "filmstrip": out / "filmstrip.png"}
    paths["json"].write_text(json.dumps(_strict_json(slim), indent=2, allow_nan=False))
    paths["markdown"].write_text(table_markdown(result) + "\n")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for m, r in result["methods"].items():
        n = max(len(e["scores"]) for e in r["episodes"])
        padded = np.array([e["scores"] + [e["scores"][-1]] * (n - len(e["scores"])) for e in r["episodes"]])
        ax.plot(np.arange(n), padded.mean(0), label=NAMES.get(m, m))
    ax.set_xlabel("step")
    ax.set_ylabel("score")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(paths["curves"], dpi=100)
    plt.close(fig)

    method = next(iter(result["methods"]))
    frames = result["methods"][method]["episodes"][0]["frames"]
    if frames:
        fig, axes = plt.subplots(1, len(frames), figsize=(3.2 * len(frames), 3.2), squeeze=False)
        for ax, f in zip(axes[0], frames):
            ax.scatter(f["cloud"][:, 0], f["cloud"][:, 1], s=1, c="0.7")
            for k, c in enumerate(f["candidates"]):
                chosen = k == f["chosen"]
                ax.annotate("", xy=c[1, :2], xytext=c[0, :2],
                            arrowprops={"arrowstyle": "->", "color": "tab:red" if chosen else "tab:blue",
                                        "alpha": 1.0 if chosen else 0.35, "lw": 2 if chosen else 1})
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"{result['task']}, {NAMES.get(method, method)}: chosen (red) and rejected (blue)")
        fig.tight_layout()
        fig.savefig(paths["filmstrip"], dpi=90)
        plt.close(fig)
    else:
        paths.pop("filmstrip")
    return {k: str(v) for k, v in paths.items()}


def toy_report(r: dict, scenes: int, samples: int, png: str) -> str:
    return (f"{scenes} fresh scenes x {samples} samples:\n"
            f"  within 5% of the bar length of a true endpoint pair: {100 * r['within']:.1f}%  (target >= 90%)\n"
            f"  mode 0 (left end first): {100 * r['mode0']:.1f}%   mode 1: {100 * r['mode1']:.1f}%  "
            f"(target: each >= 20%)\n  plot: {png}")


def ras_report(r: dict, scenes: int) -> str:
    names = {"first": "SL (first candidate)", "random": "SL + random candidate",
             "implicit": "SL + implicit-reward RAS (DeformPAM)", "explicit": "SL + explicit-reward RAS"}
    rows = [f"{scenes} fresh scenes; the oracle prefers the left end first:",
            f"  {'method':40s} {'preferred order':>16s} {'correct pair':>13s}"]
    for mode, v in r.items():
        rows.append(f"  {names.get(mode, mode):40s} {100 * v['preferred']:15.1f}% {100 * v['correct']:12.1f}%")
    return "\n".join(rows)
