"""DeformPAM on cloth with each SL seed's OWN preference data (run.sh) against SL and against the
8-seed study's DeformPAM (preferences from SL seed 0's rollouts for every seed), on the same 30
report start states. Reads runs/cloth_own/eval_s*/eval.json and the committed study episodes;
writes results.json next to this file. Run from the repository root."""
import glob
import json
import os
import pathlib

import numpy as np

from pam_jax.eval import stats

HERE = pathlib.Path(__file__).parent
BASE = "docs/results/study_cloth8/eval/report"


def episodes(method, seed):
    return {int(os.path.basename(f)[:-5]): json.load(open(f)) for f in glob.glob(f"{BASE}/{method}/s{seed}/*.json")}


out = {}
for path in sorted(glob.glob("runs/cloth_own/eval_s*/eval.json")):
    seed = int(pathlib.Path(path).parent.name.split("_s")[1])
    own = {e["seed"]: e for e in json.load(open(path))["methods"]["deformpam"]["episodes"]}
    sl, study = episodes("sl", seed), episodes("deformpam", seed)
    keys = sorted(own)
    a, b, c = (np.array([d[k]["final"] for k in keys]) for d in (own, sl, study))
    row = {"start_states": len(keys), "own_prefs": a.mean(), "sl": b.mean(), "seed0_prefs": c.mean()}
    for name, (x, y) in {"own_minus_sl": (a, b), "seed0_prefs_minus_sl": (c, b), "own_minus_seed0_prefs": (a, c)}.items():
        d = stats.paired_diff_ci(x, y)
        row[name] = {"mean": d.mean, "half_width": d.half_width, "p": d.p_value}
    row["success"] = {n: float(np.mean([d[k]["success"] for k in keys])) for n, d in
                      (("own_prefs", own), ("sl", sl), ("seed0_prefs", study))}
    out[seed] = row
    print(seed, f"own - SL {row['own_minus_sl']['mean']:+.3f} ± {row['own_minus_sl']['half_width']:.3f}",
          f"seed-0 prefs - SL {row['seed0_prefs_minus_sl']['mean']:+.3f}", row["success"])
(HERE / "results.json").write_text(json.dumps(out, indent=1, default=float) + "\n")
