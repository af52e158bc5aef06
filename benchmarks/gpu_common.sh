# Sourced by the gpu_*.sh scripts (run from the repository root): $OUT (default bench_out/) with
# machine.txt and log.txt, the project on PYTHONPATH, and step NAME LIMIT COMMAND... which runs
# COMMAND under a time limit, appends its output to the log and prints its exit status.
set -u
OUT=${OUT:-bench_out}
mkdir -p "$OUT"
export OUT PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
LOG="$OUT/log.txt"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import jax, flax, torch; print('jax', jax.__version__, 'flax', flax.__version__, 'torch', torch.__version__, jax.devices())"
} > "$OUT/machine.txt" 2>&1
P="python3 benchmarks/gpu_probe.py"
step() {  # name limit command...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "=== $name" >> "$LOG"
  timeout "$limit" "$@" >> "$LOG" 2>&1
  echo "$name: exit $? in $((SECONDS - t0)) s" | tee -a "$LOG"
}
