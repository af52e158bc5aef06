"""Per training seed: DeformPAM fine-tuned on each SL seed's own preference data (a study run with
--per-seed-preferences) against the same study with SL seed 0's preferences for every seed, on
the same report start states; optionally the seed-paired hierarchical interval on a subset of
seeds, and a check against one-seed runs (runs/cloth_own/eval_sK/eval.json, which used the same
data and training, so must give the same episodes). Run from the repository root:

    python benchmarks/compare_preferences.py docs/results/study_cloth_pp docs/results/study_cloth8 --fresh 1 2 3 4 \
        --check 'runs/cloth_own/eval_s{}/eval.json'
    python benchmarks/compare_preferences.py docs/results/study_rope_pp docs/results/study_rope

Writes per_seed.json into the first folder."""
import argparse
import functools
import glob
import json
import os
import pathlib

import numpy as np

from pam_jax.eval import stats

ap = argparse.ArgumentParser()
ap.add_argument("own", type=pathlib.Path, help="results of the --per-seed-preferences study")
ap.add_argument("other", type=pathlib.Path, help="results of the same study with seed 0's preferences")
ap.add_argument("--fresh", type=int, nargs="*", default=[], help="seeds for a separate interval")
ap.add_argument("--check", help="one-seed runs to compare with, {} = the seed")
args = ap.parse_args()


@functools.cache
def finals(root, method, seed):
    eps = {int(os.path.basename(f)[:-5]): json.load(open(f))
           for f in glob.glob(f"{root}/eval/report/{method}/s{seed}/*.json")}
    return {k: (e["final"], e["success"]) for k, e in eps.items()}


settings = json.loads((args.other / "study.json").read_text())["settings"]   # the per-seed run may be unfinished
seeds, report = settings["train_seeds"], settings["report_episodes"]
out = {}
for seed in range(seeds):
    own, seed0, sl = (finals(args.own, "deformpam", seed), finals(args.other, "deformpam", seed),
                      finals(args.other, "sl", seed))
    keys = sorted(set(own) & set(seed0) & set(sl))
    if len(keys) < report:
        print(f"seed {seed}: {len(keys)}/{report} start states so far, skipped")
        continue
    a, b, c = (np.array([d[k][0] for k in keys]) for d in (own, seed0, sl))
    row = {"start_states": len(keys), "sl": c.mean(), "own_prefs": a.mean(), "seed0_prefs": b.mean()}
    for name, (x, y) in {"own_minus_sl": (a, c), "seed0_prefs_minus_sl": (b, c), "own_minus_seed0": (a, b)}.items():
        d = stats.paired_diff_ci(x, y)
        row[name] = {"mean": d.mean, "half_width": d.half_width, "p": d.p_value}
    row["success"] = {n: float(np.mean([d[k][1] for k in keys])) for n, d in
                      (("sl", sl), ("seed0_prefs", seed0), ("own_prefs", own))}
    check = pathlib.Path(args.check.format(seed)) if args.check else None
    if check is not None and check.exists():
        ep = {e["seed"]: e["final"] for e in json.load(open(check))["methods"]["deformpam"]["episodes"]}
        row["max_abs_diff_to_one_seed_check"] = float(max(abs(ep[k] - own[k][0]) for k in keys))
    out[seed] = row
    print(seed, f"SL {row['sl']:.3f}  own-prefs - SL {row['own_minus_sl']['mean']:+.3f} ± "
          f"{row['own_minus_sl']['half_width']:.3f}  seed-0-prefs - SL {row['seed0_prefs_minus_sl']['mean']:+.3f}",
          {k: f"{v:.0%}" for k, v in row["success"].items()}, row.get("max_abs_diff_to_one_seed_check", ""))
if out:
    g = np.array([r["own_minus_sl"]["mean"] for r in out.values()])
    h = np.array([r["seed0_prefs_minus_sl"]["mean"] for r in out.values()])
    sd = f" (SD {g.std(ddof=1):.3f})" if len(g) > 1 else ""
    print(f"mean over {len(g)} seeds: own {g.mean():+.3f}{sd}, seed-0 prefs {h.mean():+.3f}; "
          f"own > seed-0 prefs on {(g > h).sum()}/{len(g)} seeds")
# For cloth, seeds 5-7 were the one-seed check that suggested the per-seed study and seed 0 is
# unchanged by it (its preferences were already its own): seeds 1-4 alone are the evidence not
# seen before the study ran. The same seed-paired hierarchical bootstrap, on such a subset.
if args.fresh and all(k in out for k in args.fresh):
    keys = sorted(finals(args.own, "deformpam", args.fresh[0]))
    a = np.array([[finals(args.own, "deformpam", k)[j][0] for j in keys] for k in args.fresh])
    c = np.array([[finals(args.other, "sl", k)[j][0] for j in keys] for k in args.fresh])
    ci = stats.hierarchical_bootstrap_diff(a, c, paired_seeds=True)
    name = "seeds_" + "_".join(map(str, args.fresh))
    out[name] = {"mean": ci.estimate, "lo": ci.lo, "hi": ci.hi, "interval": "hierarchical bootstrap, seeds paired"}
    print(f"{name} only: own-prefs DeformPAM - SL {ci.estimate:+.3f} [{ci.lo:+.3f}, {ci.hi:+.3f}]")
(args.own / "per_seed.json").write_text(json.dumps(out, indent=1, default=float) + "\n")
