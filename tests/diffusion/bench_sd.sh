#!/usr/bin/env bash
# The augment stage's costs with a full-size random SD 2.1 checkpoint, ours vs diffusers + peft in
# one run on the same machine: seconds per LoRA training step and per img2img image, peak memory,
# the ratios. diffusers runs first (it is the known quantity), then ours; both print as they go.
#   bench_sd.sh BENCH_BIN CKPT_DIR cpu|cuda [R] [STEPS] [I2I_STEPS] [STRENGTH]
# The checkpoint is made once (make_full_sd.py, ~2.6 GB of fp16) and kept in CKPT_DIR.
# Exit 77 (skipped) when cuda is asked for without a GPU, or the checkpoint cannot be made.
set -uo pipefail
bin=$1 ckpt=$2 dev=$3 R=${4:-512} steps=${5:-3} i2i=${6:-50} strength=${7:-0.3}
here=$(dirname "$0")
# shellcheck source=tests/bench_lib.sh
. "$here/../bench_lib.sh"
skip_without_gpu "$dev"
python3 "$here/make_full_sd.py" "$ckpt" || { echo "cannot make the checkpoint (needs torch, diffusers)"; exit 77; }
reference ref python3 "$here/bench_sd_torch.py" "$ckpt" "$dev" "$R" "$steps" "$i2i" "$strength"
streamed ours "$bin" "$ckpt" "$dev" "$R" "$steps" "$i2i" "$strength"; rc=$?
[ $rc -eq 0 ] || exit $rc
a=$(grep -o "[0-9.]* cpu-s per training step" <<<"$ours" | head -1 | cut -d' ' -f1)
b=$(grep -o "[0-9.]* cpu-s per training step" <<<"$ref" | head -1 | cut -d' ' -f1)
[ -n "$a" ] && [ -n "$b" ] && awk -v a="$a" -v b="$b" \
  'BEGIN{printf "cpu-time ratio ours/diffusers per training step: %.2f (above 1: ours does less work; on a shared machine steadier than the wall ratio)\n", b/a}'
for what in "training step" "image"; do
  a=$(grep -o "[0-9.]* s per $what" <<<"$ours" | head -1 | cut -d' ' -f1)
  b=$(grep -o "[0-9.]* s per $what" <<<"$ref" | head -1 | cut -d' ' -f1)
  [ -n "$a" ] && [ -n "$b" ] && awk -v a="$a" -v b="$b" -v w="$what" \
    'BEGIN{printf "speed ratio ours/diffusers per %s: %.2f (above 1: ours faster)\n", w, b/a}'
done
exit 0
