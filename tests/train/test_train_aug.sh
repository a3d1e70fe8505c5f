#!/usr/bin/env bash
# cmds-train with augmented rows in the E stream (METHOD.md section 5), on the caches
# features.augmented leaves (fixture aug_cache: bagel, 2 support samples, 4 augmented rows:
# 2 for k = 1 (sample ids augmented/k1/...), 2 for k = 2; and the same cache without them):
#   - k = 2 takes only its 2 rows (augmented/k2/...), k = 1 only its 2 (recorded, also in
#     mapper.json); a cache with rows for k = 2 only gives k = 1 none, with a note (rows for
#     k = 3, 2, 3 interleaved: the note lists each k once, sorted);
#   - data parallel: --ranks-per-task 2 (batch 1 per rank) equals 1 rank x batch 2 to 1e-5, with
#     the backbone online (noise on the augmented RGB too);
#   - the augmented rows change the result: weights differ from the cache without them;
#   - train.augmented=0 leaves the augmented rows out of the E stream: the same weights as the
#     cache without them, other weights than train.augmented=1, recorded (record, mapper.json,
#     metadata), and the model is not reused for train.augmented=1; a model from before the key
#     (its config_key does not name it) counts as train.augmented=1;
#   - a rerun skips; after the augmented group is replaced (and features rerun) the task is
#     retrained; a sample cache whose augmented group is newer than the features is refused.
#   test_train_aug.sh BIN_DIR AUG_WORK WORK MPIEXEC...
set -uo pipefail
bin=$1 aug=$2 work=$3
shift 3
mp=("$@")
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
test_begin "$work"
model() { echo "$1/models/mvtec3d/bagel/k$2/default"; }
S=(--dataset mvtec3d --category bagel --random-backbone 0 --set mapper.resolution=16 --set mapper.ca_reduction=36
   --set mapper.sel_hidden=16 --set train.steps=4 --set train.noise_sigma=0.05)
cp -r "$aug/train" "$work/cache"
cache=$work/cache

"${mp[@]}" -n 1 "$bin/cmds-train" --cache "$cache" --run "$work/a" --shots 1,2 "${S[@]}" >/dev/null
ok "k = 1, 2 on 1 rank" '[ $? -eq 0 ]'
r1=$(model "$work/a" 1)/train.record.json r2=$(model "$work/a" 2)/train.record.json
ok "k = 2: E pool 2 support + its 2 augmented rows (of 4)" '[ "$(num "$r2" est_augmented_rows)" = 2 ] && [ "$(num "$r2" est_support_rows)" = 2 ] && [ "$(num "$r2" augmented_rows_in_cache)" = 4 ]'
ok "k = 1: only the 2 rows made for k = 1" '[ "$(num "$r1" est_augmented_rows)" = 2 ] && [ "$(num "$r1" est_support_rows)" = 1 ] && grep -q "\"est_augmented_note\": \"\"" "$r1"'
ok "augmented_id recorded (record and mapper.json)" 'grep -q "\"augmented_id\": \"test train 4\"" "$r2" && grep -q "\"augmented_id\": \"test train 4\"" "$(model "$work/a" 2)/mapper.json"'
ok "E stream on, backbone online" 'grep -q "\"est_stream\": true" "$r2" && grep -q "\"backbone_online\": true" "$r2"'

"${mp[@]}" -n 2 "$bin/cmds-train" --cache "$cache" --run "$work/b" --shots 2 "${S[@]}" --ranks-per-task 2 >/dev/null
ok "k = 2 on a group of 2 ranks" '[ $? -eq 0 ]'
out=$("$bin/train_compare" "$(model "$work/a" 2)/mapper.safetensors" "$(model "$work/b" 2)/mapper.safetensors" --rel 1e-5); rc=$?
echo "data parallel: $(echo "$out" | tail -1)"
ok "2 ranks x batch 1 equals 1 rank x batch 2 (1e-5)" '[ $rc -eq 0 ]'

"${mp[@]}" -n 1 "$bin/cmds-train" --cache "$aug/plain" --run "$work/p" --shots 2 "${S[@]}" >/dev/null
ok "the cache without augmented rows" '[ $? -eq 0 ] && [ "$(num "$(model "$work/p" 2)/train.record.json" est_augmented_rows)" = 0 ]'
"$bin/train_compare" "$(model "$work/a" 2)/mapper.safetensors" "$(model "$work/p" 2)/mapper.safetensors" >/dev/null
ok "augmented rows change the weights" '[ $? -eq 1 ]'

# train.augmented=0 (the "w/o augmentation" ablation on the augmented cache): the E stream leaves
# the rows out (the same weights as the cache without them), says so, and the model is another
# configuration (not reused for train.augmented=1)
"${mp[@]}" -n 1 "$bin/cmds-train" --cache "$cache" --run "$work/n" --shots 2 "${S[@]}" --set train.augmented=0 >/dev/null
rn=$(model "$work/n" 2)
ok "train.augmented=0: trained, 0 augmented rows, recorded" '[ $? -eq 0 ] && [ "$(num "$rn/train.record.json" est_augmented_rows)" = 0 ] && [ "$(num "$rn/train.record.json" augmented_rows_in_cache)" = 4 ] && grep -q "\"train.augmented\": \"0\"" "$rn/train.record.json" && grep -q "\"augmented\": false" "$rn/train.record.json" && grep -q "\"est_augmented_note\": \"train.augmented=0" "$rn/train.record.json"'
ok "train.augmented=0 in mapper.json (config, streams) and the model metadata" 'grep -q "\"train.augmented\": \"0\"" "$rn/mapper.json" && grep -q "\"augmented\": false" "$rn/mapper.json" && grep -q "\"augmented_id\": \"none\"" "$rn/mapper.json" && grep -aq "train.augmented=0" "$rn/mapper.safetensors"'
"$bin/train_compare" "$(model "$work/a" 2)/mapper.safetensors" "$rn/mapper.safetensors" >/dev/null
ok "train.augmented=0 and =1 give different weights" '[ $? -eq 1 ]'
out=$("$bin/train_compare" "$(model "$work/p" 2)/mapper.safetensors" "$rn/mapper.safetensors" --rel 0); rc=$?
ok "train.augmented=0 equals training on the cache without augmented rows ($(echo "$out" | tail -1))" '[ $rc -eq 0 ]'
ok "the =1 record says so" 'grep -q "\"train.augmented\": \"1\"" "$r2" && grep -q "\"augmented\": true" "$r2"'
msg=$("${mp[@]}" -n 1 "$bin/cmds-train" --cache "$cache" --run "$work/n" --shots 2 "${S[@]}" 2>&1); rc=$?
ok "a train.augmented=0 model is not reused for train.augmented=1 ($msg)" '[ $rc -ne 0 ] && grep -q "trained with another configuration" <<<"$msg" && grep -q "train.augmented=0" <<<"$msg"'

cp "$(model "$work/a" 2)/mapper.safetensors" "$work/before.safetensors"
out=$("${mp[@]}" -n 1 "$bin/cmds-train" --cache "$cache" --run "$work/a" --shots 2 "${S[@]}" 2>&1)
ok "rerun skips (file untouched)" '[ $? -eq 0 ] && ! grep -q "retraining" <<<"$out" && [ ! "$(model "$work/a" 2)/mapper.safetensors" -nt "$work/before.safetensors" ]'
"${mp[@]}" -n 2 "$bin/aug_tool" add "$cache/mvtec3d/bagel.h5" 2 "test train new"
msg=$("${mp[@]}" -n 1 "$bin/cmds-train" --cache "$cache" --run "$work/a" --shots 2 "${S[@]}" --force 2>&1); rc=$?
ok "augmented group newer than the features: refused ($msg)" '[ $rc -ne 0 ] && grep -q "rerun cmds-estimate and cmds-features" <<<"$msg"'
"${mp[@]}" -n 2 "$bin/aug_tool" fake-est "$cache/mvtec3d/bagel.h5" &&
  "${mp[@]}" -n 2 "$bin/cmds-features" --cache "$cache" --dataset mvtec3d --random-backbone 0 >/dev/null
out=$("${mp[@]}" -n 1 "$bin/cmds-train" --cache "$cache" --run "$work/a" --shots 2 "${S[@]}" 2>&1)
ok "a new augmented group retrains ($out)" '[ $? -eq 0 ] && grep -q "augmented samples changed" <<<"$out" && [ "$(num "$r2" est_augmented_rows)" = 2 ] && grep -q "\"augmented_id\": \"test train new\"" "$r2"'
# the new group has rows for k = 2 only: k = 1 trains without augmented rows and says why
"${mp[@]}" -n 1 "$bin/cmds-train" --cache "$cache" --run "$work/a" --shots 1 "${S[@]}" >/dev/null 2>&1
ok "k = 1, rows for k = 2 only: trained, 0 augmented rows, a note" '[ $? -eq 0 ] && [ "$(num "$r1" est_augmented_rows)" = 0 ] && grep -q "\"est_augmented_note\": \"the sample cache has augmented rows for k = 2 only, none for k = 1" "$r1"'
# rows of several k's interleaved (k = 3, 2, 3, none for k = 1): each k named once, sorted
"${mp[@]}" -n 2 "$bin/aug_tool" add "$cache/mvtec3d/bagel.h5" 1 "test train interleaved" --shots 3,2,3 &&
  "${mp[@]}" -n 2 "$bin/aug_tool" fake-est "$cache/mvtec3d/bagel.h5" &&
  "${mp[@]}" -n 2 "$bin/cmds-features" --cache "$cache" --dataset mvtec3d --random-backbone 0 >/dev/null
ok "augmented rows for k = 3, 2, 3" '[ $? -eq 0 ]'
"${mp[@]}" -n 1 "$bin/cmds-train" --cache "$cache" --run "$work/a" --shots 1 "${S[@]}" >/dev/null 2>&1
ok "k = 1, rows for k = 3, 2, 3: the note says k = 2,3 ($(grep -o '"est_augmented_note": "[^"]*"' "$r1"))" \
  '[ $? -eq 0 ] && grep -q "\"est_augmented_note\": \"the sample cache has augmented rows for k = 2,3 only, none for k = 1 " "$r1"'
# a model from before train.augmented existed (its cmds.config_key does not name it) counts as
# train.augmented=1, what it did: reused for 1, another configuration for 0
pm=$(model "$work/p" 2)/mapper.safetensors
perl -e 'open(F, "+<", $ARGV[0]) or die; binmode F; read(F, $l, 8); $n = unpack("Q<", $l); read(F, $h, $n);
  $h =~ s/;train\.augmented=1;/;/ or die "no key"; $h .= " " x ($n - length $h); seek(F, 8, 0); print F $h; close F' "$pm"
ok "a model without train.augmented in its config_key" '[ $? -eq 0 ] && ! grep -aq "train.augmented=" "$pm"'
cp "$pm" "$work/old.safetensors"
out=$("${mp[@]}" -n 1 "$bin/cmds-train" --cache "$aug/plain" --run "$work/p" --shots 2 "${S[@]}" 2>&1)
ok "it is reused for train.augmented=1 ($out)" '[ $? -eq 0 ] && grep -q "up to date, skipped" <<<"$out" && cmp -s "$pm" "$work/old.safetensors"'
msg=$("${mp[@]}" -n 1 "$bin/cmds-train" --cache "$aug/plain" --run "$work/p" --shots 2 "${S[@]}" --set train.augmented=0 2>&1)
ok "and is another configuration for train.augmented=0 ($msg)" '[ $? -ne 0 ] && grep -q "trained with another configuration" <<<"$msg"'
test_end
