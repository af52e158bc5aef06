import json, sys
from pam_jax.eval import pairs as pe
R = "runs/study_rope"; DS = f"{R}/tfds/deformpam/rope_finetune/1.0.0"
out = {}
for name, mode, run in [("implicit_s0", "implicit", f"{R}/dpo_s0"), ("reward_sl", "explicit", f"{R}/reward_sl")] + \
        [(f"var_{v}", "implicit", f"runs/rope_var/{v}") for v in sys.argv[1:]]:
    a = pe.pair_accuracy(f"{R}/sl_s0", run, DS, mode=mode, splits=("train",))
    out[name] = {k: a[k] for k in ("candidates", "vs_annotator", "pairs", "states")}
    print(name, out[name], flush=True)
json.dump(out, open("runs/rope_var/trainacc.json", "w"), indent=1)
