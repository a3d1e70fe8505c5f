#!/usr/bin/env bash
# jobs.quality: the whole pipeline detects the synthetic defects, and a broken stage would be
# caught. cmds-run runs a demo-sized job (3 MVTec-layout categories, 40 test images each, k = 4,
# the demo's training settings, random ViT stand-in); then the same models with every tensor's
# elements shuffled (score_tool shuffle-mapper: same weight distribution, no learned structure)
# are scored and evaluated the same way.
#
# Why I-AUROC and AUPRO@5%, not P-AUROC or AUPRO@30%: on these synthetic scenes the objects are
# small and score.fg_mask zeroes the background, so even a random map inside the foreground
# reaches P-AUROC ~0.98 and AUPRO@30% ~0.9. What learning adds shows at strict FPR and at the
# image level. Measured (2 cores): trained I-AUROC 0.76, AUPRO@5% 0.73; shuffled 0.57, 0.43.
# Bounds: trained I-AUROC >= 0.68 and AUPRO@5% >= 0.60; shuffled at least 0.10 / 0.15 lower.
#   test_quality.sh BIN_DIR SOURCE_DIR WORK_DIR
set -euo pipefail
bin=$1 src=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
export OMP_NUM_THREADS=1 CMDS_PROGRESS=off
mpi=(mpiexec --oversubscribe)
[ "$(id -u)" = 0 ] && mpi+=(--allow-run-as-root)
cats=(bagel cookie foam)

"$bin/cmds-synth" --format mvtec3d --out "$work/data" --seed 11 --size 256 --categories bagel,cookie,foam \
  --train 4 --validation 0 --test-good 10 --test-per-defect 6 > /dev/null
cat > "$work/spec.yaml" <<SPEC
job: quality
version: 1
run: $work/run
cache: $work/cache
ranks: 2
device: cpu
backbone:
  random: 0
datasets:
  - name: mvtec3d
    root: $work/data
    categories: [bagel, cookie, foam]
shots: [4]
config:
  mapper.resolution: 28
  mapper.ca_reduction: 36
  mapper.sel_hidden: 32
  train.steps: 200
  train.lr: 1e-3
  train.noise_sigma: 0
  score.l1: 0
  score.l2: 0
SPEC
"$bin/cmds-run" "$work/spec.yaml" --bin "$bin" > "$work/run.log" 2>&1 || { tail -30 "$work/run.log"; exit 1; }

# value of "key": number in a result JSON
metric() { sed -n "s/.*\"$2\": *\([-0-9.eE+]*\).*/\1/p" "$1" | head -1; }
mean_of() { # mean_of KEY FILE... -> the mean over files
  local key=$1; shift
  for f in "$@"; do metric "$f" "$key"; done | awk '{s += $1; n++} END {if (n) printf "%.4f\n", s / n; else print "nan"}'
}

trained=() shuffled=()
tag=
for c in "${cats[@]}"; do
  d=$(ls -d "$work/run/models/mvtec3d/$c/k4/"*/)
  tag=$(basename "$d")
  r=$(find "$work/run/results/mvtec3d/$c/k4/$tag" -name '*.json' ! -name '*record*' | head -1)
  [ -n "$r" ] || { echo "no result for $c"; exit 1; }
  trained+=("$r")
  q="$work/shuf/models/mvtec3d/$c/k4/$tag"
  mkdir -p "$q"
  cp "$d/mapper.json" "$q/"
  "$bin/score_tool" shuffle-mapper "$d/mapper.safetensors" "$q/mapper.safetensors" 1
done
"${mpi[@]}" -n 2 "$bin/cmds-score" --cache "$work/cache" --run "$work/shuf" --dataset mvtec3d \
  --category bagel,cookie,foam --shots 4 --tag "$tag" --set score.l1=0 --set score.l2=0 > "$work/shuf.log" 2>&1 \
  || { tail -20 "$work/shuf.log"; exit 1; }
for c in "${cats[@]}"; do
  m=$(ls "$work/shuf/maps/mvtec3d/$c/k4/$tag/"maps.*.h5)
  "${mpi[@]}" -n 2 "$bin/cmds-metrics" --maps "$m" --out "$work/shuf/$c.json" > /dev/null 2>&1
  shuffled+=("$work/shuf/$c.json")
done

ti=$(mean_of i_auroc "${trained[@]}"); t5=$(mean_of aupro_05 "${trained[@]}")
si=$(mean_of i_auroc "${shuffled[@]}"); s5=$(mean_of aupro_05 "${shuffled[@]}")
echo "trained:  mean I-AUROC $ti  AUPRO@5% $t5"
echo "shuffled: mean I-AUROC $si  AUPRO@5% $s5"
awk -v ti="$ti" -v t5="$t5" -v si="$si" -v s5="$s5" 'BEGIN {
  bad = 0
  if (!(ti >= 0.68)) { print "FAIL: trained mean I-AUROC " ti " < 0.68"; bad = 1 }
  if (!(t5 >= 0.60)) { print "FAIL: trained mean AUPRO@5% " t5 " < 0.60"; bad = 1 }
  if (!(si <= ti - 0.10)) { print "FAIL: shuffled mappers are not clearly worse (I-AUROC " si " vs " ti ")"; bad = 1 }
  if (!(s5 <= t5 - 0.15)) { print "FAIL: shuffled mappers are not clearly worse (AUPRO@5% " s5 " vs " t5 ")"; bad = 1 }
  exit bad }'
echo "jobs.quality: ok"
