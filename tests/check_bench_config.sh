#!/usr/bin/env bash
# A plain ctest must list no test labelled bench, and `ctest -C bench -L bench` must list some
# (every benchmark is registered through cmds_add_test, which puts it in configuration bench);
# the same for the label and configuration soak.
#   check_bench_config.sh CTEST BUILD_DIR
# ctest -N runs on a copy of the build tree's CTestTestfile.cmake files: in the build tree itself
# it would rewrite Testing/Temporary/LastTest.log under the ctest run this check is part of.
set -uo pipefail
ctest=$1 build=$2
[ -f "$build/CTestTestfile.cmake" ] || { echo "no CTestTestfile.cmake in $build"; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
(cd "$build" && find . -name CTestTestfile.cmake -exec cp --parents {} "$scratch" \;)
cd "$scratch" || exit 1
count() { "$ctest" -N "$@" | sed -n 's/^Total Tests: \([0-9]*\)$/\1/p'; }
# bench: the benchmarks; soak: the kill-and-resume soak (tests/jobs/test_soak.sh), each only in
# the CTest configuration of its name.
for label in bench soak; do
  plain=$(count -L "$label")
  configured=$(count -C "$label" -L "$label")
  echo "plain ctest: $plain $label tests; ctest -C $label: $configured"
  [ -n "$plain" ] && [ -n "$configured" ] || { echo "could not read ctest -N's totals"; exit 1; }
  if [ "$plain" -ne 0 ]; then
    echo "these $label tests run in a plain ctest (add them with cmds_add_test ... LABELS $label):"
    "$ctest" -N -L "$label" | grep 'Test *#'
    exit 1
  fi
  # (the soak exists only where the jobs tests are built: not with CMDS_KERNELS_ONLY)
  [ "$label" = soak ] && [ "$(count -R '^jobs[.]')" = 0 ] && continue
  [ "$configured" -gt 0 ] || { echo "ctest -C $label -L $label lists no test"; exit 1; }
done
