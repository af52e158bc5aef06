#!/usr/bin/env bash
# Issue 12, the second GPU call if device time is left after gpu_fused.sh (about 3 minutes; give
# it timeout_s 240): the fused chain form without stacking, chain stacked in bfloat16, and the
# fused kernels' row block (16) and warps (8), at 100/100 and 10/10, and chain stacked with the
# 10/10 loop unrolled (168 launches counted for an H200 against 179), and the plain form with the
# 10/10 loop unrolled (no while loop left: XLA's command buffers, on by default for straight-line
# kernels, may then launch the whole decision as a few CUDA graphs). Results in $OUT.
. docs/examples/gpu_common.sh
step tune 200 env PROBE_TAG=tune $P sampler
grep -h -E "^sampler " "$LOG" | cut -c1-240
