#!/usr/bin/env bash
# Runs a test program against Debian's OpenMP build of OpenBLAS (libopenblas0-openmp, which
# .ci/install-deps.sh installs beside the default pthreads one without making it the default),
# so the CPU ops are checked with both threading flavours users meet (many cluster builds of
# OpenBLAS use OpenMP). Exits 77 (skip) when that library is not installed.
#   with_openblas_openmp.sh PROGRAM [ARGS...]
set -u
dir=${CMDS_OPENBLAS_OPENMP_DIR:-/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)/openblas-openmp}
if [ ! -e "$dir/libopenblas.so.0" ]; then
  echo "no OpenMP OpenBLAS at $dir (Debian: libopenblas0-openmp): skipped"
  exit 77
fi
export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
lib=$(ldd "$1" | awk '/libopenblas/ {print $3}')
case "$lib" in
  "$dir"/*) echo "OpenBLAS: $lib" ;;
  *) echo "FAIL: $1 loads OpenBLAS from '$lib', not $dir"; exit 1 ;;
esac
exec "$@"
