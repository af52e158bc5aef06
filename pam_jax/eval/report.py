"""Report formatting of the evaluators: tables (Markdown, text), strict JSON, plots."""
from __future__ import annotations

import json
import math
import pathlib

import numpy as np

from pam_jax.eval.closed_loop import paired_difference

NAMES = {"sl": "SL", "sl_random": "SL + random", "sl_explicit": "SL + explicit RAS (paper head)",
         "sl_explicit_sl": "SL + explicit RAS (SL-initialised head)", "dpo": "DPO alone",
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


strict_json = _strict_json    # public name (cached episodes, the study's JSON)


def _num(x: float, fmt: str = ".3f") -> str:
    return "n/a" if x is None or not np.isfinite(x) else format(x, fmt)


def _final_cell(s: dict) -> str:
    if s.get("train_seeds", 1) > 1:
        return f"{_num(s['final'])} [{_num(s['final_lo'])}, {_num(s['final_hi'])}]"
    return f"{_num(s['final'])} ± {_num(s['final_ci'])}"


def _diff_cells(d: dict | None) -> tuple[str, str]:
    if d is None:
        return "", ""
    if d["interval"] == "t":
        final = f"{d['mean']:+.3f} ± {_num(d['ci'])} (p={_num(d['p_value'], '.3g')})"
    else:
        final = f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
        if "lo_unpaired" in d:
            final += f" (seeds unpaired: [{d['lo_unpaired']:+.3f}, {d['hi_unpaired']:+.3f}])"
    success = (f"+{d['a_only']}/-{d['b_only']} (p={_num(d['mcnemar_p'], '.3g')})"
               if "mcnemar_p" in d else "")
    return final, success


def table_markdown(result: dict, baseline: str = "sl", extra: dict | None = None) -> str:
    """One row per method: final score, success rate, steps to success, and the paired
    difference against ``baseline`` (final score; success by McNemar); ``extra`` adds columns,
    {title: {method: cell}}."""
    extra = extra or {}
    methods = result["methods"]
    n = {r["summary"]["episodes"] for r in methods.values()}
    multi = any(r["summary"].get("train_seeds", 1) > 1 for r in methods.values())
    base = methods.get(baseline)
    bname = NAMES.get(baseline, baseline)
    rows = [f"Task `{result['task']}`, {'/'.join(map(str, sorted(n)))} episodes per method (training seeds x "
            f"start states). Final score: mean ± 95% Student-t half-width"
            + (", or [95% hierarchical bootstrap over training seeds and start states] for several seeds"
               if multi else "")
            + "; success rate [95% Wilson interval]; steps to success over the successful episodes (mean ± t). "
            f"vs {bname}: final score minus {bname}'s on the same start states, paired t interval and p-value"
            + (" (bootstrap interval [lo, hi] when either has several training seeds, with the training seeds "
               f"paired when both ran the same ones (seed i fine-tuned from, or selecting over, {bname} seed i), and "
               "then also the interval with each method's seeds resampled on their own; a method run on fewer "
               f"training seeds is compared with {bname}'s runs of the same seeds)" if multi else "")
            + f"; success: +a/-b = paired episodes (same start state and training seed) only the method / only "
            f"{bname} solved, exact McNemar p.",
            "", f"| method | seeds x states | final score | success rate | steps to success | final vs {bname} "
            f"| success vs {bname} |" + "".join(f" {t} |" for t in extra), "|---|---|---|---|---|---|---|"
            + "---|" * len(extra)]
    for m, r in methods.items():
        s = r["summary"]
        k = s["successes"]
        d = paired_difference(r["episodes"], base["episodes"]) if base is not None and m != baseline else None
        vs_final, vs_success = _diff_cells(d)
        steps = ("no success" if k == 0 else f"{s['steps_to_success']:.1f} (1 success)" if k == 1
                 else f"{s['steps_to_success']:.1f} ± {_num(s['steps_to_success_ci'], '.1f')} ({k} successes)")
        seeds = s.get("train_seeds", 1)
        rows.append(f"| {NAMES.get(m, m)} | {seeds} x {s['episodes'] // max(seeds, 1)} | {_final_cell(s)} | "
                    f"{100 * s['success']:.0f}% [{100 * s['success_lo']:.0f}, {100 * s['success_hi']:.0f}] | {steps} | "
                    f"{vs_final} | {vs_success} |" + "".join(f" {c.get(m, '')} |" for c in extra.values()))
    return "\n".join(rows)


def plot_differences(result: dict, path, baseline: str = "sl") -> str | None:
    """Horizontal bars: each method's final score minus the baseline's with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = result["methods"].get(baseline)
    if base is None:
        return None
    rows = [(NAMES.get(m, m), paired_difference(r["episodes"], base["episodes"]))
            for m, r in result["methods"].items() if m != baseline]
    rows = [(name, d) for name, d in rows if d is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(rows)))
    y = np.arange(len(rows))
    mean = np.array([d["mean"] for _, d in rows])
    lo = np.array([d["lo"] if np.isfinite(d["lo"]) else d["mean"] for _, d in rows])
    hi = np.array([d["hi"] if np.isfinite(d["hi"]) else d["mean"] for _, d in rows])
    ax.errorbar(mean, y, xerr=[mean - lo, hi - mean], fmt="o", capsize=3)
    ax.axvline(0.0, color="0.5", lw=1)
    ax.set_yticks(y)
    ax.set_yticklabels([name for name, _ in rows], fontsize=8)
    ax.set_xlabel(f"final score minus {NAMES.get(baseline, baseline)} (95% interval)")
    ax.set_title(result["task"], fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def write_report(result: dict, out_dir) -> dict:
    """JSON, Markdown, a metric-over-steps plot and a filmstrip of one episode -> their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    slim = {**result, "methods": {m: {**{k: v for k, v in r.items() if k != "episodes"},
                                      "episodes": [{k: v for k, v in e.items() if k != "frames"}
                                                   for e in r["episodes"]]}
                                  for m, r in result["methods"].items()}}
    if "sl" in result["methods"]:
        slim["vs_sl"] = {m: paired_difference(r["episodes"], result["methods"]["sl"]["episodes"])
                         for m, r in result["methods"].items() if m != "sl"}
    paths = {"json": out / "eval.json", "markdown": out / "eval.md", "curves": out / "metric_over_steps.png",
             "differences": out / "vs_sl.png", "filmstrip": out / "filmstrip.png"}
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

    if plot_differences(result, paths["differences"]) is None:
        paths.pop("differences")
    method = next(iter(result["methods"]))
    frames = result["methods"][method]["episodes"][0].get("frames")
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
