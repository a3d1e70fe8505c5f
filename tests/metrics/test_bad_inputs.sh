#!/bin/sh
# Bad maps files must end with a non-zero exit and a message naming the file, the dataset
# and the first offending image; undefined metrics are null with a reason, never 0.5.
# Usage: test_bad_inputs.sh BIN FIXTURES OUT MPIEXEC...
set -u
bin=$1; fx=$2; out=$3; shift 3
rm -rf "$out"; mkdir -p "$out"
pass=0; fail=0
run_bad() { # case, grep pattern
  $MPI -n 2 "$bin/cmds-metrics" --maps "$fx/$1.h5" --out "$out/$1.json" >"$out/$1.log" 2>&1
  rc=$?
  if [ $rc -ne 0 ] && grep -q -- "$fx/$1.h5" "$out/$1.log" && grep -q -- "$2" "$out/$1.log" && [ ! -e "$out/$1.json" ]; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1)); echo "FAIL: $1 (rc $rc, want a message with '$2'):" >&2; cat "$out/$1.log" >&2
  fi
}
MPI="$1"; shift
if [ $# -gt 0 ]; then MPI="$MPI $*"; fi
run_bad bad_shape "/masks shape differs"
run_bad bad_mask_value "/masks image 3 has value 2 at (row 2, col 5)"
run_bad bad_nan "/scores image 2 has NaN at (row 1, col 1)"
run_bad bad_inf "/scores image 1 has an infinite value at (row 0, col 3)"
run_bad bad_label0_mask "image 0 has label 0 (normal) but 1 anomalous mask pixels"
run_bad bad_label_value "/labels\[2\] = 2"
run_bad bad_schema_version "version 2, this build reads version 1"
run_bad bad_float64 "expected float32"
run_bad does_not_exist "cannot open"
# undefined metrics: null plus a reason, exit 0
if $MPI -n 2 "$bin/cmds-metrics" --maps "$fx/no_anomalous.h5" --out "$out/none.json" >/dev/null 2>&1 &&
   grep -q '"i_auroc": null' "$out/none.json" && grep -q '"i_auroc_undefined": "no anomalous image"' "$out/none.json" &&
   grep -q '"p_auroc_undefined": "no anomalous pixel"' "$out/none.json" &&
   grep -q '"aupro_undefined": "no ground-truth region"' "$out/none.json"; then pass=$((pass + 1)); else
  fail=$((fail + 1)); echo "FAIL: undefined metrics not reported as null with reasons" >&2; fi
# bad arguments
for args in "--curve thresholds:1" "--label bad" "--out x.json --out-dir d" "--maps b.h5 --out x.json" "--groups 0"; do
  if $MPI -n 1 "$bin/cmds-metrics" --maps "$fx/ties_levels.h5" $args >"$out/args.log" 2>&1; then
    fail=$((fail + 1)); echo "FAIL: '$args' accepted" >&2; else pass=$((pass + 1)); fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
