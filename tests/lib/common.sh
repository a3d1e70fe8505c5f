# shellcheck shell=bash
# Sourced by the stage tests written in bash (tests/augment, estimate, train: test_*.sh): the
# start every one makes and its checks, so a test reads as its cases.
#   . "$(dirname "$0")/../lib/common.sh"; test_begin "$work"; ...; ok NAME 'EXPR'; ...; test_end
# (The benchmark drivers have their own, tests/bench_lib.sh.)

# test_begin WORK: one thread per rank (ctest sets it too; by hand as well), no progress lines,
# WORK emptied, the counters at 0.
test_begin() {
  export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 CMDS_PROGRESS=off
  rm -rf "$1"
  mkdir -p "$1"
  pass=0 fail=0
}

# ok NAME 'EXPR': EXPR (evaluated here, so $? is the status of the command just before) passes
# or fails; a failure prints NAME.
ok() { if eval "$2"; then pass=$((pass+1)); else echo "FAIL: $1"; fail=$((fail+1)); fi; }

# num FILE KEY: the value of the first "KEY": number (or nan / inf / true / false) in a JSON file.
num() { grep -o "\"$2\": [-0-9.e+a-z]*" "$1" | head -1 | awk '{print $2}'; }

# test_end: the closing line "N passed, N failed"; the status of the test (0 when none failed).
test_end() {
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
