#!/usr/bin/env bash
# The stages' GPU paths (--device cuda) against their CPU paths, end to end: in a CUDA build on a
# GPU, and in the CUDA emulation's build (tests/cuda_emu), where this is the only place the
# stages' own GPU code (device selection per rank, uploads, the GPU branches of features, train
# and score) runs without a GPU.
#   - cmds-features on the h5py sample cache fixture and a timm ViT (2 ranks): fp32 on the GPU
#     within 2e-3 of the CPU (the fp16 cache's rounding of the same values), bf16 within 5e-3
#     (measured 9.8e-4: bf16 weights and activations);
#   - a small job (cmds-run: synthetic bagel, 1 shot, 10 training steps, 2 ranks) with
#     device cpu and device cuda: the feature caches within 2e-3, the anomaly maps within 1e-4
#     (measured 1.6e-5), I-AUROC, P-AUROC and AUPRO within 1e-5 (the maps' rounding).
# The mappers after Adam's steps differ by up to 1.3 % in a tensor (Adam's normalised steps on
# near-zero gradients), so the weights are not compared; the maps they give are.
# Exits 77 when cmds-features says there is no GPU.
#   test_pipeline_cuda.sh BIN_DIR PLUGIN_DIR FIXTURES WORK MPIEXEC...
set -uo pipefail
bin=$1 plugin=$2 fx=$3 work=$4
shift 4
mp=("$@")
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
test_begin "$work"
export HDF5_PLUGIN_PATH=$plugin

W=(--dataset mvtec3d --weights "$fx/features/vit16.safetensors" --heads 2)
for d in cpu cuda bf16; do mkdir -p "$work/f$d/mvtec3d" && cp "$fx/cache/h5py_zstd.h5" "$work/f$d/mvtec3d/bagel.h5"; done
"${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/fcpu" "${W[@]}" --device cpu >/dev/null
out=$("${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/fcuda" "${W[@]}" --device cuda 2>&1)
if grep -q "no GPU\|no CUDA backend" <<<"$out"; then
  echo "skipped: no GPU (and not the CUDA emulation)"
  exit 77
fi
ok "features on cuda run" '[ -s "$work/fcuda/mvtec3d/bagel.features.h5" ] && grep -q "\"device\": \"cuda\"" "$work/fcuda/mvtec3d/bagel.features.json"'
"${mp[@]}" -n 2 "$bin/cmds-features" --cache "$work/fbf16" "${W[@]}" --device cuda --precision bf16 >/dev/null
ok "features bf16 on cuda run" 'grep -q "\"precision\": \"bf16\"" "$work/fbf16/mvtec3d/bagel.features.json"'
for m in rgb normals; do
  ok "features $m: cuda fp32 = cpu within 2e-3" 'h5diff -d 2e-3 "$work/fcpu/mvtec3d/bagel.features.h5" "$work/fcuda/mvtec3d/bagel.features.h5" /test/$m >/dev/null'
  ok "features $m: cuda bf16 = cpu within 5e-3" 'h5diff -d 5e-3 "$work/fcpu/mvtec3d/bagel.features.h5" "$work/fbf16/mvtec3d/bagel.features.h5" /test/$m >/dev/null'
done

# the whole pipeline on either device
for d in cpu cuda; do
  cat >"$work/job_$d.yaml" <<YAML
job: pipeline-$d
version: 1
run: $work/$d/run
cache: $work/$d/cache
ranks: 2
device: $d
backbone:
  random: 0
datasets:
  - name: mvtec3d
    root: $work/data/mvtec3d
    categories: [bagel]
    synth: {seed: 7, size: 64}
shots: [1]
config:
  mapper.resolution: 28
  mapper.ca_reduction: 36
  mapper.sel_hidden: 32
  train.steps: 10
  train.lr: 1e-3
  train.noise_sigma: 0
  score.l1: 0
  score.l2: 0
YAML
  "$bin/cmds-run" "$work/job_$d.yaml" -n 2 >"$work/job_$d.log" 2>&1
  ok "job on $d" '[ $? -eq 0 ]'
done
ok "every stage's record says cuda" '[ "$(grep -rho "\"device\": \"cuda\"" "$work/cuda" | wc -l)" -ge 3 ] && ! grep -rq "\"device\": \"cpu\"" "$work/cuda"'
f=cache/mvtec3d/bagel.features.h5
for m in rgb normals; do
  ok "job features $m: cuda = cpu within 2e-3" 'h5diff -d 2e-3 "$work/cpu/$f" "$work/cuda/$f" /test/$m >/dev/null'
done
maps=$(cd "$work/cpu" && ls run/maps/mvtec3d/bagel/k1/*/maps.*.h5 2>/dev/null | head -1)
ok "job maps written" '[ -n "$maps" ] && [ -s "$work/cuda/$maps" ]'
for ds in scores image_scores; do
  ok "job maps /$ds: cuda = cpu within 1e-4" 'h5diff -d 1e-4 "$work/cpu/$maps" "$work/cuda/$maps" /$ds >/dev/null'
done
res=$(cd "$work/cpu" && ls run/results/mvtec3d/bagel/k1/*/*.json 2>/dev/null | grep -v record | head -1)
for key in i_auroc p_auroc aupro_30; do
  a=$(num "$work/cpu/$res" $key) b=$(num "$work/cuda/$res" $key)
  ok "job $key: cuda $b = cpu $a within 1e-5" '[ -n "$a" ] && [ -n "$b" ] && awk -v a="$a" -v b="$b" "BEGIN { d = a - b; exit !(d < 1e-5 && d > -1e-5) }"'
done
test_end
