#!/usr/bin/env bash
# The accelerator benchmarks in one script (about 5 minutes on an H200), run from the
# repository root with the project on PYTHONPATH (no install needed: jax, flax, optax, orbax,
# chex and torch must be importable; websockets, tensorflow-datasets and mujoco are not needed).
# Results go to $OUT (default: bench_out/) as JSON, one file per benchmark; the format_* functions
# of pam_jax.bench.compute print them as tables.
set -u
OUT=${OUT:-bench_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
P="python3 -m pam_jax.cli --compile-cache off"
B="python3 benchmarks/bench.py --compile-cache off"   # with the PyTorch reference and traces
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee "$OUT/machine.txt"
python3 -c "import jax, flax, optax, torch; print('jax', jax.__version__, 'flax', flax.__version__, 'torch', torch.__version__, jax.devices())" 2>&1 | tee -a "$OUT/machine.txt"
run() {  # name timeout args...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" --json > "$OUT/$name.json" 2> "$OUT/$name.err"
  echo "$name: exit $? in $((SECONDS - t0)) s"; tail -n 3 "$OUT/$name.err"
}
run fps 60 $P bench fps
run sampler_f32 200 $B sampler --rows paper --torch-reference --trace
run train_f32 120 $B train --torch-reference --trace
run sampler_bf16 120 $P bench sampler --rows paper --dtype bfloat16
run train_bf16 90 $P bench train --dtype bfloat16
