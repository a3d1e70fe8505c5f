#!/bin/sh
# Benchmark of cmds-metrics (label bench): a synthetic category of N images at S x S
# (default 100 x 800 x 800 = 64 M pixels), time and peak memory (ru_maxrss of the largest
# rank, from the stage record) with 1 and 2 ranks, against scikit-learn's roc_auc_score
# plus the numpy AUPRO reference of tests/fixtures/gen_metrics.py on the same file.
# Usage: bench_metrics.sh BIN TESTBIN GEN_SCRIPT OUT MPIEXEC... [env N, S]
set -eu
bin=$1; tbin=$2; gen=$3; out=$4; shift 4
N=${N:-100}; S=${S:-800}
mkdir -p "$out"
maps="$out/bench_${N}x${S}.h5"
[ -e "$maps" ] || "$tbin/bench_maps_write" "$maps" "$N" "$S"
echo "maps: $maps ($N images, ${S}x${S}, $(du -m "$maps" | cut -f1) MB)"
for n in 1 2; do
  t0=$(date +%s.%N)
  "$@" -n $n "$bin/cmds-metrics" --maps "$maps" --out "$out/n$n.json" --force >"$out/n$n.log" 2>&1
  t1=$(date +%s.%N)
  rss=$(sed -n 's/.*"peak_rss_kb_max_rank": \([0-9]*\).*/\1/p' "$out/n$n.record.json")
  t=$(awk "BEGIN{printf \"%.2f\", $t1 - $t0}")
  echo "cmds-metrics -n $n: time_s $t (wall, incl. mpiexec start) peak_rss_mb_per_rank $((rss / 1024))"
  eval "t_$n=$t; rss_$n=$rss"
  grep "I-AUROC" "$out/n$n.log"
done
# the outputs differ only in their own file names (n1.pro.tsv / n2.pro.tsv)
if [ "$(grep -v '"file":' "$out/n1.json")" = "$(grep -v '"file":' "$out/n2.json")" ]; then
  echo "n1 and n2 results: identical"; else echo "n1 and n2 results DIFFER"; exit 1; fi
if python3 -c "import numpy, scipy, sklearn, h5py, hdf5plugin" >/dev/null 2>&1; then
  t0=$(date +%s.%N)
  python3 "$gen" --bench-reference "$maps" | tee "$out/ref.log"
  t1=$(date +%s.%N)
  tr=$(awk "BEGIN{printf \"%.2f\", $t1 - $t0}")
  rr=$(sed -n 's/reference_peak_rss_mb \([0-9]*\)/\1/p' "$out/ref.log")
  echo "reference: time_s $tr (wall, incl. python start) peak_rss_mb $rr"
  awk "BEGIN{printf \"ratio time reference / cmds: -n 1 %.2f  -n 2 %.2f\\n\", $tr / $t_1, $tr / $t_2}"
  awk "BEGIN{printf \"ratio peak memory reference / cmds (largest rank): -n 1 %.2f  -n 2 %.2f\\n\", $rr * 1024 / $rss_1, $rr * 1024 / $rss_2}"
else
  echo "reference: skipped (no python packages)"
fi
