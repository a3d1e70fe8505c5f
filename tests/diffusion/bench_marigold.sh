#!/usr/bin/env bash
# Marigold normals at processing resolution 768 with a full-size random checkpoint, ours vs
# diffusers in one run: the device, seconds per image for both, peak memory, the ratio.
# diffusers runs first, then ours; both print as they go.
#   bench_marigold.sh BENCH_BIN CKPT_DIR cpu|cuda [SIZE] [STEPS] [REPS]
# The checkpoint is made once (make_full_marigold.py, ~2.5 GB of fp16) and kept in CKPT_DIR.
# Exit 77 (skipped) when cuda is asked for without a GPU, or the checkpoint cannot be made.
set -uo pipefail
bin=$1 ckpt=$2 dev=$3 size=${4:-800} steps=${5:-4} reps=${6:-1}
here=$(dirname "$0")
# shellcheck source=tests/bench_lib.sh
. "$here/../bench_lib.sh"
skip_without_gpu "$dev"
python3 "$here/make_full_marigold.py" "$ckpt" || { echo "cannot make the checkpoint (needs torch, diffusers)"; exit 77; }
reference ref python3 "$here/bench_marigold_torch.py" "$ckpt" "$dev" "$size" "$steps" "$reps"
streamed ours "$bin" "$ckpt" "$dev" "$size" "$steps" "$reps"; rc=$?
[ $rc -eq 0 ] || exit $rc
a=$(grep -o '[0-9.]* s per image' <<<"$ours" | head -1 | cut -d' ' -f1)
b=$(grep -o '[0-9.]* s per image' <<<"$ref" | head -1 | cut -d' ' -f1)
[ -n "$a" ] && [ -n "$b" ] && awk -v a="$a" -v b="$b" 'BEGIN{printf "speed ratio ours/diffusers: %.2f (above 1: ours faster)\n", b/a}'
exit 0
