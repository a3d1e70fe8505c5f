#!/usr/bin/env bash
# What the later stages key on the sample cache: prep's settings, not only its sample list.
# Synthetic bagel (cmds-synth -> cmds-prep, S = 32), random backbone, k = 1, 16 x 16 mappers:
#   - the feature cache records the sample cache's identity (attribute sample_cache_id =
#     fnv64 of prep_config and sample_list_hash), the model its cmds.sample_cache_id;
#   - prep rebuilds the cache with another RANSAC seed (same sample list, other prep_config):
#     score refuses the features of the old cache, features computes them again (not "up to
#     date"), train retrains (the model's cache identity differs), score then runs;
#   - a feature cache older than the attribute is computed again, not an error.
#   test_cache_identity.sh BIN_DIR WORK MPIEXEC...
set -uo pipefail
bin=$1 work=$2
shift 2
mp=("$@")
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
test_begin "$work"
cache=$work/cache
fc=$cache/mvtec3d/bagel.features.h5
attr() { h5dump -a "/$2" "$1" 2>/dev/null | grep -o '"fnv64:[0-9a-f]*"' | tr -d '"'; }
T=(--cache "$cache" --run "$work/run" --dataset mvtec3d --category bagel --shots 1
   --set mapper.resolution=16 --set mapper.ca_reduction=36 --set mapper.sel_hidden=16 --set train.steps=2
   --set train.noise_sigma=0)
P=(--dataset mvtec3d --root "$work/data/mvtec3d" --out "$cache" --shots 1 --size 32)
features() { "${mp[@]}" -n 2 "$bin/cmds-features" --cache "$cache" --dataset mvtec3d --random-backbone 0 2>&1; }
score() { "${mp[@]}" -n 1 "$bin/cmds-score" "${T[@]}" --set score.l1=0 --set score.l2=0 2>&1; }

"$bin/cmds-synth" --format mvtec3d --out "$work/data/mvtec3d" --seed 3 --size 64 --categories bagel \
  --train 2 --validation 1 --test-good 1 --test-per-defect 1 >/dev/null
"${mp[@]}" -n 2 "$bin/cmds-prep" "${P[@]}" --seed 0 >/dev/null
ok "prep" '[ $? -eq 0 ]'
out=$(features); ok "features ($out)" '[ $? -eq 0 ]'
id0=$(attr "$fc" sample_cache_id)
ok "the feature cache records sample_cache_id ($id0)" '[ -n "$id0" ] && grep -q "\"sample_cache_id\": \"$id0\"" "$cache/mvtec3d/bagel.features.json"'
out=$("${mp[@]}" -n 1 "$bin/cmds-train" "${T[@]}" --random-backbone 0 2>&1); ok "train ($out)" '[ $? -eq 0 ]'
m=$work/run/models/mvtec3d/bagel/k1/default
ok "the model records it (metadata, mapper.json)" 'grep -aq "$id0" "$m/mapper.safetensors" && grep -q "\"sample_cache_id\": \"$id0\"" "$m/mapper.json"'
out=$(score); ok "score ($out)" '[ $? -eq 0 ]'
out=$(features); ok "features again: up to date" '[ $? -eq 0 ] && grep -q "up to date, skipped" <<<"$out"'

# prep again with another seed: same sample list, other prep_config
hash0=$(h5dump -a /sample_list_hash "$cache/mvtec3d/bagel.h5" | grep -o '"[0-9a-f]\{16\}"')
"${mp[@]}" -n 2 "$bin/cmds-prep" "${P[@]}" --seed 7 >/dev/null
ok "prep --seed 7 rebuilt the cache, same sample list" '[ $? -eq 0 ] && [ "$(h5dump -a /sample_list_hash "$cache/mvtec3d/bagel.h5" | grep -o "\"[0-9a-f]\{16\}\"")" = "$hash0" ]'
out=$(score); rc=$?
ok "score refuses features of the old cache ($out)" '[ $rc -ne 0 ] && grep -q "was made from another sample cache than .*rerun cmds-features" <<<"$out"'
out=$(features); rc=$?
id1=$(attr "$fc" sample_cache_id)
ok "features computes them again ($out)" '[ $rc -eq 0 ] && ! grep -q "up to date" <<<"$out" && grep -q "images through the backbone" <<<"$out"'
ok "new sample_cache_id ($id1)" '[ -n "$id1" ] && [ "$id1" != "$id0" ]'
out=$("${mp[@]}" -n 1 "$bin/cmds-train" "${T[@]}" --random-backbone 0 2>&1); rc=$?
ok "train retrains ($out)" '[ $rc -eq 0 ] && grep -q "retraining" <<<"$out" && grep -aq "$id1" "$m/mapper.safetensors"'
out=$(score); ok "score on the new features and model ($out)" '[ $? -eq 0 ]'

# a feature cache from before the attribute: computed again
"${mp[@]}" -n 1 "$bin/train_fc_variant" "$fc" "$work/old.features.h5" --old && mv "$work/old.features.h5" "$fc"
ok "an old feature cache (no sample_cache_id)" '[ $? -eq 0 ] && [ -z "$(attr "$fc" sample_cache_id)" ]'
out=$(features); rc=$?
ok "features computes it again ($out)" '[ $rc -eq 0 ] && grep -q "images through the backbone" <<<"$out" && [ "$(attr "$fc" sample_cache_id)" = "$id1" ]'
test_end
