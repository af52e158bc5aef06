#!/usr/bin/env bash
# The GPU forms and settings gpu_fused.sh leaves out, in one run of about 5 minutes. First the plain and stacked forms with cuBLAS matmuls instead of Triton ones
# (XLA_FLAGS=--xla_gpu_enable_triton_gemm=false: the GELU goes into the matmul's epilogue; counted
# for an H200, 42 launches per DDIM step instead of 44, plain 574 / 4349 and stacked 523 / 4308 at
# 10/10 / 100/100) and the plain 10/10 loop unrolled with them. Then the fused chain form without
# stacking, chain stacked in bfloat16, the fused kernels' row block (16) and warps (8), at 100/100
# and 10/10, chain stacked with the 10/10 loop unrolled (145 launches counted for an H200 against
# 156), and the plain form with the 10/10 loop unrolled (no while loop left: XLA's command
# buffers, on by default for straight-line kernels, may then launch the whole decision as a few
# CUDA graphs). Each row is saved as it finishes. Results in $OUT.
. benchmarks/gpu_common.sh
step cublas 150 env XLA_FLAGS=--xla_gpu_enable_triton_gemm=false PROBE_TAG=cublas $P sampler
step tune 200 env PROBE_TAG=tune $P sampler
grep -h -E "^sampler " "$LOG" | cut -c1-240
