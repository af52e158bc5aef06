"""A study's offline top-1 selection, pooled over its training seeds: each scorer family's
normalised gain (0 = random's pick, 1 = the best candidate's), the seeds weighted by their
held-out states, with a 95% normal interval from the seeds' own intervals (seeds independent;
each seed's Student-t half-width is read as 1.96 standard errors, which overstates its error a
little, so the pooled interval is conservative).

    python benchmarks/pooled_offline.py docs/results/prereg_cloth docs/results/prereg_granular

Reads ``stages/offline.json`` of each study folder: per seed, ``regret.scorers[name]`` holds
``norm_gain``, its 95% half-width ``norm_gain_ci`` and ``states``. Families: ``implicit`` (DPO,
``implicit_s<k>``), ``reward`` (the paper's explicit head) and ``reward_sl`` (SL-initialised).
One seed's held-out set has 10-20 states at the paper's budget, too few to tell a scorer from
random alone; the pooled figure is what the closed loop's selection efficiency compares with.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib

FAMILIES = ("implicit", "reward", "reward_sl")


def family(name: str) -> str | None:
    base = name.rsplit("_s", 1)[0] if name.rsplit("_s", 1)[-1].isdigit() else name
    return base if base in FAMILIES else None


def pooled(scorers: dict) -> dict:
    """{scorer: {norm_gain, norm_gain_ci, states}} -> {family: {seeds, states, norm_gain, lo, hi}}."""
    out = {}
    for fam in FAMILIES:
        rows = [v for k, v in scorers.items() if family(k) == fam and v.get("states")]
        if not rows:
            continue
        n = sum(r["states"] for r in rows)
        mean = sum(r["norm_gain"] * r["states"] for r in rows) / n
        se = math.sqrt(sum((r["states"] * r["norm_gain_ci"] / 1.96) ** 2 for r in rows)) / n
        out[fam] = {"seeds": len(rows), "states": n, "norm_gain": mean, "lo": mean - 1.96 * se,
                    "hi": mean + 1.96 * se}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", help="study result folders (holding stages/offline.json)")
    a = ap.parse_args(argv)
    result = {}
    for study in a.studies:
        rec = json.loads((pathlib.Path(study) / "stages" / "offline.json").read_text())
        result[study] = pooled(rec.get("result", rec)["regret"]["scorers"])
        for fam, r in result[study].items():
            print(f"{study}  {fam:9s}  {r['seeds']} seeds, {r['states']:3d} states: normalised gain "
                  f"{r['norm_gain']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]")
    return result


if __name__ == "__main__":
    main()
