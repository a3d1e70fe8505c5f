#!/bin/sh
# A rebuilt sample cache takes the records of what was added to the old one with it: before
# cmds-prep renames a new <cat>.h5 in, <cat>.augment.json, <cat>.estimate.json and the
# augment / estimate work copies (<cat>.h5.augment.partial, .estimate.partial) are removed
# (they describe the replaced cache); a prep run that keeps the cache (up to date) keeps them.
#   test_records.sh BIN DATA_ROOT WORK MPIEXEC...
bin=$1 data=$2 work=$3
shift 3
export OMP_NUM_THREADS=1 CMDS_PROGRESS=off
rm -rf "$work"
mkdir -p "$work"
pass=0 fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $2"; fi; }
d=$work/cache/mvtec3d
P="--dataset mvtec3d --root $data --out $work/cache --category bagel --shots 2 --size 32"
records="bagel.augment.json bagel.estimate.json bagel.h5.augment.partial bagel.h5.estimate.partial"
"$@" -n 2 "$bin/cmds-prep" $P >/dev/null; ok $? "prep"
for f in $records; do echo '{}' >"$d/$f"; done
echo '{}' >"$d/foam.estimate.json" # another category's: not touched
"$@" -n 2 "$bin/cmds-prep" $P >"$work/skip.log"; ok $? "prep again"
grep -q "up to date" "$work/skip.log"; ok $? "prep again: the cache was kept"
for f in $records; do [ -e "$d/$f" ]; ok $? "a kept cache keeps $f"; done
"$@" -n 2 "$bin/cmds-prep" $P --seed 9 >"$work/rebuild.log"; ok $? "prep --seed 9"
grep -q "samples -> " "$work/rebuild.log"; ok $? "prep --seed 9 rebuilt the cache"
for f in $records; do [ ! -e "$d/$f" ]; ok $? "the rebuilt cache's folder still has $f"; done
[ -s "$d/bagel.h5" ] && [ -s "$d/bagel.prep.json" ] && [ -e "$d/foam.estimate.json" ]; ok $? "cache, its record, other categories' records"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
