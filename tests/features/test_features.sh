#!/usr/bin/env bash
# cmds-features end to end on the h5py-written sample cache fixture and a timm ViT:
#   - the features equal timm's (check_features), at batch 1 and batch 3;
#   - -n 2 and -n 3 (batch 1) give identical files (the same batch size: a different one moves a
#     sample's rows within OpenBLAS's micro-kernel tiles and may change the last bit of an fp16
#     feature, README "cmds-features");
#   - a run killed after 3 rows leaves a partial file; the next run computes only the rest
#     (record: resumed, images_computed) and equals the uninterrupted one;
#   - a re-run skips; bad weights / a wrong resolution / a missing cache fail clearly.
#   test_features.sh BIN_DIR PLUGIN_DIR FIXTURES WORK MPIEXEC...
set -uo pipefail
bin=$1 plugin=$2 fx=$3 work=$4
shift 4
mp=("$@")
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
test_begin "$work"
setup() { mkdir -p "$1/mvtec3d" && cp "$fx/cache/h5py_zstd.h5" "$1/mvtec3d/bagel.h5"; }
W=(--dataset mvtec3d --weights "$fx/features/vit16.safetensors" --heads 2)
setup "$work/a"; setup "$work/b"; setup "$work/k"
"${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/a" "${W[@]}" --batch 1 >/dev/null
out=$("$bin/check_features" "$work/a/mvtec3d/bagel.features.h5" "$fx/features"); rc=$?
echo "$out" | tail -2
ok "features equal timm's" '[ $rc -eq 0 ]'
"${mp[@]}" -n 1 "$bin/cmds-features" --cache "$work/b" "${W[@]}" --batch 3 >/dev/null
out=$("$bin/check_features" "$work/b/mvtec3d/bagel.features.h5" "$fx/features"); rc=$?
ok "features equal timm's at batch 3" '[ $rc -eq 0 ]'
"${mp[@]}" -n 3 "$bin/cmds-features" --cache "$work/b" "${W[@]}" --batch 1 --force >/dev/null
ok "-n 3 equals -n 2" 'HDF5_PLUGIN_PATH="$plugin" h5diff "$work/a/mvtec3d/bagel.features.h5" "$work/b/mvtec3d/bagel.features.h5" >/dev/null'
out=$("${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/a" "${W[@]}")
ok "re-run skips" 'grep -q "up to date" <<<"$out"'
CMDS_TEST_KILL_AFTER_ROWS=2 "${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/k" "${W[@]}" --batch 1 >/dev/null 2>&1
ok "killed: no final file" '[ ! -e "$work/k/mvtec3d/bagel.features.h5" ]'
ok "killed: partial kept" '[ -e "$work/k/mvtec3d/bagel.features.h5.partial" ]'
"${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/k" "${W[@]}" --batch 1 >/dev/null
rec="$work/k/mvtec3d/bagel.features.json"
ok "resumed run says so" 'grep -q "\"resumed\": true" "$rec"'
n=$(grep -o '"images_computed": [0-9]*' "$rec" | grep -o '[0-9]*$')
ok "resumed run computed only the rest ($n of 6)" '[ -n "$n" ] && [ "$n" -lt 6 ] && [ "$n" -ge 1 ]'
ok "resumed equals uninterrupted" 'HDF5_PLUGIN_PATH="$plugin" h5diff "$work/a/mvtec3d/bagel.features.h5" "$work/k/mvtec3d/bagel.features.h5" >/dev/null'
# bad inputs
head -c 1000 "$fx/features/vit16.safetensors" > "$work/trunc.safetensors"
msg=$("${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/a" --dataset mvtec3d --weights "$work/trunc.safetensors" --force 2>&1); rc=$?
ok "truncated weights refused, file named" '[ $rc -ne 0 ] && grep -q "trunc.safetensors" <<<"$msg"'
msg=$("${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/a" --dataset mvtec3d --weights "$fx/vit/timm.safetensors" --heads 2 --force 2>&1); rc=$?
ok "resolution mismatch refused" '[ $rc -ne 0 ] && grep -q "prep --size" <<<"$msg"'
msg=$("${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/none" --dataset mvtec3d "${W[@]:2}" 2>&1); rc=$?
ok "missing cache folder refused" '[ $rc -ne 0 ] && grep -q "none" <<<"$msg"'
test_end
