#!/usr/bin/env bash
# Every kind of bad input makes cmds-prep exit non-zero with a message naming the file (or
# folder) and what was expected, leaves no cache for the failing category, and does not
# touch a complete cache written before.
#   test_bad_inputs.sh BIN_DIR WORK_DIR MPIEXEC...
set -uo pipefail
bin=$1 work=$2
shift 2
mpiexec=("$@")
rm -rf "$work" && mkdir -p "$work"
"$bin/cmds-synth" --format mvtec3d --out "$work/good" --size 64 --categories bagel,cookie \
  --train 4 --validation 0 --test-good 2 --test-per-defect 1 >/dev/null || exit 1
"$bin/cmds-synth" --format eyecandies --out "$work/eyec" --size 64 --categories Lollipop \
  --train 4 --validation 0 --test-good 2 --test-per-defect 1 >/dev/null || exit 1
# A complete cache of another category, which no failure may damage.
"${mpiexec[@]}" -n 2 "$bin/cmds-prep" --dataset mvtec3d --root "$work/good" --out "$work/cache" \
  --category cookie --shots 2 --size 32 >/dev/null || exit 1
before=$(md5sum "$work/cache/mvtec3d/cookie.h5")

pass=0 fail=0
# case NAME DATASET MUTATION(shell) EXPECTED-SUBSTRING...
case_() {
  local name=$1 dataset=$2 mutate=$3
  shift 3
  local root="$work/case_$name"
  rm -rf "$root"
  if [ "$dataset" = mvtec3d ]; then cp -r "$work/good" "$root"; cat=bagel; else cp -r "$work/eyec" "$root"; cat=Lollipop; fi
  (cd "$root" && eval "$mutate") || { echo "FAIL $name: mutation failed"; fail=$((fail+1)); return; }
  local err
  err=$("${mpiexec[@]}" -n 2 "$bin/cmds-prep" --dataset "$dataset" --root "$root" --out "$work/cache" \
        --category "$cat" --shots 2 --size 32 2>&1 >/dev/null)
  local rc=$?
  local ok=1
  [ $rc -ne 0 ] || { echo "FAIL $name: exit code 0"; ok=0; }
  for want in "$@"; do
    grep -qF -- "$want" <<<"$err" || { echo "FAIL $name: message lacks '$want'"; ok=0; }
  done
  [ ! -e "$work/cache/$dataset/$cat.h5" ] || { echo "FAIL $name: a cache for $cat appeared"; ok=0; }
  [ ! -e "$work/cache/$dataset/$cat.h5.partial" ] || { echo "FAIL $name: a partial cache was left"; ok=0; }
  [ "$(md5sum "$work/cache/mvtec3d/cookie.h5")" = "$before" ] || { echo "FAIL $name: cookie.h5 changed"; ok=0; }
  if [ $ok -eq 1 ]; then pass=$((pass+1)); echo "ok   $name: $(grep -m1 -E 'error|cmds-prep' <<<"$err")"
  else fail=$((fail+1)); echo "---- stderr of $name:"; echo "$err" | head -5; fi
}
c=$PWD
t=bagel/test/color
case_ missing_folder  mvtec3d "rm -rf bagel/test"                                   "bagel/test" "missing folder"
case_ missing_xyz     mvtec3d "rm $t/xyz/000.tiff"                                  "$t/xyz/000.tiff"
case_ truncated_png   mvtec3d "$bin/prep_corrupt truncate $t/rgb/000.png"           "$t/rgb/000.png"
case_ truncated_tiff  mvtec3d "$bin/prep_corrupt truncate $t/xyz/000.tiff"          "$t/xyz/000.tiff"
case_ tiff_channels   mvtec3d "$bin/prep_corrupt tiff-1ch $t/xyz/000.tiff"          "$t/xyz/000.tiff" "3"
case_ tiff_size       mvtec3d "$bin/prep_corrupt tiff-size $t/xyz/000.tiff"         "$t/xyz/000.tiff" "56 x 64"
case_ tiff_nan        mvtec3d "$bin/prep_corrupt tiff-nan $t/xyz/000.tiff"          "$t/xyz/000.tiff" "non-finite"
case_ tiff_all_zero   mvtec3d "$bin/prep_corrupt tiff-zero $t/xyz/000.tiff"         "$t/xyz/000.tiff" "all-zero"
case_ rgb_16bit       mvtec3d "$bin/prep_corrupt png-16bit $t/rgb/000.png"          "$t/rgb/000.png" "16-bit" "expected 8-bit RGB"
case_ rgb_gray        mvtec3d "$bin/prep_corrupt png-gray $t/rgb/000.png"           "$t/rgb/000.png" "1 channel"
case_ mask_size       mvtec3d "$bin/prep_corrupt png-size $t/gt/000.png"            "$t/gt/000.png" "56 x 64"
case_ empty_category  mvtec3d "rm -rf bagel/test/*; "                               "bagel" "empty category"
case_ few_shots       mvtec3d "rm bagel/train/good/rgb/00[1-3].png"                 "bagel/train/good/rgb" "needs 2"
case_ no_category     mvtec3d "rm -rf bagel"                                        "bagel" "not found"
e=Lollipop/test_public/data
case_ eyec_depth_8bit eyecandies "$bin/prep_corrupt png-8bit $e/00_depth.png"         "$e/00_depth.png" "16-bit single-channel"
case_ eyec_yaml       eyecandies "echo 'foo: 1' > $e/00_info_depth.yaml"            "$e/00_info_depth.yaml"
case_ eyec_pose       eyecandies "echo '1 0 0' > $e/00_pose.txt"                    "$e/00_pose.txt"
case_ eyec_mask_size  eyecandies "$bin/prep_corrupt png-size $e/00_mask.png"        "$e/00_mask.png"
case_ eyec_missing    eyecandies "rm -rf Lollipop/test_public"                      "Lollipop/test_public/data" "missing folder"
cd "$c"
# Bad arguments
out=$("${mpiexec[@]}" -n 1 "$bin/cmds-prep" --dataset kinect --root x --out y 2>&1); rc=$?
if [ $rc -ne 0 ] && grep -q "expected mvtec3d or eyecandies" <<<"$out"; then pass=$((pass+1)); else echo "FAIL bad --dataset: $out"; fail=$((fail+1)); fi
out=$("${mpiexec[@]}" -n 1 "$bin/cmds-prep" --dataset mvtec3d --root "$work/good" --out "$work/cache" --size 0 2>&1); rc=$?
if [ $rc -ne 0 ] && grep -q -- "--size" <<<"$out"; then pass=$((pass+1)); else echo "FAIL bad --size: $out"; fail=$((fail+1)); fi
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
