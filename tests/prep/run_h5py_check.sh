#!/usr/bin/env sh
# Runs check_cache_h5py.py on the given caches; skipped (77) where python3 is absent.
command -v python3 >/dev/null 2>&1 || { echo "skipped: no python3"; exit 77; }
exec python3 "$(dirname "$0")/check_cache_h5py.py" "$@"
