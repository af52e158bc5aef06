"""Summaries and comparisons of closed-loop results, with intervals that can rank methods.

A method's result entry is ``{"summary": ..., "episodes": [...], ...}``; each episode holds its
start ``seed``, ``final`` score, ``success`` and ``steps_to_success``, and optionally
``train_seed``: the training seed of the SL policy (and of the DPO model fine-tuned from it)
that ran it. Episodes without one count as training seed 0, so single-seed results work as
they are; a multi-seed result simply holds every seed's episodes in one list
(:func:`combine_seeds` builds one from per-seed results).

* :func:`summarize` -- final score: mean and Student-t half-width over the episodes, and
  ``final_lo``/``final_hi``: the same t interval for one training seed, a hierarchical
  bootstrap over training seeds and start states for several; success rate with its Wilson
  interval; steps to success (mean and t half-width over the successful episodes).
* :func:`paired_difference` -- method minus baseline on the same start states: the paired
  t interval and t-test p-value (finals averaged over each method's training seeds per
  start state), the exact McNemar test of paired success (pairs matched by training seed
  and start state), and with several training seeds on either side a hierarchical bootstrap
  interval of the difference (start states shared). When the two share training seeds, the
  baseline's other seeds are left out: a method run on SL seed 0 only (SL + random, the
  explicit baselines, the oracle) is compared with SL seed 0. When both ran the same several
  seeds, the seeds are paired too (training seed i of DPO and DeformPAM is the fine-tune of,
  and selects over, SL seed i), so the interval measures how the gain varies over seeds and
  not how far apart the SL seeds' own levels are; the interval with the seeds resampled per
  method is kept as ``lo_unpaired``/``hi_unpaired``.

All intervals are 95% and come from :mod:`pam_jax.eval.stats`.
"""
from __future__ import annotations

import numpy as np

from pam_jax.eval import stats

__all__ = ["episodes_by_seed", "summarize", "paired_difference", "selection_efficiency", "on_seeds", "combine_seeds",
           "method_entry", "LEVEL"]

LEVEL = 0.95
N_BOOT = 10000


def _train_seed(e: dict) -> int:
    return int(e.get("train_seed") or 0)


def episodes_by_seed(episodes: list[dict]) -> dict[int, list[dict]]:
    """{training seed: its episodes} (episodes without ``train_seed`` are seed 0), seeds sorted."""
    out: dict[int, list[dict]] = {}
    for e in episodes:
        out.setdefault(_train_seed(e), []).append(e)
    return dict(sorted(out.items()))


def _mean_ci(values) -> tuple[float, float]:
    """Mean and Student-t half-width of the non-None values; (nan, nan) when there is none,
    half-width nan for one value."""
    x = [float(v) for v in values if v is not None]
    if not x:
        return float("nan"), float("nan")
    return tuple(stats.mean_ci(x, LEVEL))


def summarize(episodes: list[dict]) -> dict:
    n = len(episodes)
    groups = episodes_by_seed(episodes)
    final, half = _mean_ci([e["final"] for e in episodes])
    if len(groups) > 1:
        boot = stats.hierarchical_bootstrap([[e["final"] for e in g] for g in groups.values()],
                                            n_boot=N_BOOT, level=LEVEL, seed=0)
        lo, hi, interval = boot.lo, boot.hi, "hierarchical bootstrap"
    else:
        lo, hi, interval = final - half, final + half, "t"
    k = sum(bool(e["success"]) for e in episodes)
    s_lo, s_hi = stats.wilson_interval(k, n, LEVEL) if n else (float("nan"), float("nan"))
    steps, steps_half = _mean_ci([e["steps_to_success"] for e in episodes])
    return {"episodes": n, "train_seeds": len(groups), "final": final, "final_ci": half,
            "final_lo": lo, "final_hi": hi, "final_interval": interval,
            "seed_finals": {s: float(np.mean([e["final"] for e in g])) for s, g in groups.items()},
            "successes": k, "success": k / n if n else float("nan"), "success_lo": s_lo, "success_hi": s_hi,
            "steps_to_success": steps, "steps_to_success_ci": steps_half}


def paired_difference(episodes: list[dict], baseline: list[dict]) -> dict | None:
    """``episodes`` minus ``baseline`` over the start states both ran (see the module
    docstring); None when they share no start state. Keys: n (start states), mean, ci
    (t half-width), p_value (paired t-test), lo, hi (the reported interval: t for one training
    seed on each side, else the hierarchical bootstrap, seed-paired when both ran the same
    seeds, with lo_unpaired, hi_unpaired), interval, seeds (method's, baseline's),
    mcnemar_p, a_only (method succeeded, baseline failed), b_only, success_pairs."""
    a_by, b_by = episodes_by_seed(episodes), episodes_by_seed(baseline)
    if set(a_by) & set(b_by):              # the baseline's runs of the same training seeds only
        b_by = {k: v for k, v in b_by.items() if k in a_by}
        baseline = [e for v in b_by.values() for e in v]
    a_fin = {s: {e["seed"]: float(e["final"]) for e in g} for s, g in a_by.items()}
    b_fin = {s: {e["seed"]: float(e["final"]) for e in g} for s, g in b_by.items()}
    starts_a = set().union(*(set(d) for d in a_fin.values())) if a_fin else set()
    starts_b = set().union(*(set(d) for d in b_fin.values())) if b_fin else set()
    common = sorted(starts_a & starts_b)
    if not common:
        return None

    def per_state(fin):
        return np.array([np.mean([d[s] for d in fin.values() if s in d]) for s in common])

    pd = stats.paired_diff_ci(per_state(a_fin), per_state(b_fin), LEVEL)
    out = {"n": len(common), "mean": pd.mean, "ci": pd.half_width, "p_value": pd.p_value,
           "lo": pd.mean - pd.half_width, "hi": pd.mean + pd.half_width, "interval": "t",
           "seeds": (len(a_fin), len(b_fin))}
    if len(a_fin) > 1 or len(b_fin) > 1:
        full = [s for s in common if all(s in d for d in a_fin.values()) and all(s in d for d in b_fin.values())]
        if full:
            rows_a = [[d[s] for s in full] for d in a_fin.values()]
            rows_b = [[d[s] for s in full] for d in b_fin.values()]
            boot = stats.hierarchical_bootstrap_diff(rows_a, rows_b, n_boot=N_BOOT, level=LEVEL, seed=0)
            out.update(lo=boot.lo, hi=boot.hi, interval="hierarchical bootstrap", bootstrap_states=len(full))
            if list(a_fin) == list(b_fin):     # seed i of the method was built on the baseline's seed i
                paired = stats.hierarchical_bootstrap_diff(rows_a, rows_b, n_boot=N_BOOT, level=LEVEL, seed=0,
                                                           paired_seeds=True)
                out.update(lo=paired.lo, hi=paired.hi, interval="hierarchical bootstrap, seeds paired",
                           lo_unpaired=boot.lo, hi_unpaired=boot.hi)
    a_ok = {(_train_seed(e), e["seed"]): bool(e["success"]) for e in episodes}
    b_ok = {(_train_seed(e), e["seed"]): bool(e["success"]) for e in baseline}
    keys = sorted(set(a_ok) & set(b_ok))
    if keys:
        mc = stats.mcnemar_exact([a_ok[k] for k in keys], [b_ok[k] for k in keys])
        out.update(mcnemar_p=mc.p_value, a_only=mc.a_only, b_only=mc.b_only, success_pairs=len(keys))
    return out


def on_seeds(episodes: list[dict], seeds) -> list[dict]:
    """The episodes of the given training seeds."""
    keep = set(seeds)
    return [e for e in episodes if _train_seed(e) in keep]


def selection_efficiency(method: list[dict], sl: list[dict], oracle: list[dict]) -> dict | None:
    """(method - SL) / (oracle - SL): the share of the oracle's gain over SL (the best of the
    same candidates) that a selection method reaches, over the training seeds and start states
    all three ran; a hierarchical bootstrap interval with seeds and start states shared (seed i
    of each selects over SL seed i's candidates). None when they share no seed and start state."""
    by = [episodes_by_seed(x) for x in (method, sl, oracle)]
    seeds = sorted(set(by[0]) & set(by[1]) & set(by[2]))
    fin = [{k: {e["seed"]: float(e["final"]) for e in b[k]} for k in seeds} for b in by]
    starts = sorted(set.intersection(*(set(f[k]) for f in fin for k in seeds))) if seeds else []
    if not starts:
        return None
    rows = [[[f[k][st] for st in starts] for k in seeds] for f in fin]
    boot = stats.hierarchical_bootstrap_ratio(*rows, n_boot=N_BOOT, level=LEVEL, seed=0)
    return {"estimate": boot.estimate, "lo": boot.lo, "hi": boot.hi, "seeds": len(seeds), "states": len(starts),
            "interval": "hierarchical bootstrap, seeds paired"}


def combine_seeds(results: dict[int, dict]) -> dict:
    """{training seed: evaluate() result} -> one result whose episodes carry ``train_seed``;
    each method's entry gets its pooled ``summary`` and ``seeds`` {seed: per-seed summary}."""
    if not results:
        raise ValueError("combine_seeds: no results")
    first = next(iter(results.values()))
    out = {k: v for k, v in first.items() if k not in ("methods", "runs")}
    out["runs"] = {int(s): r.get("runs") for s, r in results.items()}
    methods: dict[str, list[dict]] = {}
    for s, r in results.items():
        for m, entry in r["methods"].items():
            methods.setdefault(m, []).extend({**e, "train_seed": int(s)} for e in entry["episodes"])
    out["methods"] = {m: method_entry(eps) for m, eps in methods.items()}
    return out


def method_entry(episodes: list[dict]) -> dict:
    """A method's result entry from its episodes (any number of training seeds)."""
    groups = episodes_by_seed(episodes)
    return {"summary": summarize(episodes), "episodes": episodes,
            "seeds": {s: summarize(g) for s, g in groups.items()} if len(groups) > 1 else {}}
