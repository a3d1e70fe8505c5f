#!/usr/bin/env bash
# cmds-features with an augmented group in the sample cache (cmds-augment's output, written here
# by aug_tool through the same cache API; normals_est without Marigold by aug_tool fake-est).
# Synthetic bagel (cmds-synth -> cmds-prep, 2 support samples, S = 32), random backbone:
#   - augmented rows that copy support rows get the support rows' features (rgb and normals_est):
#     the right images are encoded into the right rows; the identity and counts are recorded;
#   - -n 1 and -n 2 give identical files (rows spread over ranks);
#   - a rerun skips; a replaced augmented group (new augmented_id) is encoded again;
#   - without normals_est the augmented rows are left out (said so, recorded), the file has no
#     augmented group; normals_est on support/test but not on the augmented rows is refused;
#   - sets up the caches train.augmented uses (fixture aug_cache).
#   test_features_aug.sh BIN_DIR PLUGIN_DIR WORK MPIEXEC...
set -uo pipefail
bin=$1 plugin=$2 work=$3
shift 3
mp=("$@")
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
test_begin "$work"
F=(--dataset mvtec3d --random-backbone 0)
c() { echo "$work/$1/mvtec3d/bagel.h5"; }
fc() { echo "$work/$1/mvtec3d/bagel.features.h5"; }

"$bin/cmds-synth" --format mvtec3d --out "$work/data/mvtec3d" --seed 3 --size 64 --categories bagel \
  --train 3 --validation 1 --test-good 1 --test-per-defect 1 >/dev/null
"${mp[@]}" -n 2 "$bin/cmds-prep" --dataset mvtec3d --root "$work/data/mvtec3d" --out "$work/base" --shots 2 --size 32 >/dev/null
ok "prep" '[ $? -eq 0 ]'
for d in copy n1 noest stale train plain; do mkdir -p "$work/$d/mvtec3d" && cp "$(c base)" "$(c $d)"; done

# Copies of the support rows: features equal the support rows'.
"${mp[@]}" -n 2 "$bin/aug_tool" add "$(c copy)" 3 "test copy 3" --copy && "${mp[@]}" -n 2 "$bin/aug_tool" fake-est "$(c copy)"
ok "augmented group (copies) + normals_est" '[ $? -eq 0 ]'
cp "$(c copy)" "$(c n1)"
"${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/copy" "${F[@]}" --batch 1 >/dev/null
ok "features -n 2 ran" '[ $? -eq 0 ]'
"$bin/aug_tool" fc "$(fc copy)" "$(c copy)" 3; ok "3 augmented rows, rgb and normals_est, augmented_id carried" '[ $? -eq 0 ]'
"$bin/aug_tool" fc-copy "$(fc copy)" 2 3; ok "augmented features equal their source rows'" '[ $? -eq 0 ]'
rec=$work/copy/mvtec3d/bagel.features.json
ok "record: augmented rows and id" '[ "$(num "$rec" augmented_rows)" = 3 ] && grep -q "\"augmented_id\": \"test copy 3\"" "$rec"'
"${mp[@]}" -n 1 "$bin/cmds-features" --cache "$work/n1" "${F[@]}" --batch 1 >/dev/null
ok "-n 1 equals -n 2" 'HDF5_PLUGIN_PATH="$plugin" h5diff "$(fc copy)" "$(fc n1)" >/dev/null'
out=$("${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/copy" "${F[@]}")
ok "rerun skips" 'grep -q "up to date" <<<"$out"'
"${mp[@]}" -n 2 "$bin/aug_tool" add "$(c copy)" 2 "test mirror 2" && "${mp[@]}" -n 1 "$bin/aug_tool" fake-est "$(c copy)"
out=$("${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/copy" "${F[@]}")
ok "a replaced augmented group is encoded again" '[ $? -eq 0 ] && ! grep -q "up to date" <<<"$out"'
"$bin/aug_tool" fc "$(fc copy)" "$(c copy)" 2; ok "now 2 rows, the new augmented_id" '[ $? -eq 0 ]'
"$bin/aug_tool" fc-copy "$(fc copy)" 2 2 >/dev/null 2>&1; ok "mirrored rows: other features (the check can fail)" '[ $? -ne 0 ]'

# No normals_est: left out; normals_est on support/test only: refused.
"${mp[@]}" -n 2 "$bin/aug_tool" add "$(c noest)" 3 "test noest"
out=$("${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/noest" "${F[@]}"); rc=$?
ok "no normals_est: runs, says the augmented rows are left out" '[ $rc -eq 0 ] && grep -q "3 augmented rows left out: the cache has no normals_est" <<<"$out"'
"$bin/aug_tool" fc "$(fc noest)" "$(c noest)" 0; ok "no normals_est: no augmented group" '[ $? -eq 0 ]'
ok "no normals_est: recorded" '[ "$(num "$work/noest/mvtec3d/bagel.features.json" augmented_rows_left_out)" = 3 ]'
"${mp[@]}" -n 1 "$bin/aug_tool" fake-est "$(c stale)" && "${mp[@]}" -n 2 "$bin/aug_tool" add "$(c stale)" 2 "test after estimate"
msg=$("${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/stale" "${F[@]}" 2>&1); rc=$?
ok "augmented rows without normals_est refused ($msg)" '[ $rc -ne 0 ] && grep -q "$(c stale): the 2 augmented rows have no estimated normals (rerun cmds-estimate)" <<<"$msg"'
ok "refused: no feature cache written" '[ ! -e "$(fc stale)" ]'

# The caches train.augmented uses: 4 mirrored rows, 2 for k = 1 (both from support sample 0)
# and 2 for k = 2 (one from each support sample), as cmds-augment --shots 1,2 makes them; and none.
"${mp[@]}" -n 2 "$bin/aug_tool" add "$(c train)" 2 "test train 4" --shots 1,2 && "${mp[@]}" -n 2 "$bin/aug_tool" fake-est "$(c train)" &&
  "${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/train" "${F[@]}" >/dev/null
ok "train cache with 4 augmented rows" '[ $? -eq 0 ]'
"${mp[@]}" -n 2 "$bin/aug_tool" fake-est "$(c plain)" && "${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/plain" "${F[@]}" >/dev/null
ok "train cache without augmented rows" '[ $? -eq 0 ]'
test_end
