#!/usr/bin/env bash
# Where the time goes on a GPU, in one run (at most 8.5 minutes), from the repository root:
#   1. geometry: FPS and kNN forms (benchmarks/gpu_probe.py geometry);
#   2. the code before this change, if an older copy of the package sits in .before/pam_jax
#      (`mkdir -p .before && git archive REV pam_jax | tar -x -C .before`; keep it out of git):
#      sampler rows and the train step, traced;
#   3. the current code and the current code without one change at a time, traced, and the
#      optimised HLO of the 10/10 selector;
#   4. the CLI's own benchmarks against the eager PyTorch reference (sampler, train step).
# Results in $OUT (default bench_out/): eight files at most (the device tool's limit).
. benchmarks/gpu_common.sh
step geometry 45 env PROBE_TAG=geometry $P geometry
# if the Pallas kNN does not build here, the probe's and the CLI's rows fall back to XLA's top-k
# (runtime.knn; the probe's rows say so either way)
KNN_OK=$(python3 -c "import json; r=json.load(open('$OUT/probe_geometry.json'))['geometry']; print(int(all('error' not in x for x in r if x['variant'].startswith('knn pallas q4 w8'))))" 2>/dev/null || echo 0)
[ "$KNN_OK" = 1 ] || { export PROBE_RUNTIME=knn=top_k; KNN_SET="--set runtime.knn=top_k"; }
[ -d .before/pam_jax ] && step before 95 env PYTHONPATH="$PWD/.before:$PWD" PROBE_TAG=before $P sampler train
step after 230 env PROBE_TAG=after $P sampler hlo train
CLI="python3 benchmarks/bench.py --compile-cache off"
step cli-sampler 90 sh -c "$CLI sampler --rows paper --torch-reference --json $KNN_SET > $OUT/sampler_torch.json"
step cli-train 55 sh -c "$CLI train --torch-reference --json $KNN_SET > $OUT/train_torch.json"
grep -h -E "^(geometry|sampler|train) " "$LOG" | cut -c1-200
