#!/usr/bin/env bash
# Where does rope SL lose to the expert? data (40 -> 160 expert episodes), tokens (32 -> 64).
cd /work/main
B=runs/rope_sl
if [ ! -d $B/tfds160 ]; then
  .venv/bin/python - <<'PY'
from pam_jax.sim.episodes import write_expert_episodes
from pam_jax.data.build import build
r = write_expert_episodes("rope", "runs/rope_sl/src160", episodes=160, num_points=2000, if_exists="skip", progress=False)
print(r)
print(build("runs/rope_sl/src160", task="rope", kind="supervised", data_dir="runs/rope_sl/tfds160", overwrite=True, progress=False))
PY
fi
sl() {  # name data_dir --set...
  name=$1; dd=$2; shift 2
  if [ ! -f $B/$name/eval_done ]; then
    echo "=== $name $(date -u +%T)"
    .venv/bin/pam-jax train --experiment sim_rope --no-progress --set data.data_dir=$dd train.run_dir=$B/$name train.steps=4000 "$@" || return
    .venv/bin/pam-jax eval --task rope --sl $B/$name --methods sl --episodes 20 --seed 1000 --out $B/$name/eval --json > $B/$name/eval.json && touch $B/$name/eval_done
    echo "=== $name done $(date -u +%T)"
  fi
}
# the study's SL seed 0 on the same start states
if [ ! -f $B/base_eval.json ]; then
  .venv/bin/pam-jax eval --task rope --sl runs/study_rope/sl_s0 --methods sl --episodes 20 --seed 1000 --out $B/base_eval --json > $B/base_eval.json
fi
sl d160 $B/tfds160
sl t64 runs/study_rope/tfds model.num_tokens=64
