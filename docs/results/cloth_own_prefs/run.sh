#!/usr/bin/env bash
# Run from the repository root after the 8-seed cloth study (runs/study_cloth8): bash run.sh SEED.
# One-seed check of "off-policy preferences" on cloth: SL seed S fine-tuned on preferences collected
# from its OWN rollouts (the study used SL seed 0's for every seed), then DeformPAM on the report set.
cd /work/main
S=${1:-5}
R=runs/study_cloth8
O=runs/cloth_own
if [ ! -d $O/tfds_s$S ]; then
  .venv/bin/python - <<PY
from pam_jax.workflows.collect import collect
from pam_jax.data.build import build
r = collect("cloth", "$R/sl_s$S", "$O/src_s$S", states=100, num_candidates=8, num_points=2000,
            steps_per_episode=10, max_steps=None, label_noise=0.0, progress=False)
print({k: r[k] for k in ("states", "episodes", "stride")})
build("$O/src_s$S", task="tshirt_short", kind="finetune", data_dir="$O/tfds_s$S", overwrite=True, progress=False)
PY
fi
.venv/bin/pam-jax train --experiment sim_cloth:dpo --no-progress --set data.data_dir=$O/tfds_s$S train.run_dir=$O/dpo_s$S \
  train.seed=$S data.seed=$S preference.init_from=$R/sl_s$S
.venv/bin/pam-jax eval --task cloth --sl $R/sl_s$S --dpo $O/dpo_s$S --methods deformpam --episodes 30 --seed 2000 \
  --out $O/eval_s$S --json > $O/eval_s$S.json
echo "=== done $(date -u +%T)"
