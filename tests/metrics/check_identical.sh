#!/bin/sh
# Results of the same maps files computed with different rank counts and groupings must
# be byte-identical (the result JSON holds no rank count or timing, and every reduction
# is exact). Usage: check_identical.sh CASES_FILE DIR_A DIR_B [DIR ...]
set -u
cases=$1; shift
ref=$1; shift
pass=0; fail=0
for c in $(cat "$cases"); do
  for d in "$@"; do
    for ext in json csv pro.tsv; do
      if cmp -s "$ref/$c.$ext" "$d/$c.$ext"; then pass=$((pass + 1)); else
        fail=$((fail + 1)); echo "FAIL: $ref/$c.$ext and $d/$c.$ext differ" >&2
        diff "$ref/$c.$ext" "$d/$c.$ext" | head -5 >&2
      fi
    done
  done
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
