"""Offline top-1 selection metrics: what a scorer's argmax achieves on held-out preference rounds.

Reward-guided selection executes the candidate with the highest reward, so what predicts its
closed-loop effect is not pair accuracy but how good that one candidate is. The simulated
collection (:func:`pam_jax.sim.episodes.write_preference_round`) records in every finetune
sample's ``metadata.yaml`` (block ``sim``) the oracle's gain of each of the K sampled candidates:
the change of the task score when it is executed from that state (None where the simulator
refused it). For every held-out state (the validation/test episodes of the built dataset, which
the preference stages never train on) and every scorer, with g the K gains:

    regret          = max_k g_k - g[argmax score]                     (0 = the oracle's choice)
    normalised gain = (g[argmax score] - mean_k g_k) / (max_k g_k - mean_k g_k)

A refused candidate counts as gain 0: the simulator leaves the state as it was, so choosing it is
as good as doing nothing. The normalised gain is 1 for the oracle, 0 in expectation for random
selection and negative below it; states whose candidates all gain the same are left out of it
(``flat``). Random selection is reported by its expectation (regret best - mean, normalised
gain 0), first-candidate by candidate 0. A score tie goes to the lower index (``argmax``).

Where the gains come from: the TFDS dataset carries what training reads and the published data
have no gains, so rather than adding (and versioning) a feature, the gains are joined by
``sample_id`` (every record has it) from ``<src>/<sample_id>/metadata.yaml``, where ``src`` is the
sample folder the dataset was built from (its build report names it).
"""
from __future__ import annotations

import pathlib

import jax
import numpy as np

from pam_jax import preference
from pam_jax.data import layout
from pam_jax.data.sources import open_source, read_build_report
from pam_jax.eval import stats
from pam_jax.eval.pairs import held_out_batches

BASELINES = ("first", "random")


def top1(gains, scores, refused_gain: float = 0.0) -> tuple[float, float, bool]:
    """One state: gains (K,) (NaN = refused), scores (K,) -> (regret, normalised gain (NaN when
    every candidate gains the same), whether the argmax is a best candidate)."""
    g = np.asarray(gains, np.float64)
    s = np.asarray(scores, np.float64)
    if g.ndim != 1 or g.shape != s.shape or g.size == 0:
        raise ValueError(f"gains, scores: expected two (K,) arrays with K >= 1, got {g.shape} and {s.shape}")
    g = np.where(np.isfinite(g), g, refused_gain)
    chosen = g[int(np.argmax(s))]
    best, mean = g.max(), g.mean()
    norm = (chosen - mean) / (best - mean) if best - mean > 1e-12 else float("nan")
    return float(best - chosen), float(norm), bool(chosen >= best)


def random_top1(gains, refused_gain: float = 0.0) -> tuple[float, float, float]:
    """The expectation of `top1` under a uniformly random choice: (best - mean, 0 (NaN when flat),
    the fraction of best candidates)."""
    g = np.asarray(gains, np.float64)
    g = np.where(np.isfinite(g), g, refused_gain)
    best, mean = g.max(), g.mean()
    return float(best - mean), 0.0 if best - mean > 1e-12 else float("nan"), float(np.mean(g >= best))


def summarize(rows) -> dict:
    """[(regret, normalised gain, hit), ...] over states -> means with 95% Student-t half-widths."""
    if not rows:
        return {"states": 0, "regret": float("nan"), "regret_ci": float("nan"), "norm_gain": float("nan"),
                "norm_gain_ci": float("nan"), "top1": float("nan"), "flat": 0}
    reg = np.array([r[0] for r in rows], np.float64)
    norm = np.array([r[1] for r in rows], np.float64)
    ok = np.isfinite(norm)
    r_ci = stats.mean_ci(reg)
    n_ci = stats.mean_ci(norm[ok]) if ok.any() else stats.MeanCI(float("nan"), float("nan"))
    return {"states": len(rows), "regret": r_ci.mean, "regret_ci": r_ci.half_width,
            "norm_gain": n_ci.mean, "norm_gain_ci": n_ci.half_width,
            "top1": float(np.mean([float(r[2]) for r in rows])), "flat": int((~ok).sum())}


def read_gains(sample_dir) -> np.ndarray | None:
    """The oracle's per-candidate gains of one sample folder (NaN = refused), or None when its
    metadata has no ``sim.gains`` (e.g. the published data)."""
    _, body = layout.read_metadata(sample_dir)
    gains = (body.get("sim") or {}).get("gains")
    if gains is None:
        return None
    return np.array([np.nan if g is None else g for g in gains], np.float64)


def source_folder(dataset_dir, src_dir=None) -> pathlib.Path:
    """The sample folder `dataset_dir` was built from: `src_dir`, else its build report's."""
    if src_dir is None:
        src_dir = (read_build_report(dataset_dir) or {}).get("src")
        if not src_dir:
            raise ValueError(f"{dataset_dir}: no build report naming its sample folder; pass the folder (--gains SRC)")
    src = pathlib.Path(src_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such sample folder (the gains are read from its metadata.yaml files)")
    return src


def selection_regret(dataset_dir, scorers: dict, *, num_points: int = 0, src_dir=None,
                     splits=("validation", "test"), batch_size: int = 16, seed: int = 0,
                     refused_gain: float = 0.0) -> dict:
    """Top-1 regret of every scorer on the held-out states whose sample carries gains.

    `scorers`: name -> score(points (B, Np, 3), candidates (B, C, 2, 3), key) -> (B, C), task
    frame, candidates as :func:`pam_jax.preference.dpo_batch` orders them (the K sampled ones
    first). "first" and "random" are always added. -> {"states", "skipped" (held-out states
    without gains), "scorers": {name: summarize(...)}, "paired": {name: regret(name) -
    regret(random) paired over states (mean, half-width, p)}}."""
    src = source_folder(dataset_dir, src_dir)
    names = [*BASELINES, *scorers]
    rows = {n: [] for n in names}
    ids: dict[str, list[str]] = {}
    skipped = 0
    key = jax.random.key(seed)
    for i, (split, batch) in enumerate(held_out_batches(dataset_dir, num_points=num_points, splits=splits,
                                                        batch_size=batch_size, seed=seed)):
        if split not in ids:
            s = open_source(dataset_dir, split)
            ids[split] = [_text(s[j]["sample_id"]) for j in range(len(s))]
        gains = [read_gains(src / ids[split][int(r)]) for r in batch["record_index"]]
        keep = [j for j, g in enumerate(gains) if g is not None]
        skipped += len(gains) - len(keep)
        if not keep:
            continue
        b = preference.dpo_batch(batch)
        scores = {n: np.asarray(f(b["points"], b["candidates"], jax.random.fold_in(key, i)))
                  for n, f in scorers.items()}
        for j in keep:
            g = gains[j]
            k = len(g)
            if k > b["candidates"].shape[1]:
                raise ValueError(f"{ids[split][int(batch['record_index'][j])]}: {k} gains but only "
                                 f"{b['candidates'].shape[1]} candidates in the record")
            rows["first"].append(top1(g, -np.arange(k), refused_gain))
            rows["random"].append(random_top1(g, refused_gain))
            for n, sc in scores.items():
                rows[n].append(top1(g, sc[j, :k], refused_gain))
    base = [r[0] for r in rows["random"]]
    paired = {}
    for n in names:
        if n != "random" and len(base) > 1:
            d = stats.paired_diff_ci([r[0] for r in rows[n]], base)
            paired[n] = {"mean": d.mean, "ci": d.half_width, "p_value": d.p_value}
    return {"states": len(base), "skipped": skipped, "splits": list(splits),
            "scorers": {n: summarize(rows[n]) for n in names}, "regret_vs_random": paired}


def format_regret(result: dict) -> str:
    """A Markdown table of `selection_regret`'s result, scorers by name (the same table whether the
    result was just computed or read back from a record)."""
    rows = [f"Top-1 selection on {result['states']} held-out states ({'/'.join(result['splits'])}"
            + (f"; {result['skipped']} without recorded gains skipped" if result["skipped"] else "")
            + "): regret = best gain - gain of the argmax; normalised gain = (chosen - mean) / (best - mean) "
            "(1 = oracle, 0 = random); top-1 = argmax is a best candidate; mean ± 95% t half-width.", "",
            "| scorer | regret | normalised gain | top-1 | regret - random (paired, p) |", "|---|---|---|---|---|"]
    for n, s in sorted(result["scorers"].items()):
        d = result["regret_vs_random"].get(n)
        vs = "" if d is None else f"{d['mean']:+.4f} ± {d['ci']:.4f} (p={d['p_value']:.3g})"
        rows.append(f"| {n} | {s['regret']:.4f} ± {s['regret_ci']:.4f} | {s['norm_gain']:+.3f} ± "
                    f"{s['norm_gain_ci']:.3f} | {100 * s['top1']:.0f}% | {vs} |")
    return "\n".join(rows)


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
