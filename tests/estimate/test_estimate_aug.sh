#!/usr/bin/env bash
# cmds-estimate on a cache with an augmented group (cmds-augment's rows, written here by aug_tool),
# tiny random Marigold (tests/fixtures/diffusion_marigold), synthetic bagel (S = 32, 2 support,
# 6 test rows):
#   - the augmented rows get normals_est too (from their cached RGB: they have no original),
#     complete and unit length, recorded; -n 1 equals -n 2 (rows spread over ranks);
#   - a rerun skips; augmented rows added to an estimated cache are the only rows computed
#     (support/test values untouched); a replaced augmented group is computed again;
#   - killed inside the augmented rows: the cache is untouched, the rerun resumes and equals an
#     uninterrupted run; a stopped copy made before cmds-augment ran again is discarded.
#   test_estimate_aug.sh BIN_DIR CHECKPOINT WORK MPIEXEC...
set -uo pipefail
bin=$1 ckpt=$2 work=$3
shift 3
mp=("$@")
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
test_begin "$work"
f() { echo "$work/$1/mvtec3d/bagel.h5"; }
rec() { echo "$work/$1/mvtec3d/bagel.estimate.json"; }
est() { local n=$1 d=$2; shift 2; "${mp[@]}" -n "$n" "$bin/cmds-estimate" --cache "$work/$d" "${M[@]}" "$@"; }
add() { "${mp[@]}" -n 2 "$bin/aug_tool" add "$(f "$1")" "$2" "$3"; }

"$bin/cmds-synth" --format mvtec3d --out "$work/data/mvtec3d" --seed 3 --size 64 --categories bagel \
  --train 2 --validation 1 --test-good 1 --test-per-defect 1 >/dev/null
"${mp[@]}" -n 2 "$bin/cmds-prep" --dataset mvtec3d --root "$work/data/mvtec3d" --out "$work/base" --shots 2 --size 32 >/dev/null
ok "prep" '[ $? -eq 0 ]'
M=(--dataset mvtec3d --marigold "$ckpt" --data "$work/data/mvtec3d" --steps 2)
for d in a b late; do mkdir -p "$work/$d/mvtec3d" && cp "$(f base)" "$(f $d)"; done
rows=$(( 2 + 1 + 5 ))

# With augmented rows from the start, -n 2 and -n 1.
add a 3 "test aug A" && add b 3 "test aug A"
ok "augmented groups written" '[ $? -eq 0 ]'
est 2 a >/dev/null; ok "-n 2 ran" '[ $? -eq 0 ]'
"$bin/check_estimate" unit "$(f a)" >/dev/null; ok "support/test complete, unit" '[ $? -eq 0 ]'
"$bin/aug_tool" state "$(f a)" complete; ok "augmented rows complete, unit" '[ $? -eq 0 ]'
ok "record: $rows + 3 images, 3 augmented, the augmented_id" '[ "$(num "$(rec a)" images_computed)" = $((rows + 3)) ] && [ "$(num "$(rec a)" augmented_images_computed)" = 3 ] && grep -q "\"augmented_id\": \"test aug A\"" "$(rec a)"'
est 1 b >/dev/null
"$bin/check_estimate" same "$(f a)" "$(f b)" >/dev/null && "$bin/aug_tool" same "$(f a)" "$(f b)"
ok "-n 1 equals -n 2 (support, test, augmented)" '[ $? -eq 0 ]'
out=$(est 2 a); ok "rerun skips" 'grep -q "up to date" <<<"$out"'

# Augmented rows arriving after the estimate: only they are computed.
est 2 late >/dev/null
cp "$(f late)" "$work/late_before.h5"
for d in r k k2; do mkdir -p "$work/$d/mvtec3d" && cp "$work/late_before.h5" "$(f $d)"; done
add late 2 "test aug B"
est 2 late >/dev/null; ok "estimate after augment ran" '[ $? -eq 0 ]'
ok "only the 2 augmented rows computed" '[ "$(num "$(rec late)" images_computed)" = 2 ] && [ "$(num "$(rec late)" augmented_images_computed)" = 2 ]'
"$bin/check_estimate" same "$(f late)" "$work/late_before.h5" >/dev/null; ok "support/test values untouched" '[ $? -eq 0 ]'
"$bin/aug_tool" state "$(f late)" complete; ok "augmented complete" '[ $? -eq 0 ]'
add late 3 "test aug C"
"$bin/aug_tool" state "$(f late)" absent; ok "a replaced augmented group has no normals_est" '[ $? -eq 0 ]'
est 2 late >/dev/null
ok "the replaced group computed again (3 rows)" '[ $? -eq 0 ] && [ "$(num "$(rec late)" images_computed)" = 3 ]'
"$bin/aug_tool" state "$(f late)" complete >/dev/null; ok "replaced group complete" '[ $? -eq 0 ]'

# Killed inside the augmented rows, resumed; a stale stopped copy.
add r 3 "test aug D" && add k 3 "test aug D" && add k2 3 "test aug D"
est 2 r >/dev/null
CMDS_TEST_KILL_AFTER_ROWS=1 est 2 k >/dev/null 2>&1
ok "killed: non-zero" '[ $? -ne 0 ]'
"$bin/aug_tool" state "$(f k)" absent; ok "killed: the cache is untouched" '[ $? -eq 0 ]'
ok "killed: the copy is kept" '[ -e "$(f k).estimate.partial" ]'
est 2 k >/dev/null
ok "resumed: says so, computed only the rest" '[ $? -eq 0 ] && grep -q "\"resumed\": true" "$(rec k)" && [ "$(num "$(rec k)" images_computed)" -lt 3 ]'
"$bin/aug_tool" same "$(f r)" "$(f k)"; ok "resumed equals uninterrupted" '[ $? -eq 0 ]'
CMDS_TEST_KILL_AFTER_ROWS=1 est 2 k2 >/dev/null 2>&1
add k2 2 "test aug E"
est 2 k2 >/dev/null
ok "a copy from before cmds-augment ran again is not resumed" '[ $? -eq 0 ] && grep -q "\"resumed\": false" "$(rec k2)" && [ "$(num "$(rec k2)" images_computed)" = 2 ]'
"$bin/aug_tool" state "$(f k2)" complete >/dev/null; ok "and the new group is complete" '[ $? -eq 0 ]'
test_end
