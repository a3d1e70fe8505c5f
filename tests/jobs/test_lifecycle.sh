#!/bin/bash
# cmds-run's stage lifecycle: when a stage changes its outputs, every later stage runs again
# (and skips by itself what is still valid) instead of being skipped as done. A tiny job
# (MVTec 3D-AD layout made by cmds-synth beforehand, one category, k = 1 and 2, the random
# backbone, 16 x 16 mappers, 3 steps):
#  1. a prep argument changes (the dataset's root moves to an identical copy): prep rebuilds the
#     cache (its prep_config names the root), every later stage runs, features computes the
#     features again (the sample cache's identity changed), train retrains, score maps again,
#     metrics runs and its results are those of the maps as they are now (each records the
#     maps' maps_id; the copy being identical, the maps are too, so their results are kept);
#  2. the sample cache is deleted: prep rebuilds it with the same arguments and every later
#     stage runs again (features finds its features still valid);
#  3. array tasks (--stage train --task-index I, as the Slurm jobs run): a task that trains
#     removes the state of score, metrics and report, not train's; a task that only skips
#     removes nothing;
#  4. with the estimate stage (the tiny Marigold checkpoint, when present): the cache is
#     deleted, prep rebuilds it without normals_est and removes estimate's record, estimate
#     runs again and the cache has normals_est again;
#  5. a features run that stopped after changing outputs (RUN/state/features.started left):
#     the next run, although features only skips, makes every later stage run again;
#  and a rerun after each skips every stage.
# Usage: test_lifecycle.sh BIN SOURCE_DIR WORK
set -u
bin=$1; src=$2; work=$3
rm -rf "$work"; mkdir -p "$work"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 CMDS_PROGRESS=off
pass=0; fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $2" >&2; fi; }
marigold=$src/tests/fixtures/diffusion_marigold/ckpt
t_start=$(date +%s)
"$bin/cmds-synth" --format mvtec3d --out "$work/data1" --seed 5 --size 64 --categories bagel --train 2 --validation 1 \
  --test-good 1 --test-per-defect 1 >/dev/null
cp -a "$work/data1" "$work/data2"
spec() { # root, estimate (1/0)
  cat <<EOS
job: life
version: 1
run: $work/run$2
cache: $work/cache$2
ranks: 2
device: cpu
backbone: {random: 0}
EOS
  [ "$2" = 1 ] && echo "estimate: {marigold: $marigold}"
  cat <<EOS
datasets:
  - {name: mvtec3d, root: $work/$1, categories: [bagel]}
shots: [1, 2]
config:
  mapper.resolution: 16
  mapper.ca_reduction: 36
  mapper.sel_hidden: 16
  train.steps: 3
  train.noise_sigma: 0
EOS
  [ "$2" = 1 ] || printf '  score.l1: 0\n  score.l2: 0\n'
}
later="features train score metrics report"
run() { "$bin/cmds-run" "$work/$1.yaml" -n 2 >"$work/$2.log" 2>&1; ok $? "$2: cmds-run failed: $(tail -20 "$work/$2.log")"; }
ran() { ! grep -q "\[cmds-run\] $1: done in an earlier run, skipped" "$work/$2.log" && grep -q "\[cmds-run\] $1: .*cmds-" "$work/$2.log"; }
all_skipped() { # log, stage count
  [ "$(grep -c 'done in an earlier run, skipped' "$work/$1.log")" = "$2" ]
  ok $? "$1: a rerun ran a stage: $(grep '\[cmds-run\]' "$work/$1.log" | grep -v 'skipped')"
}
mtime() { stat -c %Y.%i "$@" 2>/dev/null; }
maps=$work/run0/maps/mvtec3d/bagel

spec data1 0 >"$work/a.yaml"
spec data2 0 >"$work/b.yaml"
run a a1
models_before=$(mtime "$work"/run0/models/mvtec3d/bagel/k*/*/mapper.safetensors)
maps_before=$(mtime "$maps"/k*/*/maps.*.h5)
fc_before=$(mtime "$work/cache0/mvtec3d/bagel.features.h5")
run a a1b
all_skipped a1b 6

# ---- 1: a prep argument changes ----------------------------------------------------------------
sleep 1
run b b1
grep -q "prep mvtec3d/bagel: .* samples -> " "$work/b1.log"; ok $? "1: prep did not rebuild the cache: $(grep '^prep' "$work/b1.log")"
for st in $later; do ran "$st" b1; ok $? "1: $st was skipped as done after prep rebuilt the cache"; done
grep -q "features mvtec3d/bagel: .* images through the backbone" "$work/b1.log"
ok $? "1: features kept the features of the old cache: $(grep '^features' "$work/b1.log")"
[ "$(mtime "$work/cache0/mvtec3d/bagel.features.h5")" != "$fc_before" ]; ok $? "1: the feature cache was not rewritten"
[ "$(grep -c 'made from other features .* retraining' "$work/b1.log")" = 2 ]
ok $? "1: train did not retrain both models: $(grep '^\[train\]\|^train' "$work/b1.log")"
[ "$(mtime "$work"/run0/models/mvtec3d/bagel/k*/*/mapper.safetensors)" != "$models_before" ]; ok $? "1: models not rewritten"
[ "$(mtime "$maps"/k*/*/maps.*.h5)" != "$maps_before" ]; ok $? "1: maps not rewritten"
# Each result must record its maps' current content identity (cmds-metrics keeps a result
# exactly while they agree; identical maps, as here, keep theirs).
n=0
for r in "$work"/run0/results/mvtec3d/bagel/k*/*/*.json; do
  case $r in *.record.json) continue ;; esac
  m=$(dirname "${r/\/results\//\/maps\/}")/maps.$(basename "$r" .json).h5
  id=$("$bin/score_tool" attr "$m" maps_id 2>&1)
  grep -q "\"maps_id\": \"$id\"" "$r"; ok $? "1: $r is not the result of the maps as they are now ($m: $id)"
  n=$((n + 1))
done
[ $n = 2 ]; ok $? "1: expected 2 results, found $n"
grep -q "sample_cache_id" "$work/cache0/mvtec3d/bagel.features.json"; ok $? "1: the features record names no sample_cache_id"
run b b1b
all_skipped b1b 6

# ---- 2: the sample cache is deleted ----------------------------------------------------------------
rm "$work/cache0/mvtec3d/bagel.h5"
fc_before=$(mtime "$work/cache0/mvtec3d/bagel.features.h5")
run b b2
grep -q "prep mvtec3d/bagel: .* samples -> " "$work/b2.log"; ok $? "2: prep did not rebuild the cache"
for st in $later; do ran "$st" b2; ok $? "2: $st was skipped as done after prep rebuilt the cache"; done
grep -q "features mvtec3d/bagel: up to date, skipped" "$work/b2.log"; ok $? "2: features redid valid features"
[ "$(mtime "$work/cache0/mvtec3d/bagel.features.h5")" = "$fc_before" ]; ok $? "2: the feature cache was rewritten"
[ "$(grep -c 'train .*: up to date, skipped' "$work/b2.log")" = 2 ]; ok $? "2: train retrained valid models"
[ ! -e "$work/run0/state/prep.started" ]; ok $? "2: prep.started left behind"
run b b2b
all_skipped b2b 6

# ---- 3: array tasks ------------------------------------------------------------------------------
# the training units in RUN/tasks/train.tasks order: remove the k = 1 model, run the other unit's task first
u1=$(grep -v '^#' "$work/run0/tasks/train.tasks" | awk '$3 == 1 {print NR - 1}')
u2=$((1 - u1))
rm "$(ls -d "$work"/run0/models/mvtec3d/bagel/k1/*)/mapper.safetensors"
"$bin/cmds-run" "$work/b.yaml" --stage train --task-index $u2 >"$work/b3a.log" 2>&1; ok $? "3: the k = 2 task failed"
[ -s "$work/run0/state/score.done" ] && [ ! -e "$work/run0/state/train.$u2.started" ]
ok $? "3: the k = 2 task only skipped, yet removed score's state: $(ls "$work/run0/state")"
"$bin/cmds-run" "$work/b.yaml" --stage train --task-index $u1 >"$work/b3b.log" 2>&1; ok $? "3: the k = 1 task failed: $(tail -5 "$work/b3b.log")"
[ -s "$work/run0/state/train.done" ] && [ ! -e "$work/run0/state/score.done" ] && [ ! -e "$work/run0/state/metrics.done" ] &&
  [ ! -e "$work/run0/state/report.done" ] && [ -s "$work/run0/state/features.done" ]
ok $? "3: after the k = 1 task trained: expected train and earlier done, score/metrics/report not: $(ls "$work/run0/state")"
run b b3
for st in synth prep features train; do ! ran "$st" b3; ok $? "3: $st ran again"; done
for st in score metrics report; do ran "$st" b3; ok $? "3: $st skipped as done after a train task trained"; done

# ---- 5: a run stopped after it changed outputs, before it invalidated: the next run counts it ------
# (as after a kill -9 of cmds-run just after features renamed a new feature cache in)
echo "a run of this stage started" >"$work/run0/state/features.started"
rm "$work/run0/state/features.done"
run b b5
grep -q "features mvtec3d/bagel: up to date, skipped" "$work/b5.log"; ok $? "5: features did not only skip"
for st in train score metrics report; do ran "$st" b5; ok $? "5: $st skipped as done after a stopped features run"; done
[ ! -e "$work/run0/state/features.started" ] && [ -s "$work/run0/state/features.done" ]; ok $? "5: features' state"
run b b5b
all_skipped b5b 6

# ---- 4: the estimate stage's record goes with the cache it described ----------------------------
if [ -f "$marigold/model_index.json" ]; then
  spec data1 1 >"$work/e.yaml"
  run e e1
  grep -q '"normals_est": true' "$work/cache1/mvtec3d/bagel.features.json"; ok $? "4: no normals_est features"
  rm "$work/cache1/mvtec3d/bagel.h5"
  run e e2
  ran estimate e2; ok $? "4: estimate was skipped as done after prep rebuilt the cache"
  grep -q "estimate mvtec3d/bagel: [1-9][0-9]* images through Marigold" "$work/e2.log"
  ok $? "4: estimate computed nothing: $(grep '^estimate' "$work/e2.log")"
  [ -s "$work/cache1/mvtec3d/bagel.estimate.json" ] && grep -q '"normals_est": true' "$work/cache1/mvtec3d/bagel.features.json"
  ok $? "4: the rebuilt cache has no estimated normals"
  for st in $later; do ran "$st" e2; ok $? "4: $st was skipped as done after prep rebuilt the cache"; done
  run e e2b
  all_skipped e2b 7
else
  echo "4: skipped (no Marigold fixture at $marigold)"
fi
echo "$pass passed, $fail failed ($(($(date +%s) - t_start)) s)"
[ "$fail" -eq 0 ]
