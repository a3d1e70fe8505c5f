#!/usr/bin/env bash
# cmds-estimate end to end on a tiny random Marigold checkpoint (helper marigold's fixture,
# tests/fixtures/gen_diffusion_marigold.py: processing resolution 64, 4 steps) and small
# synthetic caches (cmds-synth -> cmds-prep, S = 32):
#   - no checkpoint: a clear error naming the missing file and the keys that turn the stream off;
#   - -n 2 with the original images: normals_est complete and unit length; -n 1 bit-identical;
#   - SIGKILL after 2 rows: the cache is untouched (no normals_est), the copy kept; the rerun
#     computes only the rest and equals the uninterrupted run;
#   - a rerun skips; other settings are refused, --force replaces them (and the values change);
#   - the cached RGB as the source (recorded, different values), EyeCandies' layout (RGBA);
#   - original images that are not the ones prep cached are refused, the file named;
#   - features encode normals_est (its identity carried over); train runs the E stream and
#     score weights it (l1 = l2 = 0.1).
#   test_estimate.sh BIN_DIR CHECKPOINT WORK MPIEXEC...
set -uo pipefail
bin=$1 ckpt=$2 work=$3
shift 3
mp=("$@")
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
test_begin "$work"
est() { "${mp[@]}" "$@"; }

"$bin/cmds-synth" --format mvtec3d --out "$work/data/mvtec3d" --seed 3 --size 64 --categories bagel \
  --train 2 --validation 1 --test-good 1 --test-per-defect 1 >/dev/null
"$bin/cmds-synth" --format eyecandies --out "$work/data/eyecandies" --seed 3 --size 48 --categories CandyCane \
  --train 2 --validation 1 --test-good 1 --test-per-defect 1 >/dev/null
"$bin/cmds-synth" --format mvtec3d --out "$work/other/mvtec3d" --seed 4 --size 64 --categories bagel \
  --train 2 --validation 1 --test-good 1 --test-per-defect 1 >/dev/null
"${mp[@]}" -n 2 "$bin/cmds-prep" --dataset mvtec3d --root "$work/data/mvtec3d" --out "$work/base" --shots 2 --size 32 >/dev/null
ok "prep mvtec3d" '[ $? -eq 0 ]'
"${mp[@]}" -n 2 "$bin/cmds-prep" --dataset eyecandies --root "$work/data/eyecandies" --out "$work/base" --shots 2 --size 32 >/dev/null
ok "prep eyecandies" '[ $? -eq 0 ]'
for d in a b k c m; do mkdir -p "$work/$d/mvtec3d" && cp "$work/base/mvtec3d/bagel.h5" "$work/$d/mvtec3d/"; done
mkdir -p "$work/e/eyecandies" && cp "$work/base/eyecandies/CandyCane.h5" "$work/e/eyecandies/"
M=(--dataset mvtec3d --marigold "$ckpt" --data "$work/data/mvtec3d")
f() { echo "$work/$1/mvtec3d/bagel.h5"; }
rows=$(( 2 + 1 + 5 ))

# No checkpoint.
msg=$(est -n 2 "$bin/cmds-estimate" --cache "$work/a" --dataset mvtec3d --marigold "$work/nothing" 2>&1); rc=$?
ok "no checkpoint: exit 2 ($rc)" '[ $rc -eq 2 ]'
ok "no checkpoint: the message ($msg)" 'grep -q "no Marigold checkpoint at $work/nothing: .*; run with the estimated stream off: score.l1=0 score.l2=0 train.streams=real" <<<"$msg"'
"$bin/check_estimate" absent "$(f a)" >/dev/null; ok "no checkpoint: cache untouched" '[ $? -eq 0 ]'

# -n 2, original images.
est -n 2 "$bin/cmds-estimate" --cache "$work/a" "${M[@]}" >/dev/null
ok "-n 2 ran" '[ $? -eq 0 ]'
"$bin/check_estimate" unit "$(f a)"; ok "normals_est complete, unit length" '[ $? -eq 0 ]'
rec=$work/a/mvtec3d/bagel.estimate.json
ok "record: $rows images, source dataset, 4 steps, resolution 64" '[ "$(num "$rec" images_computed)" = $rows ] && grep -q "\"source\": \"dataset\"" "$rec" && [ "$(num "$rec" steps)" = 4 ] && [ "$(num "$rec" processing_res)" = 64 ]'
ok "no copy left behind" '[ ! -e "$(f a).estimate.partial" ]'
est -n 1 "$bin/cmds-estimate" --cache "$work/b" "${M[@]}" >/dev/null
"$bin/check_estimate" same "$(f a)" "$(f b)"; ok "-n 1 equals -n 2" '[ $? -eq 0 ]'

# Killed after 2 rows, then resumed.
CMDS_TEST_KILL_AFTER_ROWS=2 est -n 2 "$bin/cmds-estimate" --cache "$work/k" "${M[@]}" >/dev/null 2>&1
ok "killed: non-zero" '[ $? -ne 0 ]'
"$bin/check_estimate" absent "$(f k)" >/dev/null; ok "killed: the cache has no normals_est" '[ $? -eq 0 ]'
ok "killed: the copy is kept" '[ -e "$(f k).estimate.partial" ]'
est -n 2 "$bin/cmds-estimate" --cache "$work/k" "${M[@]}" >/dev/null
ok "resumed run" '[ $? -eq 0 ]'
rec=$work/k/mvtec3d/bagel.estimate.json
n=$(num "$rec" images_computed)
ok "resumed: says so, computed only the rest ($n of $rows)" 'grep -q "\"resumed\": true" "$rec" && [ -n "$n" ] && [ "$n" -lt $rows ] && [ "$n" -ge 1 ]'
"$bin/check_estimate" same "$(f a)" "$(f k)"; ok "resumed equals uninterrupted" '[ $? -eq 0 ]'

# Reruns.
out=$(est -n 2 "$bin/cmds-estimate" --cache "$work/a" "${M[@]}")
ok "rerun skips" 'grep -q "up to date" <<<"$out"'
cp "$(f a)" "$work/a_before.h5"
msg=$(est -n 2 "$bin/cmds-estimate" --cache "$work/a" "${M[@]}" --seed 5 2>&1); rc=$?
ok "other settings refused ($msg)" '[ $rc -ne 0 ] && grep -q "normals_est was made with other settings" <<<"$msg" && grep -q -- "--force" <<<"$msg"'
"$bin/check_estimate" same "$(f a)" "$work/a_before.h5" >/dev/null; ok "refused: cache unchanged" '[ $? -eq 0 ]'
est -n 2 "$bin/cmds-estimate" --cache "$work/a" "${M[@]}" --seed 5 --force >/dev/null
ok "--force with another seed" '[ $? -eq 0 ]'
"$bin/check_estimate" differ "$(f a)" "$work/a_before.h5" >/dev/null; ok "another seed: other values" '[ $? -eq 0 ]'
"$bin/check_estimate" unit "$(f a)" >/dev/null; ok "forced: complete, unit" '[ $? -eq 0 ]'

# The cached RGB as the source; EyeCandies.
est -n 2 "$bin/cmds-estimate" --cache "$work/c" --dataset mvtec3d --marigold "$ckpt" >/dev/null
"$bin/check_estimate" unit "$(f c)" >/dev/null; ok "cache source: complete, unit" '[ $? -eq 0 ]'
ok "cache source recorded" 'grep -q "\"source\": \"cache\"" "$work/c/mvtec3d/bagel.estimate.json"'
"$bin/check_estimate" differ "$(f c)" "$(f b)" >/dev/null; ok "cache source: other values than the originals" '[ $? -eq 0 ]'
est -n 2 "$bin/cmds-estimate" --cache "$work/e" --dataset eyecandies --marigold "$ckpt" --data "$work/data/eyecandies" >/dev/null
"$bin/check_estimate" unit "$work/e/eyecandies/CandyCane.h5" >/dev/null; ok "eyecandies originals: complete, unit" '[ $? -eq 0 ]'

# Originals that are not what prep cached.
msg=$(est -n 2 "$bin/cmds-estimate" --cache "$work/m" --dataset mvtec3d --marigold "$ckpt" --data "$work/other/mvtec3d" 2>&1); rc=$?
ok "other originals refused, file named ($msg)" '[ $rc -ne 0 ] && grep -q "$work/other/mvtec3d/bagel/.*/rgb/.*\.png: resized as cmds-prep does, it differs from the cached RGB" <<<"$msg"'

# Downstream: features, train with the E stream, score with l1 = l2 = 0.1.
"${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/b" --dataset mvtec3d --random-backbone 0 >/dev/null
"$bin/check_estimate" fc-est "$work/b/mvtec3d/bagel.features.h5" "$(f b)"; ok "features: normals_est encoded, identity carried" '[ $? -eq 0 ]'
S=(--set mapper.resolution=16 --set mapper.ca_reduction=36 --set mapper.sel_hidden=16 --set train.noise_sigma=0 --set train.steps=3)
"${mp[@]}" -n 1 "$bin/cmds-train" --cache "$work/b" --run "$work/run" --dataset mvtec3d --category bagel --shots 2 --random-backbone 0 "${S[@]}" >/dev/null
ok "train ran" '[ $? -eq 0 ]'
ok "train: E stream on" 'grep -q "\"est_stream\": true" "$work/run/models/mvtec3d/bagel/k2/default/train.record.json"'
"${mp[@]}" -n 2 "$bin/cmds-score" --cache "$work/b" --run "$work/run" --dataset mvtec3d --category bagel --shots 2 "${S[@]}" >/dev/null
ok "score ran with l1 = l2 = 0.1" '[ $? -eq 0 ] && [ -f "$work/run/maps/mvtec3d/bagel/k2/default/maps.default.h5" ]'
ok "score: E stream available" 'grep -q "\"est_available\": true" "$work/run/maps/mvtec3d/bagel/k2/default/score.record.json"'
"$bin/check_estimate" fc-est "$work/b/mvtec3d/bagel.features.h5" "$(f b)" "$work/run/maps/mvtec3d/bagel/k2/default/streams.h5"
ok "score: the streams record the estimate's identity" '[ $? -eq 0 ]'
test_end
