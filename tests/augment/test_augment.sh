#!/usr/bin/env bash
# cmds-augment end to end on the tiny random SD 2.1-like checkpoint (helper sdpipe's fixture,
# tests/fixtures/gen_diffusion_sd.py) with 4 fine-tune steps, 2 images of 4 DDIM steps at
# 32 x 32, on small synthetic caches (cmds-synth -> cmds-prep, S = 32, two categories):
#   - bad options and a missing checkpoint: clear errors, exit 2, caches untouched;
#   - -n 2 with the original images: both categories get 2 augmented rows as the schema says,
#     each the resize of its PNG; LoRA file + sidecar, no checkpoint left; -n 1 byte-identical;
#   - SIGKILL after fine-tune step 2 (checkpoint every step): the cache is untouched, the
#     checkpoint kept; the rerun resumes at step 2 and equals the uninterrupted run; the same
#     with SIGTERM (exit 7); SIGKILL after the first image: the rerun reuses it;
#   - a rerun skips; other settings are refused, --force replaces them (other values);
#   - the cached RGB as the source (recorded; at R = 64 other values than from the originals);
#   - cmds-features encodes the augmented cache.
#   test_augment.sh BIN_DIR CHECKPOINT WORK MPIEXEC...
set -uo pipefail
bin=$1 ckpt=$2 work=$3
shift 3
mp=("$@")
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
test_begin "$work"

"$bin/cmds-synth" --format mvtec3d --out "$work/data/mvtec3d" --seed 3 --size 64 --categories bagel,cookie \
  --train 2 --validation 1 --test-good 1 --test-per-defect 1 >/dev/null
"${mp[@]}" -n 2 "$bin/cmds-prep" --dataset mvtec3d --root "$work/data/mvtec3d" --out "$work/base" --shots 2 --size 32 >/dev/null
ok "prep" '[ $? -eq 0 ]'
for d in a b k t g c x s o; do mkdir -p "$work/$d/mvtec3d" && cp "$work/base/mvtec3d/"{bagel,cookie}.h5 "$work/$d/mvtec3d/"; done
SET=(--set augment.steps=4 --set augment.images=2 --set augment.inference_steps=4 --set augment.resolution=32)
A=(--dataset mvtec3d --sd "$ckpt" --data "$work/data/mvtec3d" "${SET[@]}")
f() { echo "$work/$1/mvtec3d/${2:-bagel}.h5"; }
aug() { "${mp[@]}" "$@"; }

# Bad options and a missing checkpoint.
bad() { # name, expected message, args...
  local name=$1 want=$2; shift 2
  msg=$(aug -n 1 "$bin/cmds-augment" "$@" 2>&1); rc=$?
  ok "$name: exit 2 ($rc)" '[ $rc -eq 2 ]'
  ok "$name: message ($msg)" 'grep -qF -- "$want" <<<"$msg"'
}
bad "no checkpoint" "no Stable Diffusion checkpoint at $work/nothing: " --cache "$work/a" --dataset mvtec3d --sd "$work/nothing"
ok "no checkpoint: says how to run without" 'grep -q "runs without augmentation when the job spec has no augment: block" <<<"$msg"'
bad "unknown key" "--set: unknown configuration key 'augment.stepz'" --cache "$work/a" "${A[@]}" --set augment.stepz=3
bad "train key" "--set: train.steps cannot be set here (allowed: augment.prompt" --cache "$work/a" "${A[@]}" --set train.steps=3
bad "bad value" "augment.strength='2': expected a number in [0, 1]" --cache "$work/a" "${A[@]}" --set augment.strength=2
bad "resolution" "augment.resolution=36: expected a multiple of 8" --cache "$work/a" "${A[@]}" --set augment.resolution=36
bad "no --sd" "--cache, --dataset and --sd are required" --cache "$work/a" --dataset mvtec3d
bad "device" "--device: expected auto, cpu or cuda, got 'gpu'" --cache "$work/a" "${A[@]}" --device gpu
bad "category" "no sample cache for category carrot" --cache "$work/a" "${A[@]}" --category carrot
bad "k above the support rows" "--shots asks for k = 3 but the cache has 2 support samples" --cache "$work/a" "${A[@]}" --shots 1,3
bad "bad --shots" "--shots '1,0': expected a comma list of k >= 1" --cache "$work/a" "${A[@]}" --shots 1,0
for c in bagel cookie; do "$bin/check_augment" absent "$(f a $c)" >/dev/null; ok "bad runs: $c untouched" '[ $? -eq 0 ]'; done

# -n 2 (one category per rank), the original images.
aug -n 2 "$bin/cmds-augment" --cache "$work/a" "${A[@]}" >"$work/a.out" 2>&1
ok "-n 2 ran ($(tail -3 "$work/a.out"))" '[ $? -eq 0 ]'
for c in bagel cookie; do
  "$bin/check_augment" ok "$(f a $c)" 2 2 "$work/a/augment/mvtec3d/$c"; ok "$c: 2 augmented rows (k = 2), PNGs resized" '[ $? -eq 0 ]'
done
rec=$work/a/mvtec3d/bagel.augment.json
ok "record: 2 images, 4 steps, source dataset, prompt" '[ "$(num "$rec" images_generated)" = 2 ] && [ "$(num "$rec" steps_run)" = 4 ] && grep -q "\"source\": \"dataset\"" "$rec" && grep -q "\"prompt\": \"a photo of a bagel\"" "$rec"'
L=$work/a/augment/mvtec3d/bagel/k2
ok "LoRA file and sidecar, no checkpoint or copy left" '[ -s "$L/lora.safetensors" ] && grep -q "\"train_id\"" "$L/lora.json" && grep -q "\"losses\"" "$L/lora.json" && [ ! -e "$L/lora.ckpt.safetensors" ] && [ ! -e "$(f a).augment.partial" ]'
ok "LoRA file in diffusers names" 'grep -q "unet\..*lora\.down\.weight" <(head -c 20000 "$L/lora.safetensors" | tr -c "[:print:]" "\n")'
aug -n 1 "$bin/cmds-augment" --cache "$work/b" "${A[@]}" >/dev/null 2>&1
ok "-n 1 ran" '[ $? -eq 0 ]'
for c in bagel cookie; do "$bin/check_augment" same "$(f a $c)" "$(f b $c)"; ok "$c: -n 1 equals -n 2" '[ $? -eq 0 ]'; done

# Killed after fine-tune step 2, then resumed.
CMDS_TEST_KILL_AT_STEP=2 aug -n 1 "$bin/cmds-augment" --cache "$work/k" "${A[@]}" --category bagel --checkpoint-every 1 >/dev/null 2>&1
ok "killed: non-zero" '[ $? -ne 0 ]'
"$bin/check_augment" absent "$(f k)" >/dev/null; ok "killed: the cache has no augmented rows" '[ $? -eq 0 ]'
ok "killed: checkpoint kept" '[ -s "$work/k/augment/mvtec3d/bagel/k2/lora.ckpt.safetensors" ]'
aug -n 1 "$bin/cmds-augment" --cache "$work/k" "${A[@]}" --category bagel >"$work/k.out" 2>&1
ok "resumed run ($(tail -2 "$work/k.out"))" '[ $? -eq 0 ]'
rec=$work/k/mvtec3d/bagel.augment.json
ok "resumed: from step 2, 2 steps run" '[ "$(num "$rec" resumed_from_step)" = 2 ] && [ "$(num "$rec" steps_run)" = 2 ]'
"$bin/check_augment" same "$(f a)" "$(f k)"; ok "resumed equals uninterrupted" '[ $? -eq 0 ]'
cmp -s "$work/a/augment/mvtec3d/bagel/k2/lora.safetensors" "$work/k/augment/mvtec3d/bagel/k2/lora.safetensors"
ok "resumed: the same LoRA file" '[ $? -eq 0 ]'

# SIGTERM after step 2: checkpoint, exit 7; the rerun resumes.
CMDS_TEST_SIGNAL_AT_STEP=2 aug -n 1 "$bin/cmds-augment" --cache "$work/t" "${A[@]}" --category bagel --checkpoint-every 0 >"$work/t.out" 2>&1; rc=$?
ok "signal: exit 7 ($rc)" '[ $rc -eq 7 ]'
ok "signal: says so" 'grep -q "stopped by a signal" "$work/t.out"'
ok "signal: checkpoint written" '[ -s "$work/t/augment/mvtec3d/bagel/k2/lora.ckpt.safetensors" ]'
aug -n 1 "$bin/cmds-augment" --cache "$work/t" "${A[@]}" --category bagel >/dev/null 2>&1
"$bin/check_augment" same "$(f a)" "$(f t)"; ok "signal + resume equals uninterrupted" '[ $? -eq 0 ]'

# Killed after the first generated image: the rerun keeps it.
CMDS_TEST_KILL_AFTER_IMAGES=1 aug -n 1 "$bin/cmds-augment" --cache "$work/g" "${A[@]}" --category bagel >/dev/null 2>&1
ok "killed in generation: non-zero, one PNG" '[ $? -ne 0 ] && [ -s "$work/g/augment/mvtec3d/bagel/k2/images/000000.png" ] && [ ! -e "$work/g/augment/mvtec3d/bagel/k2/images/000001.png" ]'
aug -n 1 "$bin/cmds-augment" --cache "$work/g" "${A[@]}" --category bagel >/dev/null 2>&1
rec=$work/g/mvtec3d/bagel.augment.json
ok "rerun: LoRA and one image reused, one generated" 'grep -q "\"lora_reused\": true" "$rec" && [ "$(num "$rec" images_reused)" = 1 ] && [ "$(num "$rec" images_generated)" = 1 ]'
"$bin/check_augment" same "$(f a)" "$(f g)"; ok "resumed generation equals uninterrupted" '[ $? -eq 0 ]'

# One LoRA per (category, k): --shots 1,2 (the few-shot protocol: k = 1's rows come from a LoRA
# fine-tuned on support sample 0 alone).
aug -n 2 "$bin/cmds-augment" --cache "$work/s" "${A[@]}" --shots 2,1 >"$work/s.out" 2>&1
ok "--shots 2,1 ran ($(tail -2 "$work/s.out"))" '[ $? -eq 0 ]'
"$bin/check_augment" ok "$(f s)" 2 1,2 "$work/s/augment/mvtec3d/bagel"; ok "--shots 1,2: 2 rows per k, k1 then k2, PNGs in k<k>/" '[ $? -eq 0 ]'
S1=$work/s/augment/mvtec3d/bagel/k1 S2=$work/s/augment/mvtec3d/bagel/k2
ok "k = 1's LoRA saw one support image, k = 2's two" '[ "$(tr -d " \n" <"$S1/lora.json" | grep -o "\"support\":\[[^]]*\]" | grep -o , | wc -l)" = 0 ] && [ "$(tr -d " \n" <"$S2/lora.json" | grep -o "\"support\":\[[^]]*\]" | grep -o , | wc -l)" = 1 ]'
ok "two LoRAs, not the same" '[ -s "$S1/lora.safetensors" ] && ! cmp -s "$S1/lora.safetensors" "$S2/lora.safetensors"'
"$bin/check_augment" rgb differ "$(f s)" 0 "$(f s)" 2 1; ok "k = 1's row 0 differs from k = 2's row 0 (both from support sample 0)" '[ $? -eq 0 ]'
"$bin/check_augment" rgb same "$(f s)" 2 "$(f b)" 0 2; ok "k = 2's rows equal those of a run with k = 2 alone" '[ $? -eq 0 ]'
cmp -s "$S2/lora.safetensors" "$work/b/augment/mvtec3d/bagel/k2/lora.safetensors"; ok "k = 2's LoRA equals that of a run with k = 2 alone" '[ $? -eq 0 ]'
aug -n 1 "$bin/cmds-augment" --cache "$work/o" "${A[@]}" --shots 1 --category bagel >/dev/null 2>&1
"$bin/check_augment" rgb same "$(f s)" 0 "$(f o)" 0 2; ok "k = 1's rows equal those of a run with k = 1 alone" '[ $? -eq 0 ]'
rec=$work/s/mvtec3d/bagel.augment.json
ok "record: shots [1, 2], 4 rows, 8 steps" 'tr -d " \n" <"$rec" | grep -q "\"shots\":\[1,2\]" && [ "$(num "$rec" rows)" = 4 ] && [ "$(num "$rec" steps_run)" = 8 ]'
out=$(aug -n 1 "$bin/cmds-augment" --cache "$work/s" "${A[@]}" --shots 1,2 --category bagel 2>&1)
ok "--shots 1,2 rerun skips ($out)" 'grep -q "up to date" <<<"$out"'

# Reruns.
out=$(aug -n 2 "$bin/cmds-augment" --cache "$work/a" "${A[@]}" 2>&1)
ok "rerun skips ($out)" '[ "$(grep -c "up to date" <<<"$out")" = 2 ]'
cp "$(f a)" "$work/a_before.h5"
msg=$(aug -n 1 "$bin/cmds-augment" --cache "$work/a" "${A[@]}" --category bagel --set augment.seed=5 2>&1); rc=$?
ok "other settings refused ($msg)" '[ $rc -eq 2 ] && grep -q "augmented samples were made with other settings" <<<"$msg" && grep -q -- "--force" <<<"$msg"'
cmp -s "$(f a)" "$work/a_before.h5"; ok "refused: cache unchanged" '[ $? -eq 0 ]'
aug -n 1 "$bin/cmds-augment" --cache "$work/a" "${A[@]}" --category bagel --set augment.seed=5 --force >/dev/null 2>&1
ok "--force with another seed" '[ $? -eq 0 ]'
"$bin/check_augment" ok "$(f a)" 2 2 >/dev/null; ok "forced: 2 rows" '[ $? -eq 0 ]'
"$bin/check_augment" differ "$(f a)" "$work/a_before.h5" >/dev/null; ok "another seed: other images" '[ $? -eq 0 ]'

# The cached RGB as the source. At R = S both sources give the LoRA the same pixels (the cache
# holds prep's resize of the original), so compare at R = 64: the original's 100 x 100 square
# resized vs the 32 x 32 cache upsampled.
R64=(--category bagel --set augment.resolution=64)
aug -n 1 "$bin/cmds-augment" --cache "$work/c" --dataset mvtec3d --sd "$ckpt" "${SET[@]}" "${R64[@]}" >/dev/null 2>&1
"$bin/check_augment" ok "$(f c)" 2 2 "$work/c/augment/mvtec3d/bagel" >/dev/null; ok "cache source at R = 64: 2 rows" '[ $? -eq 0 ]'
ok "cache source recorded" 'grep -q "\"source\": \"cache\"" "$work/c/mvtec3d/bagel.augment.json"'
aug -n 1 "$bin/cmds-augment" --cache "$work/x" "${A[@]}" "${R64[@]}" >/dev/null 2>&1
"$bin/check_augment" ok "$(f x)" 2 2 "$work/x/augment/mvtec3d/bagel" >/dev/null; ok "dataset source at R = 64: 2 rows" '[ $? -eq 0 ]'
"$bin/check_augment" differ "$(f c)" "$(f x)" >/dev/null; ok "cache source: other images than from the originals" '[ $? -eq 0 ]'

# Downstream: the feature cache encodes the augmented rows.
"${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/b" --dataset mvtec3d --random-backbone 0 >"$work/features.out" 2>&1
ok "features on the augmented caches ($(tail -2 "$work/features.out"))" '[ $? -eq 0 ]'
test_end
