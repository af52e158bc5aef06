#!/usr/bin/env bash
# Issue 12, the fused Pallas denoiser and the stacked networks on a GPU in one call (about 9
# minutes; give the call timeout_s 600), from the repository root, the project on PYTHONPATH:
#   1. parity: the fused denoiser (on, chain, chain with both networks stacked) picks what the
#      plain one picks (paper settings, two clouds);
#   2. the sampler rows (100/100, 10/10): plain, stacked, fused, fused chain, chain stacked,
#      chain bf16, then the block sizes (last, so that a timeout drops them first); each row the
#      decision from parameters prepared once, the plain row also the one graph; the main forms
#      traced; the optimised HLO of the chain-stacked 10/10 decision;
#   3. the CLI's paper rows (chain, stacked) against the eager PyTorch reference.
# Results in $OUT (default bench_out/). Make the fastest forms the default on accelerators
# (fused.mode, select.stack_models) if parity holds, and record the figures in BUILD_NOTES.md.
. docs/examples/gpu_common.sh
step parity 140 env PROBE_TAG=parity $P parity
step fused 290 env PROBE_TAG=fused $P sampler hlo
gzip -f "$OUT"/hlo_*.txt 2>/dev/null
CLI="python3 -m pam_jax.apps.cli --compile-cache off bench"
step cli-fused 130 sh -c "PAM_JAX_FUSED=chain PAM_JAX_STACK_MODELS=on $CLI sampler --rows paper --torch-reference --json > $OUT/sampler_fused_torch.json"
grep -h -E "^(parity|sampler) " "$LOG" | cut -c1-240
