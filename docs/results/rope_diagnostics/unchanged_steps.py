import json, glob, numpy as np
base = "docs/results/study_rope/eval/report"
for m in ["sl", "sl_random", "sl_explicit", "sl_explicit_sl", "dpo", "deformpam"]:
    same, n, fin = 0, 0, []
    for f in glob.glob(f"{base}/{m}/s*/*.json"):
        s = json.load(open(f))["scores"]
        d = np.diff(s); same += int((d == 0).sum()); n += len(d); fin.append(s[-1])
    print(f"{m:16s} unchanged steps {same/n:.2f}  final {np.mean(fin):.3f}  eps {len(fin)}")
