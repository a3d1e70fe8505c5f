#!/usr/bin/env bash
# ViT-B/8 forward, ours vs PyTorch (timm, eager) in one run: the device, both images/s at the
# same batch and precision, the ratio, this machine's measured GEMM rate and the fraction of
# it each achieves (model FLOPs/s over the GEMM rate).
#   bench_vit.sh BENCH_BIN cpu|cuda BATCH REPS [fp32|tf32|bf16]
set -uo pipefail
bin=$1
shift
# shellcheck source=tests/bench_lib.sh
. "$(dirname "$0")/../../bench_lib.sh"
skip_without_gpu "$1"
streamed ours "$bin" "$@"; rc=$?
[ $rc -eq 0 ] || exit $rc
reference ref python3 "$(dirname "$0")/bench_vit_torch.py" "$@"
a=$(grep -o '[0-9.]* images/s' <<<"$ours" | head -1 | cut -d' ' -f1)
b=$(grep -o '[0-9.]* images/s' <<<"$ref" | head -1 | cut -d' ' -f1)
gf=$(grep -o '[0-9.]* GFLOP per image' <<<"$ours" | head -1 | cut -d' ' -f1)
prec=${4:-fp32}
gemm=$(grep "^gemm rate [a-z]* $prec " <<<"$ours" | grep -o '[0-9.]* TFLOP/s' | head -1 | cut -d' ' -f1)
if [ -n "$b" ]; then
  awk -v a="$a" -v b="$b" 'BEGIN{printf "ratio ours/torch: %.2f\n", a/b}'
  [ -n "$gemm" ] && [ -n "$gf" ] &&
    awk -v b="$b" -v g="$gf" -v r="$gemm" -v p="$prec" \
      'BEGIN{printf "torch fraction of the %s gemm rate: %.2f\n", p, b*g/1000/r}'
fi
exit 0
