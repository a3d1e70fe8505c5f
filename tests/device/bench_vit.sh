#!/usr/bin/env bash
# One `run` call on a lent GPU machine: the ViT-B/8 benchmarks beside PyTorch (timm, eager) —
# the GPU op timings (bench_nn_cuda vs bench_nn_torch.py), the forward at batch 64 in bf16, TF32
# and fp32, then on the CPU (all cores, batch 8; again with OpenBLAS threading the GEMMs itself,
# CMDS_NN_GEMM_THREADS=blas, and with the OpenMP OpenBLAS when the image has it).
# The tests are verify.sh's (run it first: the parity of every op and of the ViT is there).
#   tests/device/bench_vit.sh [CPU_THREADS]          from the repository root
# Reuses build-device when the machine kept it. Caps: CAP_OPS=120, CAP_GPU=240 (the three
# precisions), CAP_CPU=300. Files in $OUT: vit-summary.txt, vit-build.log, vit-ops.log,
# vit-gpu.log, vit-cpu.log. Exit 0 when all ran, 1 otherwise, 3 without a GPU. See common.sh.
dk_name=vit
# shellcheck source=tests/device/common.sh
. "$(dirname "$0")/common.sh"
threads=${1:-$dk_jobs}

require_gpu
environment
use_wheels
status=0
build_kernels "$dk_out/vit-build.log" bench_vit bench_nn_cuda || { note "vit: no build (above; the errors, if any, in vit-build.log)"; exit 1; }
bin=$dk_build/bin
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads OMP_WAIT_POLICY=passive PYTHONUNBUFFERED=1

step "GPU ops (ours, then torch)" "${CAP_OPS:-120}" "$dk_out/vit-ops.log" \
  bash -c '"$1" && python3 tests/kernels/nn/bench_nn_torch.py' _ "$bin/bench_nn_cuda"
ran $? || status=1
step "ViT-B/8 GPU, batch 64: bf16, tf32, fp32" "${CAP_GPU:-240}" "$dk_out/vit-gpu.log" bash -c '
  for p in bf16 tf32 fp32; do tests/kernels/nn/bench_vit.sh "$1" cuda 64 10 $p || exit; done' _ "$bin/bench_vit"
ran $? || status=1
cpu=(8 3)
[ "$dk_dry" = 1 ] && cpu=(1 1)   # a dry run: the smallest CPU run
omp_blas=/usr/lib/x86_64-linux-gnu/openblas-openmp
step "ViT-B/8 CPU, batch ${cpu[0]} ($threads threads)" "${CAP_CPU:-300}" "$dk_out/vit-cpu.log" bash -c '
  tests/kernels/nn/bench_vit.sh "$1" cpu "$2" "$3" &&
  echo "-- GEMMs threaded by OpenBLAS (CMDS_NN_GEMM_THREADS=blas):" && CMDS_NN_GEMM_THREADS=blas "$1" cpu "$2" "$3" &&
  if [ -e "$4/libopenblas.so.0" ]; then
    echo "-- OpenMP OpenBLAS ($4):" && LD_LIBRARY_PATH="$4" "$1" cpu "$2" "$3"
  fi' _ "$bin/bench_vit" "${cpu[@]}" "$omp_blas"
ran $? || status=1

note "== GPU ops"; grep -v "^==" "$dk_out/vit-ops.log" | head -40 | tee -a "$dk_summary"
note "== GPU forward"; grep -E "images/s|ratio|fraction|gemm rate|^device" "$dk_out/vit-gpu.log" | tee -a "$dk_summary"
note "== CPU forward"; grep -E "images/s|ratio|fraction|gemm rate|digest|^device|^--" "$dk_out/vit-cpu.log" | tee -a "$dk_summary"
note "vit: $([ $status = 0 ] && echo "all ran" || echo "NOT all ran (above)"), $(dk_elapsed) s"
exit $status
