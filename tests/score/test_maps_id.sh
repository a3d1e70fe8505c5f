#!/usr/bin/env bash
# maps_id: cmds-score writes a content identity into every maps file; cmds-metrics records it
# and keeps a result exactly while the maps' id equals the recorded one, whatever the file
# times say (stages/metrics/result_write.h, metrics_result_status):
#   - the id is "hash128:<32 hex>", in the maps file, the score record and the result JSON;
#   - identical maps rewritten later (score --force) keep the id: the result is kept although
#     the maps are newer than it;
#   - changed maps given an OLD mtime (as rsync -a / cp -p from elsewhere, a coarse or skewed
#     clock would) get another id: measured again (the mtime rule kept the stale result);
#   - a result recording no id (written before the attribute) is measured once, then kept;
#   - maps without maps_id (other tools, older cmds-score): the mtime rule; a result that
#     records an id is measured again when its maps are replaced by a file without one;
#   - an unusable maps_id is refused naming the file; another tool's id works the same way.
#   test_maps_id.sh BIN_DIR PLUGIN_DIR FIXTURES WORK MPIEXEC...
set -uo pipefail
bin=$1 plugin=$2 fx=$3 work=$4
shift 4
mp=("$@")
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
test_begin "$work"
export HDF5_PLUGIN_PATH=$plugin
tool() { "$bin/score_tool" "$@"; }
C=$work/cache
tool caches "$fx" "$C" mvtec3d bagel || exit 1
mkdir -p "$work/run/models/mvtec3d/bagel/k1/default"
cp "$fx/score/e2e_mapper.safetensors" "$work/run/models/mvtec3d/bagel/k1/default/mapper.safetensors"
score() { "${mp[@]}" -n 2 "$bin/cmds-score" --cache "$C" --run "$work/run" --dataset mvtec3d --category bagel --shots 1 "$@"; }
metrics() { "${mp[@]}" -n 2 "$bin/cmds-metrics" --maps "$1" --out "$2" --label maps_id=a-label; } # a label named like the key
json_id() { sed -n 's/^  "maps_id": "\(.*\)",$/\1/p' "$1" | head -1; } # the top-level key (2 spaces)
hash_of() { grep -o '"content_hash": "[0-9a-f]*"' "$1"; }
D=$work/run/maps/mvtec3d/bagel/k1/default
maps=$D/maps.default.h5
R=$work/res/r.json
future() { touch -d "@$(($(date +%s) + 3600))" "$@"; } # newer than anything written now
past() { touch -d "2001-01-01 00:00:00" "$@"; }

score >/dev/null; ok "score run" '[ -e "$maps" ]'
id1=$(tool attr "$maps" maps_id)
ok "the maps file has a maps_id ($id1)" '[[ $id1 =~ ^hash128:[0-9a-f]{32}$ ]]'
ok "the score record names it" 'grep -q "\"maps_id\": \"$id1\"" "$D/score.record.json"'
mkdir -p "$work/res"
metrics "$maps" "$R" >"$work/m1.log" 2>&1; ok "metrics run" '[ $? -eq 0 ]'
ok "the result records the maps_id" '[ "$(json_id "$R")" = "$id1" ]'
ok "the metrics record names it and why it measured" 'grep -q "\"maps_id\": \"$id1\"" "$work/res/r.record.json" && grep -q "\"measured_because\": \"no complete result\"" "$work/res/r.record.json"'
cp -p "$R" "$work/r.first.json"

# identical maps written again, newer than the result: kept
score --force >/dev/null; future "$maps"
ok "rewriting identical maps keeps the id" '[ "$(tool attr "$maps" maps_id)" = "$id1" ]'
metrics "$maps" "$R" >"$work/m2.log" 2>&1
ok "identical maps, newer than the result: result kept" 'grep -q "complete, skipped" "$work/m2.log" && cmp -s "$R" "$work/r.first.json"'

# changed maps with an old mtime: measured again
score --force --setting default --set score.sigma=2 >/dev/null; past "$maps"
id2=$(tool attr "$maps" maps_id)
ok "changed maps get another id" '[[ $id2 =~ ^hash128: ]] && [ "$id2" != "$id1" ]'
metrics "$maps" "$R" >"$work/m3.log" 2>&1
ok "changed maps older than the result: measured again" 'grep -q "measured again: maps changed" "$work/m3.log" && [ "$(json_id "$R")" = "$id2" ]'
ok "... and the result is the new maps'" '[ "$(hash_of "$R")" != "$(hash_of "$work/r.first.json")" ]'
ok "... the record says why" 'grep -q "\"measured_because\": \"maps changed" "$work/res/r.record.json"'
metrics "$maps" "$R" >"$work/m4.log" 2>&1
ok "then kept" 'grep -q "complete, skipped" "$work/m4.log"'

# a result written before maps_id existed (no key): measured once more, then kept
sed -i '/^  "maps_id":/d' "$R"; future "$R"
metrics "$maps" "$R" >"$work/m5.log" 2>&1
ok "a result recording no id is measured again" 'grep -q "measured again: result older than maps_id" "$work/m5.log" && [ "$(json_id "$R")" = "$id2" ]'
metrics "$maps" "$R" >"$work/m6.log" 2>&1
ok "... once" 'grep -q "complete, skipped" "$work/m6.log"'

# maps without maps_id (any other tool): the mtime rule
O=$work/other
mkdir -p "$O"
cp "$fx/metrics/ties_levels.h5" "$O/maps.h5"; past "$O/maps.h5"
metrics "$O/maps.h5" "$O/r.json" >"$work/o1.log" 2>&1; ok "metrics on maps without maps_id" '[ $? -eq 0 ]'
ok "the result records maps_id null" 'grep -q "\"maps_id\": null," "$O/r.json"'
metrics "$O/maps.h5" "$O/r.json" >"$work/o2.log" 2>&1
ok "maps without id, older than the result: kept" 'grep -q "complete, skipped" "$work/o2.log"'
future "$O/maps.h5"
metrics "$O/maps.h5" "$O/r.json" >"$work/o3.log" 2>&1
ok "maps without id, newer than the result: measured again" 'grep -q "measured again: maps without maps_id modified after" "$work/o3.log"'
# the scored maps replaced by a file without an id (older): the result's id no longer applies
cp "$fx/metrics/ties_levels.h5" "$maps"; past "$maps"
metrics "$maps" "$R" >"$work/m7.log" 2>&1
ok "maps replaced by a file without id: measured again" 'grep -q "measured again: maps changed" "$work/m7.log" && grep -q "\"maps_id\": null," "$R"'

# an unusable maps_id is bad input: refused, naming the file and the attribute
cp "$fx/metrics/ties_levels.h5" "$O/bad.h5" && tool set-attr "$O/bad.h5" maps_id 'has "quotes"'
msg=$(metrics "$O/bad.h5" "$O/bad.json" 2>&1); rc=$?
ok "a bad maps_id is refused, file and attribute named" '[ $rc -ne 0 ] && grep -q "bad.h5: attribute maps_id: expected" <<<"$msg" && [ ! -e "$O/bad.json" ]'
# another tool's id works as well: a result is kept while the id stays, measured when it changes
tool set-attr "$O/maps.h5" maps_id "other-tool:1"; past "$O/maps.h5"
metrics "$O/maps.h5" "$O/r.json" >"$work/o4.log" 2>&1
ok "another tool's id: measured (the result recorded none)" 'grep -q "measured again: result older than maps_id" "$work/o4.log" && grep -q "\"maps_id\": \"other-tool:1\"" "$O/r.json"'
future "$O/maps.h5"
metrics "$O/maps.h5" "$O/r.json" >"$work/o5.log" 2>&1
ok "another tool's id, unchanged, newer file: kept" 'grep -q "complete, skipped" "$work/o5.log"'
tool set-attr "$O/maps.h5" maps_id "other-tool:2"; past "$O/maps.h5"
metrics "$O/maps.h5" "$O/r.json" >"$work/o6.log" 2>&1
ok "another tool's id changed, older file: measured again" 'grep -q "measured again: maps changed" "$work/o6.log"'
test_end
