#!/usr/bin/env bash
# The sample cache does not depend on the number of ranks: -n 1 and -n 4 (and a batch size
# that makes ranks idle in some rounds) give identical datasets and attributes (h5diff, with
# our zstd plugin on HDF5_PLUGIN_PATH).
#   test_ranks_identical.sh BIN_DIR PLUGIN_DIR DATA_ROOT DATASET WORK_DIR MPIEXEC...
set -euo pipefail
bin=$1 plugin=$2 root=$3 dataset=$4 work=$5
shift 5
rm -rf "$work"
"$@" -n 1 "$bin/cmds-prep" --dataset "$dataset" --root "$root" --out "$work/n1" --shots 2 --size 48
"$@" -n 4 "$bin/cmds-prep" --dataset "$dataset" --root "$root" --out "$work/n4" --shots 2 --size 48 --batch 1
n=0
for f in "$work/n1/$dataset"/*.h5; do
  g="$work/n4/$dataset/$(basename "$f")"
  HDF5_PLUGIN_PATH="$plugin" h5diff -r "$f" "$g" >"$work/diff.txt" 2>&1 || {
    echo "FAIL: $f and $g differ"; head -20 "$work/diff.txt"; echo "0 passed, 1 failed"; exit 1; }
  n=$((n+1))
done
[ $n -gt 0 ] || { echo "no caches written"; exit 1; }
echo "$n passed, 0 failed"
