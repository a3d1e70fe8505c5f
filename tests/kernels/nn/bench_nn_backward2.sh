#!/usr/bin/env bash
# The LoRA fine-tune's training ops, ours vs PyTorch autograd in one run on the same machine:
# both tables (minimum and median over the runs), then per op the ratio of the minima,
# torch ms / ours ms (> 1: ours is faster).
#   bench_nn_backward2.sh BENCH_BIN cpu|cuda REPS [OP_PREFIX]
set -uo pipefail
bin=$1
shift
# shellcheck source=tests/bench_lib.sh
. "$(dirname "$0")/../../bench_lib.sh"
skip_without_gpu "$1"
echo "ours:"
streamed ours "$bin" "$@"; rc=$?
[ $rc -eq 0 ] || exit $rc
echo "torch:"
reference ref python3 "$(dirname "$0")/bench_nn_backward2_torch.py" "$@"
echo "speed ratio (torch ms / ours ms, minima):"
awk 'NR == FNR { if ($3 == "ms") t[$1] = $2; next }
     $3 == "ms" && ($1 in t) { printf "  %-28s %6.2f\n", $1, t[$1] / $2 }' <(echo "$ref") <(echo "$ours")
exit 0
