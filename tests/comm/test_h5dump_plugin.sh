#!/usr/bin/env bash
# The zstd plugin built as libh5zstd.so lets the standard HDF5 tools read our files:
# h5dump must print the data of a compressed dataset written by test_h5io.
set -euo pipefail
plugin_dir=$1 file=$2
out=$(HDF5_PLUGIN_PATH="$plugin_dir" h5dump -d /values -s "3,0" -c "1,2" "$file")
echo "$out"
# value_at(3, 0) = 3000 * 0.25 = 750, value_at(3, 1) = 750.25
echo "$out" | grep -q "750, 750.25" || { echo "h5dump did not decode the zstd dataset"; exit 1; }
# Without the plugin the tools must fail to read the data (proves the filter is really used).
if HDF5_PLUGIN_PATH=/nonexistent h5dump -d /values "$file" >/dev/null 2>&1; then
  echo "h5dump read compressed data without the plugin: filter not applied?"; exit 1
fi
echo "1 passed, 0 failed"
