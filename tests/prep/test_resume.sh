#!/usr/bin/env bash
# Nothing is lost, nothing is redone:
#  1. a re-run with the same configuration skips the category and leaves the file untouched;
#  2. a run killed (SIGKILL, injected after the first collective write) leaves no file at the
#     final name, only the .partial; the next run finishes and equals an uninterrupted run;
#  3. a changed configuration (--size) rebuilds the cache.
#   test_resume.sh BIN_DIR PLUGIN_DIR DATA_ROOT WORK_DIR MPIEXEC...
set -uo pipefail
bin=$1 plugin=$2 root=$3 work=$4
shift 4
mp=("$@")
rm -rf "$work"
pass=0 fail=0
check() { if eval "$2"; then pass=$((pass+1)); else echo "FAIL: $1"; fail=$((fail+1)); fi; }
args=(--dataset mvtec3d --root "$root" --category bagel --shots 2 --size 40 --batch 1)

"${mp[@]}" -n 2 "$bin/cmds-prep" "${args[@]}" --out "$work/ref" >/dev/null || exit 1
f="$work/ref/mvtec3d/bagel.h5"
sum=$(md5sum <"$f"); ino=$(stat -c %i:%Y "$f")
out=$("${mp[@]}" -n 2 "$bin/cmds-prep" "${args[@]}" --out "$work/ref")
check "re-run says it skipped" 'grep -q "up to date" <<<"$out"'
check "re-run leaves the file untouched" '[ "$(md5sum <"$f")" = "$sum" ] && [ "$(stat -c %i:%Y "$f")" = "$ino" ]'

CMDS_TEST_KILL_AFTER_ROUNDS=1 "${mp[@]}" -n 2 "$bin/cmds-prep" "${args[@]}" --out "$work/killed" >/dev/null 2>&1
rc=$?
check "killed run fails" '[ $rc -ne 0 ]'
check "killed run leaves no final file" '[ ! -e "$work/killed/mvtec3d/bagel.h5" ]'
check "killed run leaves its partial file" '[ -e "$work/killed/mvtec3d/bagel.h5.partial" ]'
check "killed run leaves no record" '[ ! -e "$work/killed/mvtec3d/bagel.prep.json" ]'
"${mp[@]}" -n 2 "$bin/cmds-prep" "${args[@]}" --out "$work/killed" >/dev/null
check "resumed run completes" '[ -e "$work/killed/mvtec3d/bagel.h5" ] && [ ! -e "$work/killed/mvtec3d/bagel.h5.partial" ]'
check "resumed run equals the uninterrupted one" 'HDF5_PLUGIN_PATH="$plugin" h5diff -r "$f" "$work/killed/mvtec3d/bagel.h5" >/dev/null'
check "record written" 'grep -q "\"status\": \"ok\"" "$work/killed/mvtec3d/bagel.prep.json"'

out=$("${mp[@]}" -n 2 "$bin/cmds-prep" --dataset mvtec3d --root "$root" --category bagel --shots 2 --size 32 --out "$work/ref")
check "changed config rebuilds" '! grep -q "up to date" <<<"$out" && [ "$(md5sum <"$f")" != "$sum" ]'
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
