#!/usr/bin/env bash
# prep throughput at the real MVTec 3D-AD resolution (800 x 800) and EyeCandies' (512 x 512),
# with 1 and 2 ranks: samples/s from each run's stage record.
#   bench_prep.sh BIN_DIR WORK_DIR MPIEXEC...
set -euo pipefail
bin=$1 work=$2
shift 2
rm -rf "$work"
"$bin/cmds-synth" --format mvtec3d --out "$work/mvtec3d" --size 800 --categories bagel \
  --train 4 --validation 0 --test-good 6 --test-per-defect 2 >/dev/null
"$bin/cmds-synth" --format eyecandies --out "$work/eyecandies" --size 512 --categories Lollipop \
  --train 4 --validation 0 --test-good 6 --test-per-defect 2 >/dev/null
printf "%-12s %-6s %8s %10s %12s\n" dataset ranks samples seconds samples/s
for ds in mvtec3d eyecandies; do
  for n in 1 2; do
    OMP_NUM_THREADS=1 "$@" -n $n "$bin/cmds-prep" --dataset $ds --root "$work/$ds" \
      --out "$work/out_$n" --shots 4 >/dev/null
    rec=$(ls "$work/out_$n/$ds/"*.prep.json)
    samples=$(( $(grep -o '"support_samples": [0-9]*' "$rec" | grep -o '[0-9]*$') + $(grep -o '"test_samples": [0-9]*' "$rec" | grep -o '[0-9]*$') ))
    secs=$(grep -o '"elapsed_s": [0-9.e+-]*' "$rec" | grep -o '[0-9.e+-]*$')
    awk -v d=$ds -v n=$n -v s=$samples -v t=$secs 'BEGIN{printf "%-12s %-6d %8d %10.2f %12.2f\n", d, n, s, t, s/t}'
  done
done
