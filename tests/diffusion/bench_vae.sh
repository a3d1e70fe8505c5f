#!/usr/bin/env bash
# The VAE alone (encode + decode of one SIZE x SIZE image), ours vs diffusers in one run on
# the same machine, with the full-size random checkpoint of make_full_marigold.py:
#   bench_vae.sh BENCH_BIN CKPT_DIR cpu|cuda [SIZE] [REPS]
set -uo pipefail
bin=$1 ckpt=$2 dev=$3 size=${4:-256} reps=${5:-1}
here=$(dirname "$0")
python3 "$here/make_full_marigold.py" "$ckpt" || { echo "cannot make the checkpoint (needs torch, diffusers)"; exit 77; }
ours=$("$bin" "$ckpt" "$dev" "$size" "$reps"); rc=$?
echo "$ours"
[ $rc -eq 0 ] || exit $rc
ref=$(python3 "$here/bench_vae_torch.py" "$ckpt" "$dev" "$size" "$reps" 2>/dev/null || echo "reference: failed")
echo "$ref"
a=$(grep -o '[0-9.]* s per image (encode' <<<"$ours" | tail -1 | cut -d' ' -f1)
b=$(grep -o '[0-9.]* s per image (encode' <<<"$ref" | tail -1 | cut -d' ' -f1)
[ -n "$a" ] && [ -n "$b" ] && awk -v a="$a" -v b="$b" 'BEGIN{printf "speed ratio ours/diffusers: %.2f (above 1: ours faster)\n", b/a}'
exit 0
