#!/usr/bin/env bash
# A plain ctest must list no test labelled bench, and `ctest -C bench -L bench` must list some
# (every benchmark is registered through cmds_add_test, which puts it in configuration bench).
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
plain=$(count -L bench)
benched=$(count -C bench -L bench)
echo "plain ctest: $plain bench tests; ctest -C bench: $benched"
[ -n "$plain" ] && [ -n "$benched" ] || { echo "could not read ctest -N's totals"; exit 1; }
if [ "$plain" -ne 0 ]; then
  echo "these bench tests run in a plain ctest (add them with cmds_add_test ... LABELS bench):"
  "$ctest" -N -L bench | grep 'Test *#'
  exit 1
fi
[ "$benched" -gt 0 ] || { echo "ctest -C bench -L bench lists no benchmark"; exit 1; }
