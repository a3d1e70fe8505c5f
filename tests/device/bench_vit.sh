#!/usr/bin/env bash
# One call on a lent GPU machine: configure (kernels only), build, run the unit + CUDA tests,
# then the ViT-B/8 benchmarks (GPU bf16 / TF32 / fp32 at batch 64, CPU on all cores) beside
# PyTorch. Logs under $OUT (or ./device-out); the summary lines last.
#   tests/kernels/nn/bench_vit_device.sh [CPU_THREADS]
set -uo pipefail
out=${OUT:-device-out}
mkdir -p "$out"
threads=${1:-$(nproc)}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,power.limit \
  --format=csv > "$out/smi.txt" 2>&1
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMDS_WERROR=ON -DCMDS_KERNELS_ONLY=ON -DCMDS_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 > "$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
cmake --build build -j"$threads" > "$out/build.log" 2>&1 || { grep -B2 -A6 "error" "$out/build.log" | head -60; exit 1; }
(cd build && ctest -L "unit|cuda" -LE bench --output-on-failure > "$out/ctest.log" 2>&1)
build/bin/test_vit tests/fixtures/vit > "$out/test_vit.log" 2>&1
build/bin/test_vit_bf16_ops > "$out/test_vit_bf16_ops.log" 2>&1
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads OMP_WAIT_POLICY=passive
{ build/bin/bench_nn_cuda; python3 tests/kernels/nn/bench_nn_torch.py; } > "$out/bench_ops.log" 2>&1
for p in bf16 tf32 fp32; do
  tests/kernels/nn/bench_vit.sh build/bin/bench_vit cuda 64 10 $p
done > "$out/bench_gpu.log" 2>&1
tests/kernels/nn/bench_vit.sh build/bin/bench_vit cpu 8 3 > "$out/bench_cpu.log" 2>&1
CMDS_NN_ATTN_THREADS=blas build/bin/bench_vit cpu 8 3 > "$out/bench_cpu_blas_attention.log" 2>&1
echo "== smi"; cat "$out/smi.txt"
echo "== ctest"; grep -E "tests passed|tests failed|Failed|\*\*\*" "$out/ctest.log"
echo "== parity"; grep -E "relative L2|rel L2|passed" "$out/test_vit.log" "$out/test_vit_bf16_ops.log" | sed 's|.*/||'
echo "== gpu ops"; cat "$out/bench_ops.log"
echo "== gpu"; cat "$out/bench_gpu.log"
echo "== cpu"; cat "$out/bench_cpu.log"; echo "-- attention GEMMs threaded by OpenBLAS:"; cat "$out/bench_cpu_blas_attention.log"
