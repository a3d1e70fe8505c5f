#!/bin/bash
# cmds-run end to end on a tiny variant of jobs/demo.yaml (MVTec 3D-AD layout, one category,
# k = 1 and 2: two trained models, the random stand-in backbone, 28 x 28 mappers, 30 steps):
#  a. run A with -n 1, run B with -n 4 (fresh run directories on the same caches): identical
#     metrics JSON (except the maps path; the maps' content hash and maps_id included);
#  b. run A is killed with SIGKILL twice: during train (once the first model is finished,
#     while the second trains: its stage, told by cmds-run's death, checkpoints it; the second
#     task is held after its step 5 until its stage is told to stop, CMDS_TEST_HOLD_AT_STEP in
#     stages/train/trainer.c, so the kill always lands while it runs, however loaded the
#     machine) and during score (the k2 task is held after its first streams row,
#     CMDS_TEST_HOLD_SCORE_TASK in stages/score/score_task.c, so the kill always lands with the
#     k1 maps written, k2's finished row in streams.h5.partial and no k2 maps);
#     each time the next cmds-run finishes the job, and
#     - the stages done before the kill are skipped (state files and caches untouched),
#     - the model / maps finished before the kill are not rewritten (mtime and content),
#     - the interrupted model resumes from the checkpoint its stage wrote when cmds-run died,
#     - the interrupted score task resumes its partial streams file (computes only the rest),
#     - the results equal run B's (a killed and resumed run gives the uninterrupted results);
#  c. a third cmds-run on A skips every stage and rewrites no file under A or the caches;
#  and the manifest keeps each stage's first real cost (elapsed_s) when a later run only skips.
# Usage: test_e2e.sh BIN SOURCE_DIR WORK
set -u
bin=$1; src=$2; work=$3
rm -rf "$work"; mkdir -p "$work"
pass=0; fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $2" >&2; fi; }
t_start=$(date +%s)
spec() {
  cat <<EOS
job: e2e
version: 1
run: $work/$1
cache: $work/cache
ranks: 2
device: cpu
backbone: {random: 0}
datasets:
  - name: mvtec3d
    root: $work/data
    categories: [bagel]
    synth: {seed: 5, size: 200}
shots: [1, 2]
config:
  mapper.resolution: 28
  mapper.ca_reduction: 36
  train.steps: 30
  train.noise_sigma: 0
  score.l1: 0
  score.l2: 0
EOS
}
spec a >"$work/a.yaml"
spec b >"$work/b.yaml"
A=$work/a
run_a() { "$bin/cmds-run" "$work/a.yaml" -n 1 "$@"; }
# Starts run A in the background: $! is cmds-run itself (not a subshell, env execs it), output
# to $1; further arguments: VAR=value settings added to its environment.
start_a() { local log=$1; shift; env "$@" "$bin/cmds-run" "$work/a.yaml" -n 1 >"$log" 2>&1 & }
# mtime (ns) and size of every file under the given folders, sorted.
snapshot() { find "$@" -type f ! -name manifest.json ! -name '.cmds-run.lock' -printf '%p %T@ %s\n' 2>/dev/null | sort; }
# Waits until the stages of a killed cmds-run have stopped (they hold the run's lock).
wait_stopped() { flock -w 120 "$A/.cmds-run.lock" true; ok $? "the stages of the killed cmds-run did not stop"; }
# Starts run A in the background (output to $work/$2.log, VAR=value settings after $2 added to
# its environment) and SIGKILLs cmds-run as soon as the shell condition $1 holds.
run_a_kill_when() {
  local cond=$1 name=$2
  shift 2
  start_a "$work/$name.log" "$@"
  pid=$!
  i=0
  while [ $i -lt 3000 ] && ! eval "$cond" && kill -0 $pid 2>/dev/null; do sleep 0.05; i=$((i + 1)); done
  kill -KILL $pid 2>/dev/null
  wait $pid 2>/dev/null
  wait_stopped
}
models=$A/models/mvtec3d/bagel
maps=$A/maps/mvtec3d/bagel

# ---- b1: killed during train -------------------------------------------------------------
# The k2 model (trained after k1) is held after its step 5 until its stage is told to stop;
# cmds-run is killed once the hold is announced: k1 is finished, k2 is running.
run_a_kill_when 'grep -q "k2/.*held after step 5" "$work/a1.log"' a1 CMDS_TEST_HOLD_AT_STEP=5 CMDS_TEST_HOLD_TASK=/k2/
grep -q "\[cmds-run\] train: " "$work/a1.log"; ok $? "train never started: $(tail -5 "$work/a1.log")"
grep -q "k2/.*held after step 5" "$work/a1.log"; ok $? "the k2 task never reached its step 5: $(tail -5 "$work/a1.log")"
done_models=$(ls "$models"/k*/default-*/mapper.safetensors 2>/dev/null)
[ "$(echo "$done_models" | grep -c .)" = 1 ] && echo "$done_models" | grep -q "/k1/"
ok $? "expected the k1 model finished at the kill (and only it), got: $done_models"
ckpts=$(ls "$models"/k*/default-*/ckpt.safetensors 2>/dev/null)
[ "$(echo "$ckpts" | grep -c .)" = 1 ] && echo "$ckpts" | grep -q "/k2/"
ok $? "the interrupted k2 model wrote no checkpoint when cmds-run died: $ckpts"
# Written because its stage was told to stop (not at an interval), at the step it was held at.
ck_json=$(ls "$models"/k2/default-*/ckpt.json 2>/dev/null)
grep -q '"reason": *"signal"' "$ck_json" 2>/dev/null && grep -q '"step": *5,' "$ck_json"
ok $? "the k2 checkpoint was not written on cmds-run's death at step 5: $(cat "$ck_json" 2>/dev/null)"
snapshot "$work/cache" "$work/data" "$A/state" "$models" >"$work/b1.before"
# Kill again during score: the k2 task (scored after k1) is held after its first round of
# streams rows until its stage is told to stop; cmds-run is killed once the hold is announced.
run_a_kill_when 'grep -q "k2/.*held after streams round 1" "$work/a2.log"' a2 CMDS_TEST_HOLD_SCORE_TASK=/k2/
at_kill=$(ls "$maps"/k*/default-*/maps.*.h5 2>/dev/null)
for st in synth prep features; do
  grep -q "\[cmds-run\] $st: done in an earlier run, skipped" "$work/a2.log"; ok $? "resumed run redid stage $st"
done
grep -q "k2/.*resuming from the checkpoint at step 5$" "$work/a2.log"; ok $? "train did not resume from the checkpoint: $(grep '^\[train\]\|^train' "$work/a2.log")"
grep -q "1 done, 1 skipped" "$work/a2.log"; ok $? "train: expected 1 trained, 1 skipped: $(grep '^train:' "$work/a2.log")"
snapshot "$work/cache" "$work/data" "$A/state" "$models" >"$work/b1.after"
# Nothing that existed at the kill changed (new files: the resumed model, train's state file).
join -j1 "$work/b1.before" "$work/b1.after" | awk '$2 != $4 || $3 != $5 {print "  changed:", $1; bad = 1} END {exit bad}'
ok $? "files finished before the kill were rewritten by the resumed run"
grep -q "$(echo "$done_models" | head -1)" "$work/b1.after"; ok $? "finished model vanished"

# ---- b2: killed during score ---------------------------------------------------------------
# cmds-run was killed while the k2 task was held: its stage, told to stop, ended k2 with its
# finished row kept in streams.h5.partial. Nothing that exists now may be redone, and k2 must
# resume from its partial streams file.
grep -q "k2/.*held after streams round 1" "$work/a2.log"; ok $? "the k2 score task was never held: $(tail -5 "$work/a2.log")"
[ "$(echo "$at_kill" | grep -c .)" = 1 ] && echo "$at_kill" | grep -q "/k1/"
ok $? "expected the k1 maps written at the kill (and only them), got: $at_kill"
[ -e "$(ls -d "$maps"/k2/default-*)/streams.h5.partial" ] && [ ! -e "$(ls -d "$maps"/k2/default-*)/streams.h5" ]
ok $? "the interrupted k2 task left no partial streams file: $(ls "$maps"/k2/default-* 2>&1)"
[ -s "$A/state/train.done" ] && [ ! -e "$A/state/score.done" ]; ok $? "state after the kill in score: $(ls "$A/state")"
snapshot "$work/cache" "$A/state" "$models" "$maps" | grep -v '\.record\.json ' >"$work/b2.before"
run_a >"$work/a3.log" 2>&1; ok $? "resumed run failed: $(tail -20 "$work/a3.log")"
for st in synth prep features train; do
  grep -q "\[cmds-run\] $st: done in an earlier run, skipped" "$work/a3.log"; ok $? "second resume redid stage $st"
done
snapshot "$work/cache" "$A/state" "$models" "$maps" | grep -v '\.record\.json ' >"$work/b2.after"
grep -q "score mvtec3d/bagel/k1/.*: streams not needed .* 0 maps written, 1 up to date" "$work/a3.log"
ok $? "the k1 score task was redone: $(grep '^score ' "$work/a3.log")"
k2rec=$(ls "$maps"/k2/default-*/score.record.json)
k2n=$(sed -n 's/.*"samples_computed": \([0-9]*\).*/\1/p' "$k2rec"); k2t=$(sed -n 's/.*"test_samples": \([0-9]*\).*/\1/p' "$k2rec")
grep -q '"streams": "resumed"' "$k2rec" && [ -n "$k2n" ] && [ "$k2n" -ge 1 ] && [ "$k2n" -lt "$k2t" ]
ok $? "the k2 score task did not resume its partial streams (computed $k2n of $k2t): $(grep '^score ' "$work/a3.log")"
join -j1 "$work/b2.before" "$work/b2.after" | awk '$2 != $4 || $3 != $5 {print "  changed:", $1; bad = 1} END {exit bad}'
ok $? "files finished before the kill in score were rewritten"
grep -q "I-AUROC" "$work/a3.log"; ok $? "no table printed"
for st in synth prep features train score metrics report; do
  [ -s "$A/state/$st.done" ]; ok $? "stage $st not recorded as done"
done
echo "run A (-n 1, killed in train and in score, resumed) finished ($(($(date +%s) - t_start)) s)"

# ---- c: a third run rewrites nothing ---------------------------------------------------------
snapshot "$A" "$work/cache" "$work/data" >"$work/c.before"
sleep 1
run_a >"$work/a4.log" 2>&1; ok $? "third run failed: $(tail -5 "$work/a4.log")"
[ "$(grep -c 'done in an earlier run, skipped' "$work/a4.log")" = 7 ]; ok $? "third run ran a stage: $(grep '\[cmds-run\]' "$work/a4.log")"
snapshot "$A" "$work/cache" "$work/data" >"$work/c.after"
cmp -s "$work/c.before" "$work/c.after"; ok $? "the third run rewrote files: $(diff "$work/c.before" "$work/c.after" | head -6)"
grep -q '"schema": "cmds.run_manifest"' "$A/manifest.json" && [ "$(grep -c '"status": "done"' "$A/manifest.json")" = 7 ]
ok $? "manifest: not every stage done"

# Timing: a run whose stage only skips keeps the stage's first cost (elapsed_s).
cp "$A/state/features.done" "$work/features.done.orig"
sed -i 's/^fingerprint .*/fingerprint 0/' "$A/state/features.done"   # as after a rebuild
run_a >"$work/a5.log" 2>&1; ok $? "run after a changed fingerprint failed"
grep -q "features mvtec3d/bagel: up to date, skipped" "$work/a5.log"; ok $? "features did not skip"
orig=$(sed -n 's/^elapsed_s //p' "$work/features.done.orig")
[ "$(sed -n 's/^elapsed_s //p' "$A/state/features.done")" = "$orig" ] && grep -q '^last_elapsed_s [0-9]' "$A/state/features.done"
ok $? "features' elapsed_s overwritten by a skipping run: $(cat "$A/state/features.done")"
grep -q '"last_elapsed_s"' "$A/manifest.json"; ok $? "manifest has no last_elapsed_s"

# ---- a: -n 4 into a fresh run directory: the same results --------------------------------------
"$bin/cmds-run" "$work/b.yaml" -n 4 >"$work/b.log" 2>&1; ok $? "-n 4 run failed: $(tail -20 "$work/b.log")"
grep -q "mpiexec -n 4 .*cmds-train " "$work/b.log"; ok $? "run B did not use 4 ranks"
n=0
for a in "$A"/results/mvtec3d/bagel/k*/*/*.json; do
  case $a in *.record.json) continue ;; esac
  b=$work/b/${a#"$A"/}
  grep -v '"maps":' "$a" >"$work/a.cmp"; grep -v '"maps":' "$b" >"$work/b.cmp" 2>/dev/null
  cmp -s "$work/a.cmp" "$work/b.cmp"; ok $? "-n 1 (killed, resumed) and -n 4 results differ: $a: $(diff "$work/a.cmp" "$work/b.cmp" | head -6)"
  n=$((n + 1))
done
[ $n = 2 ]; ok $? "expected 2 results, compared $n"
for k in 1 2; do
  cmp -s "$(ls "$models"/k$k/default-*/mapper.safetensors)" "$(ls "$work"/b/models/mvtec3d/bagel/k$k/default-*/mapper.safetensors)"
  ok $? "k$k: the resumed -n 1 model differs from the -n 4 one"
done
grep '"i_auroc"\|"aupro_30"' $(ls "$A"/results/mvtec3d/bagel/k*/*/*.json | grep -v '\.record\.json$') | sed "s|$A/||; s/^/  /"
echo "$pass passed, $fail failed ($(($(date +%s) - t_start)) s)"
[ "$fail" -eq 0 ]
