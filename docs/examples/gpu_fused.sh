#!/usr/bin/env bash
# Issue 12, the fused Pallas denoiser on a GPU in one call (about 6 minutes), from the repository
# root, the project on PYTHONPATH:
#   1. parity: the fused denoiser (on and chain) picks what the plain one picks (paper settings,
#      two clouds);
#   2. the sampler rows (100/100, 10/10) of the plain and fused denoisers and the fused block
#      sizes, the plain and fused rows traced; the optimised HLO of the fused 10/10 selector;
#   3. the CLI's paper rows with the fused denoiser against the eager PyTorch reference.
# Results in $OUT (default bench_out/). If the fused rows are faster, make the faster of "on" and
# "chain" the default on accelerators (fused.mode) and record the figures in BUILD_NOTES.md.
. docs/examples/gpu_common.sh
step parity 120 env PROBE_TAG=parity $P parity
step fused 230 env PROBE_TAG=fused $P sampler hlo
gzip -f "$OUT"/hlo_*.txt 2>/dev/null
CLI="python3 -m pam_jax.apps.cli --compile-cache off bench"
step cli-fused 90 sh -c "PAM_JAX_FUSED=on $CLI sampler --rows paper --torch-reference --json > $OUT/sampler_fused_torch.json"
grep -h -E "^(parity|sampler) " "$LOG" | cut -c1-220
