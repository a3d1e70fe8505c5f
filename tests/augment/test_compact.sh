#!/usr/bin/env bash
# Replacing what a stage adds to a sample cache keeps the file's size: cmds-augment --force with a
# new seed replaces the augmented group 4 times, cmds-estimate --force with a new seed replaces
# normals_est 4 times (tiny random SD and Marigold checkpoints, S = 32, 8 images): every size
# stays within 1 % of the first replacement's (HDF5 never gives back the space of a removed
# group or a reallocated chunk, so writing the new ones into a byte copy grew the file by the
# old ones every time: +4 % and +13 % over the three replacements here before); the content stays valid (check_augment),
# and each replacement did replace (other values than the run before). And the LoRA of the
# cached RGB is fine-tuned again when prep rebuilt the cache at another size (same samples).
#   test_compact.sh BIN_DIR SD_CHECKPOINT MARIGOLD_CHECKPOINT WORK MPIEXEC...
set -uo pipefail
bin=$1 sd=$2 marigold=$3 work=$4
shift 4
mp=("$@")
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
test_begin "$work"
c=$work/cache/mvtec3d/bagel.h5
"$bin/cmds-synth" --format mvtec3d --out "$work/data" --seed 3 --size 64 --categories bagel \
  --train 2 --validation 1 --test-good 1 --test-per-defect 1 >/dev/null
"${mp[@]}" -n 1 "$bin/cmds-prep" --dataset mvtec3d --root "$work/data" --out "$work/cache" --shots 2 --size 32 >/dev/null
ok "prep" '[ $? -eq 0 ]'
within() { # first, size: within 1 %
  awk -v a="$1" -v b="$2" 'BEGIN { d = b - a; if (d < 0) d = -d; exit !(d <= 0.01 * a) }'
}
sizes=""
first=""
for seed in 1 2 3 4; do
  "${mp[@]}" -n 1 "$bin/cmds-augment" --cache "$work/cache" --dataset mvtec3d --sd "$sd" --set augment.steps=2 \
    --set augment.images=8 --set augment.inference_steps=4 --set augment.resolution=32 --set augment.seed=$seed --force \
    >"$work/aug$seed.log" 2>&1
  ok "augment --force seed $seed ($(tail -3 "$work/aug$seed.log"))" '[ $? -eq 0 ]'
  "$bin/check_augment" ok "$c" 8 2 "$work/cache/augment/mvtec3d/bagel" >/dev/null
  ok "augment seed $seed: 8 rows as the schema says, each its PNG resized" '[ $? -eq 0 ]'
  cat "$work"/cache/augment/mvtec3d/bagel/k2/images/*.png | md5sum >"$work/png$seed"
  [ $seed -gt 1 ] && { ! cmp -s "$work/png$seed" "$work/png$((seed - 1))"; ok "augment seed $seed: other images" '[ $? -eq 0 ]'; }
  s=$(stat -c %s "$c")
  sizes="$sizes $s"
  [ -z "$first" ] && first=$s
  ok "augment seed $seed: $s bytes, within 1 % of $first" 'within $first $s'
done
echo "cache size after each augment --force:$sizes"
if [ -f "$marigold/model_index.json" ]; then
  sizes=""
  first=""
  for seed in 1 2 3 4; do
    "${mp[@]}" -n 2 "$bin/cmds-estimate" --cache "$work/cache" --dataset mvtec3d --marigold "$marigold" --seed $seed --force \
      >"$work/est$seed.log" 2>&1
    ok "estimate --force seed $seed ($(tail -3 "$work/est$seed.log"))" '[ $? -eq 0 ]'
    "$bin/aug_tool" state "$c" complete >/dev/null; ok "estimate seed $seed: augmented normals_est complete" '[ $? -eq 0 ]'
    s=$(stat -c %s "$c")
    sizes="$sizes $s"
    [ -z "$first" ] && first=$s
    ok "estimate seed $seed: $s bytes, within 1 % of $first" 'within $first $s'
  done
  echo "cache size after each estimate --force:$sizes"
  # and a new augmented group on the estimated cache, then estimate for it alone
  "${mp[@]}" -n 1 "$bin/cmds-augment" --cache "$work/cache" --dataset mvtec3d --sd "$sd" --set augment.steps=2 \
    --set augment.images=8 --set augment.inference_steps=4 --set augment.resolution=32 --set augment.seed=5 --force >/dev/null 2>&1
  "${mp[@]}" -n 2 "$bin/cmds-estimate" --cache "$work/cache" --dataset mvtec3d --marigold "$marigold" --seed 4 >"$work/est5.log" 2>&1
  ok "estimate of the new augmented rows only ($(tail -1 "$work/est5.log"))" '[ $? -eq 0 ] && grep -q "8 images through Marigold (8 of them augmented)" "$work/est5.log"'
  s=$(stat -c %s "$c")
  ok "after augment + estimate of the augmented rows: $s bytes, within 1 % of $first" 'within $first $s'
else
  echo "estimate: skipped (no Marigold fixture at $marigold)"
fi
# What the LoRA of the cached RGB (no --data) keys on: the whole sample cache, not only its
# sample list. prep rebuilds the cache the same way: the LoRA and images are reused; prep
# rebuilds it at another size (same samples, other pixels): the LoRA is fine-tuned again.
AUG=(--cache "$work/cache" --dataset mvtec3d --sd "$sd" --set augment.steps=2 --set augment.images=8
     --set augment.inference_steps=4 --set augment.resolution=32 --set augment.seed=5)
rec=$work/cache/mvtec3d/bagel.augment.json
"${mp[@]}" -n 1 "$bin/cmds-augment" "${AUG[@]}" --force >/dev/null 2>&1; ok "augment seed 5" '[ $? -eq 0 ]'
rm "$c"
"${mp[@]}" -n 1 "$bin/cmds-prep" --dataset mvtec3d --root "$work/data" --out "$work/cache" --shots 2 --size 32 >/dev/null
ok "prep rebuilt the same cache, dropped the augment record" '[ $? -eq 0 ] && [ ! -e "$rec" ]'
"${mp[@]}" -n 1 "$bin/cmds-augment" "${AUG[@]}" >/dev/null 2>&1
ok "the same cache: the LoRA and images reused" '[ $? -eq 0 ] && grep -q "\"lora_reused\": true" "$rec" && grep -q "\"images_reused\": 8" "$rec"'
"${mp[@]}" -n 1 "$bin/cmds-prep" --dataset mvtec3d --root "$work/data" --out "$work/cache" --shots 2 --size 48 >/dev/null
"${mp[@]}" -n 1 "$bin/cmds-augment" "${AUG[@]}" >/dev/null 2>&1
ok "a cache at another size: the LoRA fine-tuned again" '[ $? -eq 0 ] && grep -q "\"lora_reused\": false" "$rec" && grep -q "\"images_generated\": 8" "$rec"'
"$bin/check_augment" ok "$c" 8 2 "$work/cache/augment/mvtec3d/bagel" >/dev/null; ok "48 px cache: 8 rows, each its PNG resized" '[ $? -eq 0 ]'
test_end
