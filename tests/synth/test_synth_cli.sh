#!/usr/bin/env bash
# cmds-synth end to end: the exact layouts (every file, size, channels, bit depth), ground
# truth values, determinism (same arguments -> identical bytes; another seed -> different),
# and clear errors for bad arguments.
#   test_synth_cli.sh BIN_DIR CHECK_PROGRAM WORK_DIR
set -uo pipefail
bin=$1 check=$2 work=$3
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
test_begin "$work"
args=(--size 48 --train 2 --validation 1 --test-good 1 --test-per-defect 1)
"$bin/cmds-synth" --format mvtec3d --out "$work/a" --seed 5 --categories bagel,rope "${args[@]}" >/dev/null
"$bin/cmds-synth" --format mvtec3d --out "$work/b" --seed 5 --categories bagel,rope "${args[@]}" >/dev/null
"$bin/cmds-synth" --format mvtec3d --out "$work/c" --seed 6 --categories bagel,rope "${args[@]}" >/dev/null
"$bin/cmds-synth" --format eyecandies --out "$work/e" --seed 5 --categories Lollipop "${args[@]}" >/dev/null
ok "same seed, identical bytes" 'diff -r "$work/a" "$work/b" >/dev/null'
ok "another seed, other bytes" '! cmp -s "$work/a/bagel/test/bump/xyz/000.tiff" "$work/c/bagel/test/bump/xyz/000.tiff"'
for split in train/good validation/good test/good test/color test/bump test/dent test/cut test/combined; do
  for sub in rgb/000.png xyz/000.tiff gt/000.png; do
    ok "mvtec3d bagel/$split/$sub exists" '[ -s "$work/a/bagel/$split/$sub" ]'
  done
done
ok "mvtec3d train count" '[ $(ls "$work/a/rope/train/good/rgb" | wc -l) -eq 2 ]'
for id in 000 001; do
  for s in image_0.png image_4.png image_5.png depth.png info_depth.yaml pose.txt normals.png; do
    ok "eyecandies train/data/${id}_$s" '[ -s "$work/e/Lollipop/train/data/${id}_$s" ]'
  done
done
ok "eyecandies val" '[ -s "$work/e/Lollipop/val/data/000_depth.png" ]'
for id in 00 01 02 03 04 05; do
  ok "eyecandies test_public/data/${id}_mask.png" '[ -s "$work/e/Lollipop/test_public/data/${id}_mask.png" ]'
done
ok "no train masks" '[ ! -e "$work/e/Lollipop/train/data/000_mask.png" ]'
ok "manifest" 'grep -q "\"format\": \"mvtec3d\"" "$work/a/.synth/manifest.json"'
# formats, sizes and truth values, read through comm/formats
out=$("$check" "$work/a" "$work/e" 48 2>&1); rc=$?
echo "$out" | tail -3
ok "file contents" '[ $rc -eq 0 ]'
# bad arguments
for bad in "--format kinect --out $work/x" "--format mvtec3d --out $work/x --size 0" "--format mvtec3d" \
           "--format mvtec3d --out /proc/forbidden" "--format mvtec3d --out $work/x --categories ../up"; do
  msg=$("$bin/cmds-synth" $bad 2>&1); rc=$?
  ok "bad args '$bad' rejected with a message" '[ $rc -ne 0 ] && [ -n "$msg" ]'
done
test_end
