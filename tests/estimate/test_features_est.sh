#!/usr/bin/env bash
# The estimated stream from the sample cache to the feature cache, without Marigold:
#   - a cache given normals_est := its real normals (test_sc_est, on 2 ranks) makes cmds-features
#     encode a third modality, equal feature for feature to the normals one, with the
#     normals_est identity recorded (feature cache and stage record);
#   - a re-run skips; a cache without normals_est gives no E modality;
#   - normals_est with a row missing (a cache someone edited: cmds-estimate never publishes
#     that) is refused with a message saying to finish cmds-estimate.
#   test_features_est.sh BIN_DIR FIXTURES WORK MPIEXEC...
set -uo pipefail
bin=$1 fx=$2 work=$3
shift 3
mp=("$@")
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
test_begin "$work"
W=(--dataset mvtec3d --weights "$fx/features/vit16.safetensors" --heads 2)
for d in est none part; do mkdir -p "$work/$d/mvtec3d"; done
"${mp[@]}" -n 2 "$bin/test_sc_est" "$fx/cache/h5py_zstd.h5" "$work/est/mvtec3d/bagel.h5"
ok "normals_est written through the cache API on 2 ranks" '[ $? -eq 0 ]'
"${mp[@]}" -n 1 "$bin/test_sc_est" "$fx/cache/h5py_zstd.h5" "$work/part/mvtec3d/bagel.h5" --leave-last >/dev/null
ok "a cache with one row of normals_est missing" '[ $? -eq 0 ]'
cp "$fx/cache/h5py_zstd.h5" "$work/none/mvtec3d/bagel.h5"

"${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/est" "${W[@]}" --batch 2 >/dev/null
ok "features with normals_est" '[ $? -eq 0 ]'
"$bin/check_estimate" fc-copy "$work/est/mvtec3d/bagel.features.h5"
ok "normals_est features equal the normals features, identity recorded" '[ $? -eq 0 ]'
rec=$work/est/mvtec3d/bagel.features.json
ok "record: normals_est and its identity" 'grep -q "\"normals_est\": true" "$rec" && grep -q "\"normals_est_id\": \"marigold fnv64:0123456789abcdef:42 steps=4" "$rec"'
out=$("${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/est" "${W[@]}")
ok "re-run skips" 'grep -q "up to date" <<<"$out"'

"${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/none" "${W[@]}" >/dev/null
"$bin/check_estimate" fc-none "$work/none/mvtec3d/bagel.features.h5"
ok "no normals_est: no E modality" '[ $? -eq 0 ]'

msg=$("${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/part" "${W[@]}" 2>&1); rc=$?
ok "incomplete normals_est refused" '[ $rc -ne 0 ] && grep -q "normals_est is incomplete (rerun cmds-estimate" <<<"$msg"'
test_end
