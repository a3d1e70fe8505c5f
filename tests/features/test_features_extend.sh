#!/usr/bin/env bash
# cmds-features extends a complete feature cache whose estimated / augmented part went stale
# instead of computing it again (cmds_fc_extend). Synthetic bagel (cmds-synth -> cmds-prep,
# 2 support samples, S = 32), random backbone, normals_est from cmds-estimate on the tiny
# random Marigold fixture (augmented rows from aug_tool, as in test_features_aug.sh):
#   - no normals_est: 2 N images (rgb + normals of the N support/test rows);
#   - cmds-estimate, then features: only the N normals_est rows are computed (-n 1 and -n 2),
#     rgb/normals bit-identical to the first file, everything identical to a --force run;
#     killed in the copy: the complete file untouched, no partial; killed after some rows:
#     the complete file untouched, the rerun resumes and computes only the rest;
#   - estimate again with another seed (new normals_est_id): only normals_est recomputed;
#   - an augmented group added, then replaced: only its rows (rgb + normals_est) computed;
#   - the sample cache without normals_est again (prep rebuilt it with the same settings):
#     nothing computed, normals_est and /augmented dropped, the file equals the first one;
#   - other weights: computed from scratch, the stage says why; --force: everything computed.
#   test_features_extend.sh BIN_DIR PLUGIN_DIR CHECKPOINT WORK MPIEXEC...
set -uo pipefail
bin=$1 plugin=$2 ckpt=$3 work=$4
shift 4
mp=("$@")
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
test_begin "$work"
export HDF5_PLUGIN_PATH=$plugin
# rows_reused of modality $2 in record $1
reused() { sed -n '/"rows_reused": {/,/}/p' "$1" | grep -o "\"$2\": [0-9]*" | awk '{print $2}'; }
# --batch 1: with larger batches a row's features depend on which rows share its batch (GEMM
# blocking: 1-2 float16 ulps in ~0.1 % of values), so only --batch 1 files made in different
# orders (resumed, extended, other rank counts) are bit-identical
F=(--dataset mvtec3d --random-backbone 0 --batch 1)
c() { echo "$work/$1/mvtec3d/bagel.h5"; }
fc() { echo "$work/$1/mvtec3d/bagel.features.h5"; }
rec() { echo "$work/$1/mvtec3d/bagel.features.json"; }
feat() { local n=$1 d=$2; shift 2; "${mp[@]}" -n "$n" "$bin/cmds-features" --cache "$work/$d" "${F[@]}" "$@"; }
estim() { "${mp[@]}" -n 2 "$bin/cmds-estimate" --cache "$work/$1" --dataset mvtec3d --marigold "$ckpt" \
            --data "$work/data/mvtec3d" "${@:2}" >/dev/null; }
same() { "$bin/check_features" same "$@" >/dev/null; }
# from scratch in a copy of cache $1 (its sample cache as it is now): the reference
scratch() { rm -rf "$work/ref" && mkdir -p "$work/ref/mvtec3d" && cp "$(c "$1")" "$(c ref)" && feat 2 ref >/dev/null; }

"$bin/cmds-synth" --format mvtec3d --out "$work/data/mvtec3d" --seed 3 --size 64 --categories bagel \
  --train 3 --validation 1 --test-good 1 --test-per-defect 1 >/dev/null
"${mp[@]}" -n 2 "$bin/cmds-prep" --dataset mvtec3d --root "$work/data/mvtec3d" --out "$work/base" --shots 2 --size 32 >/dev/null
ok "prep" '[ $? -eq 0 ]'
mkdir -p "$work/x/mvtec3d" "$work/y/mvtec3d" && cp "$(c base)" "$(c x)"

# 1. No normals_est: rgb and normals of every row.
feat 2 x >/dev/null; ok "features without normals_est" '[ $? -eq 0 ]'
n2=$(num "$(rec x)" images_computed); N=$(( ${n2:-0} / 2 ))
ok "2 N images ($n2), nothing reused" '[ "$N" -ge 4 ] && [ "$(num "$(rec x)" rows_reused_total)" = 0 ] && grep -q "\"extended_from\": \"\"" "$(rec x)"'
cp "$(fc x)" "$work/fc0.h5"

# 2. cmds-estimate adds normals_est.
estim x; ok "cmds-estimate" '[ $? -eq 0 ]'
cp "$(c x)" "$(c y)" && cp "$work/fc0.h5" "$(fc y)"
# killed after the copy, before the rename: nothing published
CMDS_TEST_KILL_IN_EXTEND=1 feat 2 x >/dev/null 2>&1
ok "killed in the copy: non-zero" '[ $? -ne 0 ]'
ok "killed in the copy: no partial file, the complete one untouched" '[ ! -e "$(fc x).partial" ] && cmp -s "$(fc x)" "$work/fc0.h5"'
# killed after some rows: the partial file is kept, the complete one untouched
CMDS_TEST_KILL_AFTER_ROWS=2 feat 2 x >/dev/null 2>&1
ok "killed after 2 rows: non-zero, partial kept" '[ $? -ne 0 ] && [ -e "$(fc x).partial" ]'
ok "killed after 2 rows: the complete file untouched" 'cmp -s "$(fc x)" "$work/fc0.h5"'
out=$(feat 2 x); ok "resumed ($out)" '[ $? -eq 0 ] && grep -q "(resumed)" <<<"$out" && [ ! -e "$(fc x).partial" ] && [ ! -e "$(fc x).extend" ]'
k=$(num "$(rec x)" images_computed) ke=$(reused "$(rec x)" normals_est)
ok "resumed: only the rest of normals_est ($k computed + $ke reused = $N)" '[ "$k" -ge 1 ] && [ "$k" -lt "$N" ] && [ $((k + ke)) -eq "$N" ] && [ "$(reused "$(rec x)" rgb)" = "$N" ]'
# uninterrupted, -n 1
out=$(feat 1 y); ok "extended on 1 rank ($out)" '[ $? -eq 0 ] && grep -q "(extended)" <<<"$out"'
ok "extended: N images ($(num "$(rec y)" images_computed) of N = $N), rgb/normals reused" \
  '[ "$(num "$(rec y)" images_computed)" = "$N" ] && [ "$(reused "$(rec y)" rgb)" = "$N" ] && [ "$(reused "$(rec y)" normals)" = "$N" ] && [ "$(reused "$(rec y)" normals_est)" = 0 ] && grep -q "\"extended_from\": \"$(fc y)\"" "$(rec y)"'
same "$work/fc0.h5" "$(fc y)" support/rgb test/rgb support/normals test/normals
ok "extended: rgb and normals bit-identical to the first file" '[ $? -eq 0 ]'
scratch x; ok "from scratch (--force equivalent): 3 N images" '[ "$(num "$(rec ref)" images_computed)" = $((3 * N)) ]'
same "$(fc y)" "$(fc ref)"; ok "extended (-n 1) equals from scratch" '[ $? -eq 0 ]'
same "$(fc x)" "$(fc ref)"; ok "killed + resumed (-n 2) equals from scratch" '[ $? -eq 0 ]'
sz=$(stat -c %s "$(fc x)") szr=$(stat -c %s "$(fc ref)")
ok "extended file compact ($sz bytes, from scratch $szr)" '[ "$sz" -le $((szr + szr / 10)) ]'
out=$(feat 2 x); ok "rerun skips" 'grep -q "up to date" <<<"$out"'
cp "$(fc x)" "$work/fc1.h5"

# 3. cmds-estimate with another seed: a new normals_est_id, only normals_est is stale.
estim x --seed 5 --force; ok "cmds-estimate --seed 5 --force" '[ $? -eq 0 ]'
feat 2 x >/dev/null; ok "features after the new estimate" '[ $? -eq 0 ]'
ok "new normals_est_id: N images, rgb/normals reused, normals_est not" \
  '[ "$(num "$(rec x)" images_computed)" = "$N" ] && [ "$(reused "$(rec x)" rgb)" = "$N" ] && [ "$(reused "$(rec x)" normals_est)" = 0 ] && grep -q "seed=5" "$(rec x)"'
"$bin/check_features" same "$work/fc1.h5" "$(fc x)" support/normals_est >/dev/null 2>&1
ok "normals_est changed (the check can fail)" '[ $? -ne 0 ]'
scratch x; same "$(fc x)" "$(fc ref)"; ok "new estimate: equals from scratch" '[ $? -eq 0 ]'

# 4. An augmented group (2 rows), then another one (1 row): only its rows are computed.
"${mp[@]}" -n 2 "$bin/aug_tool" add "$(c x)" 2 "test extend 2" && "${mp[@]}" -n 2 "$bin/aug_tool" fake-est "$(c x)"
ok "augmented group added" '[ $? -eq 0 ]'
feat 2 x >/dev/null; ok "features with the augmented group" '[ $? -eq 0 ]'
ok "augmented: 4 images (2 rows, rgb + normals_est), the rest reused" \
  '[ "$(num "$(rec x)" images_computed)" = 4 ] && [ "$(reused "$(rec x)" normals_est)" = "$N" ] && [ "$(num "$(rec x)" augmented_rows)" = 2 ]'
scratch x; same "$(fc x)" "$(fc ref)"; ok "augmented: equals from scratch" '[ $? -eq 0 ]'
"${mp[@]}" -n 2 "$bin/aug_tool" add "$(c x)" 1 "test extend 1" && "${mp[@]}" -n 2 "$bin/aug_tool" fake-est "$(c x)"
ok "augmented group replaced" '[ $? -eq 0 ]'
feat 2 x >/dev/null
ok "replaced: 2 images (1 row)" '[ $? -eq 0 ] && [ "$(num "$(rec x)" images_computed)" = 2 ] && [ "$(reused "$(rec x)" normals_est)" = "$N" ]'
"$bin/aug_tool" fc "$(fc x)" "$(c x)" 1 >/dev/null; ok "replaced: 1 augmented row, the new augmented_id" '[ $? -eq 0 ]'

# 5. The sample cache without normals_est again: normals_est and /augmented dropped.
cp "$(c base)" "$(c x)"
out=$(feat 2 x); ok "no normals_est any more ($out)" '[ $? -eq 0 ] && [ "$(num "$(rec x)" images_computed)" = 0 ]'
same "$(fc x)" "$work/fc0.h5"; ok "no normals_est any more: equals the first file (attributes too)" '[ $? -eq 0 ]'

# Another base (backbone seed): computed from scratch, and the stage says why.
out=$("${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/x" --dataset mvtec3d --random-backbone 1 --batch 1)
ok "other weights: from scratch, says why ($out)" '[ $? -eq 0 ] && grep -q "not reused (its weights_id differs" <<<"$out" && [ "$(num "$(rec x)" images_computed)" = $((2 * N)) ]'

# --force still computes everything.
feat 2 x --force >/dev/null
ok "--force: 2 N images, nothing reused" '[ "$(num "$(rec x)" images_computed)" = $((2 * N)) ] && [ "$(num "$(rec x)" rows_reused_total)" = 0 ]'
test_end
