#!/usr/bin/env bash
# The fused and stacked GPU forms measured in one run of about 5 minutes, from the repository
# root, the project on PYTHONPATH:
#   1. parity: the fused denoiser ("on", and "chain" with both networks stacked) picks what the
#      plain one picks (paper settings, two clouds);
#   2. the sampler rows (100/100, 10/10), each the decision from parameters prepared once:
#      plain (also the one graph), stacked networks, fused, fused chain with stacked networks,
#      all but the first traced; the eager PyTorch reference at the same settings; the optimised
#      HLO of the chain-stacked 10/10 decision.
# The traced kernels per call can be set against the counts of `python benchmarks/bench.py kernels`, made on a
# CPU for an H200 target (BUILD_NOTES: plain 622 / 4575, chain-stacked 156 / 875 at 10/10 / 100/100).
# `bash benchmarks/gpu_tune.sh` (about 5 minutes) times the other forms and block sizes.
# Results in $OUT (default bench_out/). If parity holds and a form wins, move it from
# benchmarks/experimental/fused.py into the package as a runtime default on accelerators; delete
# the forms that lose; record the figures in BUILD_NOTES.md.
. benchmarks/gpu_common.sh
step parity 110 env PROBE_TAG=parity $P parity
step fused 210 env PROBE_TAG=fused $P sampler hlo
gzip -f "$OUT"/hlo_*.txt 2>/dev/null
grep -h -E "^(parity|sampler|torch) " "$LOG" | cut -c1-240
