#!/usr/bin/env bash
# cmds-train end to end on a tiny synthetic setup. One mode per ctest test:
#   setup           cmds-synth -> cmds-prep -> cmds-features --random-backbone 0 (bagel, foam; 2
#                   support samples at 64 px, ViT grid 8), plus two altered feature caches:
#                   with normals_est (a copy of the real normals' features: turns the E stream on)
#                   and without the normals modality
#   data_parallel   1 rank x batch 2 vs --ranks-per-task 2 (batch 1 per rank), E stream and online
#                   backbone with noise on: weights equal to 1e-5 relative; training lowered the loss
#   farm            4 tasks from a tasks file on -n 4 (4 groups) vs -n 1, and --task-index:
#                   bit-identical weights per task
#   resume_sigterm  a stop signal reaching one rank of a 2-rank group: both stop at the same step,
#                   checkpoint, exit 7; the rerun resumes and ends bit-identical to an uninterrupted
#                   run; SIGUSR1 sent to mpiexec (what Slurm sends) stops a run the same way
#   resume_sigkill  SIGKILL after step 6 (checkpoints every 4): the rerun resumes from step 4 and
#                   ends bit-identical
#   skip            a finished task is skipped (file untouched); another configuration under the
#                   same tag is refused; --force retrains
#   bad_inputs      missing feature cache, missing modality, wrong backbone identity, bad --set
#                   key / value, bad tasks-file lines, k too large, bad group size, bad mapper config
#   noise_online    train.noise_sigma > 0 with the random backbone: runs, the record says the
#                   backbone ran online, and the weights differ from a noise-free run
#   test_train.sh MODE BIN_DIR WORK MPIEXEC...
set -uo pipefail
mode=$1 bin=$2 work=$3
shift 3
mp=("$@")
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 CMDS_PROGRESS=off
cache=$work/cache
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh" # ok, num, test_end
pass=0 fail=0
# A small mapper (288 input channels: 3 blocks x width 96; coordinate attention 8 wide), 16 x 16.
S=(--set mapper.resolution=16 --set mapper.ca_reduction=36 --set mapper.sel_hidden=16 --set train.noise_sigma=0)
train() { "${mp[@]}" "$@"; }
model() { echo "$1/models/mvtec3d/$2/k$3/$4"; }

if [ "$mode" = setup ]; then
  rm -rf "$work"
  mkdir -p "$work"
  "$bin/cmds-synth" --format mvtec3d --out "$work/data/mvtec3d" --seed 3 --size 96 --categories bagel,foam \
    --train 3 --validation 1 --test-good 1 --test-per-defect 1 >/dev/null
  ok "synth" '[ $? -eq 0 ]'
  "${mp[@]}" -n 2 "$bin/cmds-prep" --dataset mvtec3d --root "$work/data/mvtec3d" --out "$cache" --shots 2 --size 64 >/dev/null
  ok "prep" '[ $? -eq 0 ]'
  "${mp[@]}" -n 2 "$bin/cmds-features" --cache "$cache" --dataset mvtec3d --random-backbone 0 >/dev/null
  ok "features" '[ -f "$cache/mvtec3d/bagel.features.h5" ] && [ -f "$cache/mvtec3d/foam.features.h5" ]'
  for v in est nonormals; do mkdir -p "$work/cache_$v/mvtec3d" && cp "$cache/mvtec3d/bagel.h5" "$work/cache_$v/mvtec3d/"; done
  "${mp[@]}" -n 1 "$bin/train_fc_variant" "$cache/mvtec3d/bagel.features.h5" "$work/cache_est/mvtec3d/bagel.features.h5" --add-est
  ok "feature cache with normals_est" '[ $? -eq 0 ]'
  "${mp[@]}" -n 1 "$bin/train_fc_variant" "$cache/mvtec3d/bagel.features.h5" "$work/cache_nonormals/mvtec3d/bagel.features.h5" --drop normals
  ok "feature cache without normals" '[ $? -eq 0 ]'
  test_end; exit
fi

run=$work/$mode
rm -rf "$run"
mkdir -p "$run"
case $mode in
data_parallel)
  # 1 step: Adam's first update is lr * g / (|g| + eps), so every weight checks its summed gradient
  # (1e-5 within each tensor); 8 steps: the trajectories agree to 1e-5 of the weight vector's
  # largest entry (Adam turns near-zero gradients' rounding into visible per-element updates, so
  # per-tensor agreement of zero-initialised biases is not a rounding-level bound after many steps).
  for st in 1 8; do
    N=(--set train.noise_sigma=0.05 --set train.steps=$st)
    train -n 1 "$bin/cmds-train" --cache "$work/cache_est" --run "$run/a$st" --dataset mvtec3d --category bagel --shots 2 "${S[@]}" "${N[@]}" >/dev/null
    ok "$st steps: 1 rank x batch 2 ran" '[ $? -eq 0 ]'
    train -n 2 "$bin/cmds-train" --cache "$work/cache_est" --run "$run/b$st" --dataset mvtec3d --category bagel --shots 2 "${S[@]}" "${N[@]}" \
      --ranks-per-task 2 >/dev/null
    ok "$st steps: 2 ranks x batch 1 ran" '[ $? -eq 0 ]'
    a=$(model "$run/a$st" bagel 2 default) b=$(model "$run/b$st" bagel 2 default)
    if [ $st = 1 ]; then how=--rel-each; else how=--rel; fi
    out=$("$bin/train_compare" "$a/mapper.safetensors" "$b/mapper.safetensors" $how 1e-5); rc=$?
    echo "$st steps: $(echo "$out" | tail -2 | tr '\n' ' ')"
    ok "$st steps: 2x1 equals 1x2 to 1e-5 relative ($how)" '[ $rc -eq 0 ]'
  done
  ok "E stream on, backbone online" 'grep -q "\"est_stream\": true" "$b/train.record.json" && grep -q "\"backbone_online\": true" "$b/train.record.json"'
  ok "group of 2 recorded" 'grep -q "\"ranks_per_task\": 2" "$b/train.record.json" && grep -q "\"collective\": \"mpi\"" "$b/train.record.json"'
  f0=$(num "$a/train.record.json" first_loss) f1=$(num "$a/train.record.json" final_loss)
  ok "training lowered the loss ($f0 -> $f1)" 'awk -v a="$f0" -v b="$f1" "BEGIN{exit !(b < a)}"'
  ;;
farm)
  cat > "$run/tasks.txt" <<EOF
# dataset category k tag key=value ...
mvtec3d bagel 1 t mapper.resolution=16 mapper.ca_reduction=36 mapper.sel_hidden=16

mvtec3d bagel 2 t mapper.resolution=16 mapper.ca_reduction=36 mapper.sel_hidden=16   # comment
mvtec3d foam  1 t mapper.resolution=16 mapper.ca_reduction=36 mapper.sel_hidden=16 train.seed=5
mvtec3d foam  2 mlp mapper.resolution=16 mapper.kind=mlp mapper.mlp_hidden=64 score.fusion=add
EOF
  T=(--tasks "$run/tasks.txt" --set train.steps=6 --set train.noise_sigma=0)
  train -n 1 "$bin/cmds-train" --cache "$cache" --run "$run/n1" "${T[@]}" >/dev/null
  ok "-n 1 ran" '[ $? -eq 0 ] && grep -q "\"tasks_done\": 4" "$run/n1/models/train.record.json"'
  train -n 4 "$bin/cmds-train" --cache "$cache" --run "$run/n4" "${T[@]}" >/dev/null
  ok "-n 4 ran" '[ $? -eq 0 ] && grep -q "\"tasks_done\": 4" "$run/n4/models/train.record.json" && grep -q "\"groups\": 4" "$run/n4/models/train.record.json"'
  for t in "bagel 1 t" "bagel 2 t" "foam 1 t" "foam 2 mlp"; do
    set -- $t
    out=$("$bin/train_compare" "$(model "$run/n1" $1 $2 $3)/mapper.safetensors" "$(model "$run/n4" $1 $2 $3)/mapper.safetensors"); rc=$?
    ok "$1 k$2 $3: -n 4 bit-identical to -n 1" '[ $rc -eq 0 ]'
  done
  train -n 2 "$bin/cmds-train" --cache "$cache" --run "$run/idx" "${T[@]}" --task-index 2 >/dev/null
  ok "--task-index 2 trains only the third task" '[ -f "$(model "$run/idx" foam 1 t)/mapper.safetensors" ] && [ ! -e "$(model "$run/idx" bagel 1 t)" ] && [ -f "$run/idx/models/train.task2.record.json" ]'
  out=$("$bin/train_compare" "$(model "$run/n1" foam 1 t)/mapper.safetensors" "$(model "$run/idx" foam 1 t)/mapper.safetensors"); rc=$?
  ok "--task-index result bit-identical (2 groups of 1, one task)" '[ $rc -eq 0 ]'
  out=$("$bin/train_compare" "$(model "$run/n1" bagel 1 t)/mapper.safetensors" "$(model "$run/n1" bagel 2 t)/mapper.safetensors"); rc=$?
  ok "different tasks give different weights (the comparison can fail)" '[ $rc -eq 1 ]'
  ;;
resume_sigterm)
  R=(--cache "$cache" --dataset mvtec3d --category bagel --shots 2 "${S[@]}" --set train.steps=12 --ranks-per-task 2 --checkpoint-every 4)
  train -n 2 "$bin/cmds-train" --run "$run/ref" "${R[@]}" >/dev/null
  ok "uninterrupted run" '[ $? -eq 0 ]'
  d=$(model "$run/k" bagel 2 default)
  CMDS_TEST_SIGNAL_AT_STEP=5 train -n 2 "$bin/cmds-train" --run "$run/k" "${R[@]}" >/dev/null 2>"$run/err.txt"; rc=$?
  ok "stopped run exits 7 (rc $rc)" '[ $rc -eq 7 ]'
  ok "checkpoint at the signal step 5" 'grep -q "\"step\": 5" "$d/ckpt.json" && grep -q "\"reason\": \"signal\"" "$d/ckpt.json"'
  ok "no finished model after a stop" '[ ! -e "$d/mapper.safetensors" ]'
  ok "the record says interrupted" 'grep -q "\"tasks_interrupted\": 1" "$run/k/models/train.record.json"'
  train -n 2 "$bin/cmds-train" --run "$run/k" "${R[@]}" >/dev/null
  ok "rerun finishes" '[ $? -eq 0 ] && grep -q "\"resumed_from_step\": 5" "$d/train.record.json"'
  out=$("$bin/train_compare" "$(model "$run/ref" bagel 2 default)/mapper.safetensors" "$d/mapper.safetensors"); rc=$?
  echo "$out" | tail -1
  ok "resumed run bit-identical to the uninterrupted one" '[ $rc -eq 0 ]'
  ok "checkpoint removed when finished" '[ ! -e "$d/ckpt.safetensors" ] && [ ! -e "$d/ckpt.json" ]'
  # a real signal through mpiexec (Slurm sends SIGTERM/SIGUSR1 to the job step)
  d=$(model "$run/u" bagel 2 default)
  "${mp[@]}" -n 2 "$bin/cmds-train" --run "$run/u" "${R[@]}" --set train.steps=100000 --checkpoint-every 3 >/dev/null 2>&1 &
  pid=$!
  for i in $(seq 1 300); do [ -f "$d/ckpt.json" ] && break; sleep 0.1; done
  kill -USR1 $pid
  for i in $(seq 1 600); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  kill -KILL $pid 2>/dev/null   # never leave a 100000-step run behind
  wait $pid; rc=$?
  ok "SIGUSR1 to mpiexec: exit 7 (rc $rc) with a checkpoint of the signal" '[ $rc -eq 7 ] && grep -q "\"reason\": \"signal\"" "$d/ckpt.json"'
  ;;
resume_sigkill)
  R=(--cache "$cache" --dataset mvtec3d --category bagel --shots 2 "${S[@]}" --set train.steps=12 --checkpoint-every 4)
  train -n 1 "$bin/cmds-train" --run "$run/ref" "${R[@]}" >/dev/null
  ok "uninterrupted run" '[ $? -eq 0 ]'
  d=$(model "$run/k" bagel 2 default)
  CMDS_TEST_KILL_AT_STEP=6 train -n 1 "$bin/cmds-train" --run "$run/k" "${R[@]}" >/dev/null 2>&1
  ok "killed: periodic checkpoint at step 4 kept, no model" 'grep -q "\"step\": 4" "$d/ckpt.json" && [ ! -e "$d/mapper.safetensors" ]'
  train -n 1 "$bin/cmds-train" --run "$run/k" "${R[@]}" >/dev/null
  ok "rerun resumes from step 4" '[ $? -eq 0 ] && grep -q "\"resumed_from_step\": 4" "$d/train.record.json" && grep -q "\"steps_run\": 8" "$d/train.record.json"'
  out=$("$bin/train_compare" "$(model "$run/ref" bagel 2 default)/mapper.safetensors" "$d/mapper.safetensors"); rc=$?
  echo "$out" | tail -1
  ok "resumed run bit-identical to the uninterrupted one" '[ $rc -eq 0 ]'
  ;;
skip)
  cp -r "$cache" "$run/cache"
  R=(--cache "$run/cache" --run "$run" --dataset mvtec3d --category bagel --shots 1 "${S[@]}" --set train.steps=4)
  train -n 2 "$bin/cmds-train" "${R[@]}" >/dev/null
  ok "first run" '[ $? -eq 0 ]'
  d=$(model "$run" bagel 1 default)
  sum1=$(sha256sum "$d/mapper.safetensors" | cut -d" " -f1)
  out=$(train -n 2 "$bin/cmds-train" "${R[@]}" --set train.lr=0.0001 --set score.l1=0.5); rc=$?
  ok "rerun (same config spelt differently, another score key) skips" '[ $rc -eq 0 ] && grep -q "up to date, skipped" <<<"$out" && grep -q "\"tasks_skipped\": 1" "$run/models/train.record.json"'
  ok "skipped model untouched" '[ "$(sha256sum "$d/mapper.safetensors" | cut -d" " -f1)" = "$sum1" ]'
  out=$(train -n 2 "$bin/cmds-train" "${R[@]}" --set train.steps=5 2>&1); rc=$?
  ok "another configuration under the same tag refused" '[ $rc -eq 2 ] && grep -q "another configuration" <<<"$out" && grep -q "train.steps=4" <<<"$out"'
  train -n 2 "$bin/cmds-train" "${R[@]}" --set train.steps=5 --force >/dev/null
  ok "--force retrains" '[ $? -eq 0 ] && grep -q "\"train.steps\": \"5\"" "$d/mapper.json"'
  "${mp[@]}" -n 2 "$bin/cmds-features" --cache "$run/cache" --dataset mvtec3d --category bagel --random-backbone 1 --force >/dev/null
  out=$(train -n 2 "$bin/cmds-train" "${R[@]}" --set train.steps=5 2>&1); rc=$?
  ok "features remade with other weights: the model is retrained, not skipped" '[ $rc -eq 0 ] && ! grep -q "up to date, skipped" <<<"$out" && grep -q "\"weights_id\": \"random:1\"" "$d/mapper.json"'
  ;;
bad_inputs)
  B=(--run "$run" --dataset mvtec3d --shots 1 "${S[@]}" --set train.steps=2)
  expect() { # name, expected rc (any non-zero: nz), grep pattern, command...
    local name=$1 want=$2 pat=$3
    shift 3
    local out rc
    out=$("$@" 2>&1); rc=$?
    if [ "$want" = nz ]; then [ $rc -ne 0 ]; else [ $rc -eq "$want" ]; fi
    local rc_ok=$?
    ok "$name (rc $rc)" '[ $rc_ok -eq 0 ] && grep -qF -- "$pat" <<<"$out"'
    [ $rc_ok -eq 0 ] && grep -qF -- "$pat" <<<"$out" || echo "$out" | tail -3
  }
  expect "missing feature cache named" 2 "nosuch.features.h5" train -n 2 "$bin/cmds-train" --cache "$cache" "${B[@]}" --category nosuch
  expect "feature cache without normals" 2 "no 'normals' features" \
    train -n 2 "$bin/cmds-train" --cache "$work/cache_nonormals" "${B[@]}" --category bagel
  expect "backbone identity mismatch" 2 "random:0" train -n 2 "$bin/cmds-train" --cache "$cache" "${B[@]}" --category bagel \
    --set train.noise_sigma=0.01 --random-backbone 7
  expect "unknown --set key named" 2 "unknown configuration key 'train.stepz'" \
    train -n 1 "$bin/cmds-train" --cache "$cache" "${B[@]}" --set train.stepz=3
  expect "bad --set value: key and expectation" 2 "train.steps='abc': expected an integer >= 1" \
    train -n 1 "$bin/cmds-train" --cache "$cache" "${B[@]}" --set train.steps=abc
  expect "bad enum value" 2 "mapper.kind='big': expected one of cmds|mlp" \
    train -n 1 "$bin/cmds-train" --cache "$cache" "${B[@]}" --set mapper.kind=big
  printf 'mvtec3d bagel 1 a\n\nmvtec3d bagel\n' > "$run/short.txt"
  expect "short tasks line: file and line" 2 "short.txt:3: expected 'dataset category k tag" \
    train -n 2 "$bin/cmds-train" --cache "$cache" --run "$run" --tasks "$run/short.txt"
  printf '# c\nmvtec3d bagel one a\n' > "$run/badk.txt"
  expect "bad k in a tasks line" 2 "badk.txt:2: k 'one'" train -n 1 "$bin/cmds-train" --cache "$cache" --run "$run" --tasks "$run/badk.txt"
  printf 'mvtec3d bagel 1 a train.lr=fast\n' > "$run/badv.txt"
  expect "bad value in a tasks line" 2 "badv.txt:1: train.lr='fast': expected a number" \
    train -n 1 "$bin/cmds-train" --cache "$cache" --run "$run" --tasks "$run/badv.txt"
  printf 'mvtec3d bagel 1 a train.steps=2\nmvtec3d bagel 1 a train.steps=3\n' > "$run/dup.txt"
  expect "one tag, two configurations" 2 "dup.txt:1 and" train -n 1 "$bin/cmds-train" --cache "$cache" --run "$run" --tasks "$run/dup.txt"
  printf 'mvtec3d bagel 1 a\n' > "$run/one.txt"
  expect "--task-index out of range" 2 "the file has 1 task" \
    train -n 1 "$bin/cmds-train" --cache "$cache" --run "$run" --tasks "$run/one.txt" --task-index 4
  expect "k larger than the support set" 2 "k = 3 but the feature cache has 2 support samples" \
    train -n 1 "$bin/cmds-train" --cache "$cache" --run "$run" --dataset mvtec3d --category bagel --shots 3 "${S[@]}"
  expect "group size must divide the ranks" 2 "does not divide" \
    train -n 2 "$bin/cmds-train" --cache "$cache" "${B[@]}" --ranks-per-task 3
  expect "mapper configuration checked" 2 "mapper.ca_groups" \
    train -n 1 "$bin/cmds-train" --cache "$cache" "${B[@]}" --category bagel --set mapper.ca_groups=7
  printf 'mvtec3d nosuch 1 a\nmvtec3d bagel 1 a train.steps=2\n' > "$run/mixed.txt"
  out=$(train -n 2 "$bin/cmds-train" --cache "$cache" --run "$run/mixed" --tasks "$run/mixed.txt" "${S[@]}" 2>&1); rc=$?
  ok "a failing task does not stop the others (rc $rc)" '[ $rc -eq 2 ] && grep -q "nosuch.features.h5" <<<"$out" && [ -f "$run/mixed/models/mvtec3d/bagel/k1/a/mapper.safetensors" ] && grep -q "\"tasks_failed\": 1" "$run/mixed/models/train.record.json" && grep -q "\"tasks_done\": 1" "$run/mixed/models/train.record.json"'
  expect "missing --run" 2 "--cache and --run are required" "${mp[@]}" -n 1 "$bin/cmds-train" --cache "$cache" --dataset mvtec3d
  ok "nothing written for failed tasks" '[ ! -e "$run/models/mvtec3d/bagel/k1/default/mapper.safetensors" ]'
  ;;
noise_online)
  R=(--cache "$cache" --dataset mvtec3d --category bagel --shots 1 "${S[@]}" --set train.steps=4)
  train -n 2 "$bin/cmds-train" --run "$run/noise" "${R[@]}" --set train.noise_sigma=0.02 --random-backbone 0 >/dev/null
  ok "noise 0.02 with the random backbone runs" '[ $? -eq 0 ]'
  d=$(model "$run/noise" bagel 1 default)
  ok "record: backbone ran online" 'grep -q "\"backbone_online\": true" "$d/train.record.json" && grep -q "\"backbone_online\": true" "$d/mapper.json"'
  ok "record: E stream off and why" 'grep -q "\"est_stream\": false" "$d/train.record.json" && grep -q "no normals_est" "$d/train.record.json"'
  train -n 2 "$bin/cmds-train" --run "$run/clean" "${R[@]}" >/dev/null
  ok "noise-free run: cached features" '[ $? -eq 0 ] && grep -q "\"backbone_online\": false" "$(model "$run/clean" bagel 1 default)/train.record.json"'
  "$bin/train_compare" "$d/mapper.safetensors" "$(model "$run/clean" bagel 1 default)/mapper.safetensors" >/dev/null; rc=$?
  ok "the noise changes the weights" '[ $rc -eq 1 ]'
  ;;
*) echo "unknown mode $mode"; exit 2 ;;
esac
test_end
