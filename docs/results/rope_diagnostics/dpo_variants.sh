#!/usr/bin/env bash
# Run from the repository root after `pam-jax study --task rope --scale full` (it needs runs/study_rope). Results: results.json.
# DPO variants from rope SL seed 0, offline metrics only (tuned offline before any closed loop).
cd /work/main
R=runs/study_rope
DS=$R/tfds/deformpam/rope_finetune/1.0.0
run() {  # name, --set args...
  name=$1; shift
  out=runs/rope_var/$name
  if [ ! -f $out/offline.json ]; then
    echo "=== $name $(date -u +%T)"
    .venv/bin/pam-jax train --experiment sim_rope:dpo --no-progress --set data.data_dir=$R/tfds train.run_dir=$out \
      preference.init_from=$R/sl_s0 train.seed=0 data.seed=0 "$@" || return
    .venv/bin/pam-jax eval --task rope --sl $R/sl_s0 --dpo $out --pairs $DS --json > $out/offline.json.tmp && mv $out/offline.json.tmp $out/offline.json
    echo "=== $name done $(date -u +%T)"
  fi
}
run lr1e4 optim.lr=1e-4
run lowt preference.train_timestep_frac=0.1
run lr1e4_lowt optim.lr=1e-4 preference.train_timestep_frac=0.1
run lr1e4_lowt_ddpo optim.lr=1e-4 preference.train_timestep_frac=0.1 preference.loss=diffusion_dpo
run noann preference.annotator_pairs=false
# 5x the epochs of the best variant (`long_lr1e4_lowt_ddpo` in results.json)
run long_lr1e4_lowt_ddpo train.epochs=1000 optim.lr=1e-4 preference.train_timestep_frac=0.1 preference.loss=diffusion_dpo
