#!/usr/bin/env bash
# The whole pipeline through cmds-run with augmentation on and off, on a tiny synthetic
# MVTec 3D-AD category (k = 2) with the tiny random SD checkpoint (tests/fixtures/diffusion_sd)
# and, for the estimated stream the generated images feed, the tiny Marigold checkpoint
# (tests/fixtures/diffusion_marigold) when it is there:
#   - on: prep -> augment -> estimate -> features -> train -> score -> metrics -> report run in
#     that order; the cache holds the 2 augmented rows; the manifest records the augment stage
#     and its settings; train's E stream uses the augmented rows; results exist; a second
#     cmds-run skips every stage;
#   - off (no augment block, its own cache): the same job runs without the augment stage and
#     the cache has no augmented rows.
#   test_pipeline.sh BIN_DIR SD_CHECKPOINT WORK
set -uo pipefail
bin=$1 sd=$2 work=$3
marigold=$(cd "$sd/../.." && pwd)/diffusion_marigold/ckpt
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
test_begin "$work"

"$bin/cmds-synth" --format mvtec3d --out "$work/data" --seed 3 --size 64 --categories bagel \
  --train 2 --validation 1 --test-good 1 --test-per-defect 1 >/dev/null
spec() { # name, augment on (1/0)
  cat <<EOS
job: $1
version: 1
run: $work/$1/run
cache: $work/$1/cache
ranks: 2
device: cpu
backbone: {random: 0}
EOS
  [ "$2" = 1 ] && echo "augment: {sd: $sd, steps: 3, images: 2, inference_steps: 4, resolution: 32}"
  [ -f "$marigold/model_index.json" ] && echo "estimate: {marigold: $marigold}"
  cat <<EOS
datasets:
  - {name: mvtec3d, root: $work/data, categories: [bagel]}
shots: [2]
config:
  mapper.resolution: 16
  mapper.ca_reduction: 36
  mapper.sel_hidden: 16
  train.steps: 3
  train.noise_sigma: 0
EOS
  [ -f "$marigold/model_index.json" ] || printf '  score.l1: 0\n  score.l2: 0\n'
}
spec on 1 >"$work/on.yaml"
spec off 0 >"$work/off.yaml"

"$bin/cmds-run" "$work/on.yaml" >"$work/on.log" 2>&1
ok "augmentation on: the job ran ($(tail -3 "$work/on.log"))" '[ $? -eq 0 ]'
order=$(grep -o "^\[cmds-run\] [a-z]*: .*/cmds-[a-z]*" "$work/on.log" | awk '{print $2}' | tr -d : | uniq | tr '\n' ' ')
want="prep augment $([ -f "$marigold/model_index.json" ] && echo "estimate ")features train score metrics report "
ok "stage order: $order" '[ "$order" = "$want" ]'
"$bin/check_augment" ok "$work/on/cache/mvtec3d/bagel.h5" 2 2 "$work/on/run/augment/mvtec3d/bagel" >/dev/null
ok "on: 2 augmented rows in the cache, PNGs in RUN/augment" '[ $? -eq 0 ]'
m=$work/on/run/manifest.json
ok "on: the manifest has the augment stage done and its settings" 'grep -q "\"augment\": {" "$m" && grep -q "\"augment.steps\": \"3\"" "$m" && grep -A3 "\"name\": \"augment\"" "$m" | grep -q "\"status\": \"done\""'
ok "on: results" '[ -n "$(find "$work/on/run/results" -name "*.json" ! -name "*.record.json" | head -1)" ]'
if [ -f "$marigold/model_index.json" ]; then
  ok "on: the E stream of train drew from the 2 augmented rows" 'grep -q "\"est_augmented_rows\": 2" "$work"/on/run/models/mvtec3d/bagel/k2/*/train.record.json'
fi
"$bin/cmds-run" "$work/on.yaml" >"$work/on2.log" 2>&1
ok "on: a rerun skips every stage" '[ $? -eq 0 ] && [ "$(grep -c "done in an earlier run, skipped" "$work/on2.log")" -ge 7 ]'

"$bin/cmds-run" "$work/off.yaml" >"$work/off.log" 2>&1
ok "augmentation off: the job ran ($(tail -3 "$work/off.log"))" '[ $? -eq 0 ]'
ok "off: no augment stage" '! grep -q "cmds-augment" "$work/off.log"'
"$bin/check_augment" absent "$work/off/cache/mvtec3d/bagel.h5" >/dev/null; ok "off: no augmented rows" '[ $? -eq 0 ]'
ok "off: results" '[ -n "$(find "$work/off/run/results" -name "*.json" ! -name "*.record.json" | head -1)" ]'
test_end
