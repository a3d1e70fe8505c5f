#!/usr/bin/env bash
# ViT-B/8 forward, ours vs PyTorch (timm, eager) in one run, and the ratio.
#   bench_vit.sh BENCH_BIN cpu|cuda BATCH REPS [tf32]
set -uo pipefail
bin=$1
shift
ours=$("$bin" "$@"); rc=$?
[ $rc -eq 77 ] && { echo "$ours"; exit 77; }
[ $rc -eq 0 ] || exit $rc
echo "$ours"
ref=$(python3 "$(dirname "$0")/bench_vit_torch.py" "$@" 2>/dev/null || echo "reference: skipped")
echo "$ref"
a=$(grep -o '[0-9.]* images/s' <<<"$ours" | head -1 | cut -d' ' -f1)
b=$(grep -o '[0-9.]* images/s' <<<"$ref" | head -1 | cut -d' ' -f1)
[ -n "$b" ] && awk -v a="$a" -v b="$b" 'BEGIN{printf "ratio ours/torch: %.2f\n", a/b}'
exit 0
