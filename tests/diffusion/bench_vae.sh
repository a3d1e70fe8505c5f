#!/usr/bin/env bash
# The VAE alone (encode + decode of one SIZE x SIZE image), ours vs diffusers in one run on
# the same machine, with the full-size random checkpoint of make_full_marigold.py; diffusers
# runs first, then ours; both print as they go; then the agreement of their outputs' mean |x|.
#   bench_vae.sh BENCH_BIN CKPT_DIR cpu|cuda [SIZE] [REPS]
# Exit 77 (skipped) when cuda is asked for without a GPU, or the checkpoint cannot be made.
set -uo pipefail
bin=$1 ckpt=$2 dev=$3 size=${4:-256} reps=${5:-1}
here=$(dirname "$0")
# shellcheck source=tests/bench_lib.sh
. "$here/../bench_lib.sh"
skip_without_gpu "$dev"
python3 "$here/make_full_marigold.py" "$ckpt" || { echo "cannot make the checkpoint (needs torch, diffusers)"; exit 77; }
reference ref python3 "$here/bench_vae_torch.py" "$ckpt" "$dev" "$size" "$reps"
streamed ours "$bin" "$ckpt" "$dev" "$size" "$reps"; rc=$?
[ $rc -eq 0 ] || exit $rc
a=$(grep -o '[0-9.]* s per image (encode' <<<"$ours" | tail -1 | cut -d' ' -f1)
b=$(grep -o '[0-9.]* s per image (encode' <<<"$ref" | tail -1 | cut -d' ' -f1)
[ -n "$a" ] && [ -n "$b" ] && awk -v a="$a" -v b="$b" 'BEGIN{printf "speed ratio ours/diffusers: %.2f (above 1: ours faster)\n", b/a}'
# Same weights, same input: the latent's and the image's mean |x| of both sides should agree (a
# coarse check of the device path at full size; the fixtures test it exactly at small size).
for t in latent image; do
  a=$(grep "^$t: mean" <<<"$ours" | tail -1 | awk '{print $NF}')
  b=$(grep "^$t: mean" <<<"$ref" | tail -1 | awk '{print $NF}')
  [ -n "$a" ] && [ -n "$b" ] && awk -v a="$a" -v b="$b" -v t="$t" \
    'BEGIN{d = a - b; if (d < 0) d = -d; printf "agreement ours/diffusers, %s mean |x|: %.6e vs %.6e (relative difference %.1e)\n", t, a, b, d / (b > 0 ? b : 1)}'
done
exit 0
