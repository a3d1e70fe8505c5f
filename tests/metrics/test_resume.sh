#!/bin/sh
# A complete result is skipped on the next run, recomputed with --force, and recomputed
# when asked for another curve. Usage: test_resume.sh BIN FIXTURES OUT MPIEXEC...
set -u
bin=$1; fx=$2; out=$3; shift 3
rm -rf "$out"; mkdir -p "$out"
pass=0; fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $2" >&2; fi; }
run() { "$@" "$bin/cmds-metrics" --maps "$fx/ties_levels.h5" --maps "$fx/diagonal_touch.h5" --out-dir "$out" --label method=m1; }
run "$@" -n 2 >"$out/1.log" 2>&1; ok $? "first run failed"
[ -e "$out/ties_levels.metrics.json" ] && [ -e "$out/diagonal_touch.metrics.csv" ] && [ -e "$out/ties_levels.metrics.record.json" ] && [ -e "$out/ties_levels.metrics.pro.tsv" ]
ok $? "outputs missing after the first run"
cp "$out/ties_levels.metrics.json" "$out/first.json"
run "$@" -n 2 >"$out/2.log" 2>&1; ok $? "second run failed"
[ "$(grep -c 'complete, skipped' "$out/2.log")" = 2 ]; ok $? "second run did not skip both complete results"
"$@" -n 1 "$bin/cmds-metrics" --maps "$fx/ties_levels.h5" --out-dir "$out" --label method=m1 --force >"$out/3.log" 2>&1; ok $? "--force run failed"
grep -q 'skipped' "$out/3.log"; [ $? -ne 0 ]; ok $? "--force skipped"
cmp -s "$out/first.json" "$out/ties_levels.metrics.json"; ok $? "recomputed result differs"
"$@" -n 1 "$bin/cmds-metrics" --maps "$fx/ties_levels.h5" --out-dir "$out" --curve thresholds:50 >"$out/4.log" 2>&1; ok $? "thresholds run failed"
grep -q '"curve": "thresholds:50"' "$out/ties_levels.metrics.json"; ok $? "another curve did not recompute"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
