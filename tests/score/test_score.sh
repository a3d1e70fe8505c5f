#!/usr/bin/env bash
# cmds-score end to end on small caches written from the gen_score.py fixtures:
#   - the four maps equal the PyTorch mapper's (mapper_ref.py) at 1e-5, and the maps files
#     of three settings equal the numpy/torch/scipy reference at 1e-5;
#   - a new setting rescores from streams.h5 without the mapper (record: 0 forwards) and
#     equals a full run with that setting; a re-run skips; a tasks file and --settings work;
#   - -n 1, -n 2, -n 4 give identical maps datasets, maps_id and cmds-metrics JSON;
#   - a run killed after 2 samples resumes (record: resumed, fewer samples) and equals the
#     uninterrupted run;
#   - without normals_est the E stream must be off (l1 = l2 = 0 or streams=real);
#   - bad input (missing model, width/layers mismatch, bad keys, a name reused for another
#     setting) fails naming what is wrong.
#   test_score.sh BIN_DIR PLUGIN_DIR FIXTURES WORK MPIEXEC...
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
tool caches "$fx" "$C" mvtec3d cookie --no-est || exit 1
model() { # RUN CATEGORY TAG [FILE]
  mkdir -p "$1/models/mvtec3d/$2/k1/$3"
  cp "${4:-$fx/score/e2e_mapper.safetensors}" "$1/models/mvtec3d/$2/k1/$3/mapper.safetensors"
}
score() { "${mp[@]}" -n "$1" "$bin/cmds-score" --cache "$C" --run "${@:2}"; }
M=maps/mvtec3d/bagel/k1/default
recval() { grep -o "\"$2\": [^,}]*" "$1/$M/score.record.json" | head -1 | sed 's/.*: //; s/"//g'; }
same() { # FILE_A FILE_B: every dataset of a maps file byte-identical, and the same maps_id
  local d r=0
  for d in scores image_scores masks labels sample_id; do h5diff "$1" "$2" "/$d" "/$d" >/dev/null || r=1; done
  [ -n "$(tool attr "$1" maps_id)" ] && [ "$(tool attr "$1" maps_id)" = "$(tool attr "$2" maps_id)" ] || r=1
  return $r
}

# the four maps and three settings against the references
model "$work/a" bagel default
score 2 "$work/a" --dataset mvtec3d --category bagel --shots 1 >/dev/null; rc=$?
ok "full run succeeds" '[ $rc -eq 0 ]'
out=$(tool check-streams "$work/a/$M/streams.h5" "$fx" 1e-5); rc=$?; echo "$out"
ok "the four maps equal PyTorch's (1e-5)" '[ $rc -eq 0 ]'
ok "record: streams computed, 15 mapper forwards" '[ "$(recval "$work/a" streams)" = computed ] && [ "$(recval "$work/a" mapper_forwards)" = 15 ]'
printf 'add_real score.fusion=add score.streams=real\nest score.streams=est score.sigma=2  # comment\nnofg score.fg_mask=0\n' > "$work/settings.txt"
score 2 "$work/a" --dataset mvtec3d --category bagel --shots 1 --settings "$work/settings.txt" >/dev/null; rc=$?
ok "rescoring with a settings file succeeds" '[ $rc -eq 0 ]'
ok "rescoring ran no mapper (record)" '[ "$(recval "$work/a" mapper_forwards)" = 0 ] && [ "$(recval "$work/a" streams)" = reused ]'
for s in default add_real est nofg; do
  out=$(tool check-maps "$work/a/$M/maps.$s.h5" "$fx" "$s" 1e-5); rc=$?; echo "$out"
  ok "maps.$s.h5 equals the reference (1e-5)" '[ $rc -eq 0 ]'
done
ids=$(for s in default add_real est nofg; do tool attr "$work/a/$M/maps.$s.h5" maps_id; done | sort -u | grep -c '^hash128:')
ok "four settings, four different maps_id (content identities)" '[ "$ids" = 4 ]'
cp "$work/a/$M/score.record.json" "$work/record.before"
out=$(score 2 "$work/a" --dataset mvtec3d --category bagel --shots 1)
ok "re-run skips" 'grep -q "0 maps written, 1 up to date" <<<"$out"'
ok "a re-run that wrote nothing keeps the record of the run that did" 'cmp -s "$work/a/$M/score.record.json" "$work/record.before"'
# a full run with the new setting equals the rescored one
model "$work/b" bagel default
score 2 "$work/b" --dataset mvtec3d --category bagel --shots 1 --setting add_real --set score.fusion=add \
  --set score.streams=real >/dev/null
ok "full run with a setting computes the streams" '[ "$(recval "$work/b" mapper_forwards)" = 15 ]'
ok "rescored equals the full run" 'same "$work/a/$M/maps.add_real.h5" "$work/b/$M/maps.add_real.h5"'
score 2 "$work/b" --dataset mvtec3d --category bagel --shots 1 --settings "$work/settings.txt" >/dev/null
recids=$(grep -o '"maps_id": "hash128:[0-9a-f]*"' "$work/b/$M/score.record.json" | sed 's/.*: //; s/"//g')
ok "the record names the maps_id of a kept setting too (add_real kept, est and nofg written)" \
  '[ "$(wc -l <<<"$recids")" = 3 ] && [ "$(head -1 <<<"$recids")" = "$(tool attr "$work/b/$M/maps.add_real.h5" maps_id)" ] &&
   grep -q "\"status\": \"skipped\"" "$work/b/$M/score.record.json"'
# tasks file: two lines of one model folder = two settings; --task-index picks one line
printf '# tasks\nmvtec3d bagel 1 default\nmvtec3d cookie 1 default score.streams=real\nmvtec3d bagel 1 default score.l1=0.5 score.l2=0.2\n' > "$work/tasks.txt"
model "$work/b" cookie default
score 1 "$work/b" --tasks "$work/tasks.txt" >/dev/null; rc=$?
ok "tasks file: derived setting name" '[ $rc -eq 0 ] && [ -e "$work/b/$M/maps.l1-0.5_l2-0.2.h5" ] && [ -e "$work/b/$M/maps.default.h5" ]'
ok "tasks file: second task scored" '[ -e "$work/b/maps/mvtec3d/cookie/k1/default/maps.streams-real.h5" ]'
ok "tasks file: default equals the first run" 'same "$work/a/$M/maps.default.h5" "$work/b/$M/maps.default.h5"'
rm "$work/b/$M/maps.default.h5"
out=$(score 1 "$work/b" --tasks "$work/tasks.txt" --task-index 0); rc=$?
ok "--task-index 0 writes only its setting" '[ $rc -eq 0 ] && grep -q "1 maps written, 0 up to date" <<<"$out"'

# rank counts: identical maps and identical metrics
for n in 1 4; do
  model "$work/n$n" bagel default
  score $n "$work/n$n" --dataset mvtec3d --category bagel --shots 1 >/dev/null
  ok "-n $n maps equal -n 2's" 'same "$work/a/$M/maps.default.h5" "$work/n$n/$M/maps.default.h5"'
  ok "-n $n streams equal -n 2's" 'h5diff "$work/a/$M/streams.h5" "$work/n$n/$M/streams.h5" >/dev/null'
done
for d in a n1 n4; do
  mkdir -p "$work/metrics_$d"
  "${mp[@]}" -n 2 "$bin/cmds-metrics" --maps "$work/$d/$M/maps.default.h5" --out "$work/metrics_$d/r.json" >/dev/null
  grep -v '"maps": ' "$work/metrics_$d/r.json" > "$work/metrics_$d.json" # the input path differs, nothing else may
done
ok "cmds-metrics JSON of -n 1 equals -n 2's" 'cmp -s "$work/metrics_a.json" "$work/metrics_n1.json"'
ok "cmds-metrics JSON of -n 4 equals -n 2's" 'cmp -s "$work/metrics_a.json" "$work/metrics_n4.json"'
ok "cmds-metrics computed an I-AUROC" 'grep -q "\"i_auroc\": 0\.[0-9]" "$work/metrics_a.json"'

# kill after 2 samples, then resume
model "$work/k" bagel default
CMDS_TEST_KILL_AFTER_ROWS=1 score 2 "$work/k" --dataset mvtec3d --category bagel --shots 1 >/dev/null 2>&1
ok "killed: no streams.h5, no maps" '[ ! -e "$work/k/$M/streams.h5" ] && [ ! -e "$work/k/$M/maps.default.h5" ]'
ok "killed: partial streams kept" '[ -e "$work/k/$M/streams.h5.partial" ]'
score 2 "$work/k" --dataset mvtec3d --category bagel --shots 1 >/dev/null; rc=$?
ok "resumed run succeeds and says so" '[ $rc -eq 0 ] && [ "$(recval "$work/k" streams)" = resumed ]'
n=$(recval "$work/k" samples_computed)
ok "resumed run computed only the rest ($n of 5)" '[ -n "$n" ] && [ "$n" -lt 5 ] && [ "$n" -ge 1 ]'
ok "resumed equals uninterrupted (maps)" 'same "$work/a/$M/maps.default.h5" "$work/k/$M/maps.default.h5"'
ok "resumed equals uninterrupted (streams)" 'h5diff "$work/a/$M/streams.h5" "$work/k/$M/streams.h5" >/dev/null'

# no normals_est: the E stream must be off
model "$work/a" cookie default
MC=maps/mvtec3d/cookie/k1/default
msg=$(score 2 "$work/a" --dataset mvtec3d --category cookie --shots 1 2>&1); rc=$?
ok "E weights without normals_est refused, keys named" '[ $rc -ne 0 ] && grep -q "score.l1=0.1, score.l2=0.1" <<<"$msg" && grep -q normals_est <<<"$msg"'
msg=$(score 2 "$work/a" --dataset mvtec3d --category cookie --shots 1 --set score.streams=est 2>&1); rc=$?
ok "streams=est without normals_est refused" '[ $rc -ne 0 ] && grep -q "score.streams=est" <<<"$msg"'
score 2 "$work/a" --dataset mvtec3d --category cookie --shots 1 --set score.l1=0 --set score.l2=0 >/dev/null; rc=$?
ok "l1 = l2 = 0 without normals_est runs" '[ $rc -eq 0 ] && [ -e "$work/a/$MC/maps.l1-0_l2-0.h5" ]'
ok "record: est not available, reason" 'grep -q "\"est_available\": false" "$work/a/$MC/score.record.json" && grep -q "no normals_est" "$work/a/$MC/score.record.json"'
out=$(tool check-streams "$work/a/$MC/streams.h5" "$fx" 1e-5); rc=$?; echo "$out"
ok "real maps without normals_est equal PyTorch's" '[ $rc -eq 0 ]'
score 2 "$work/a" --dataset mvtec3d --category cookie --shots 1 --set score.streams=real >/dev/null; rc=$?
ok "streams=real without normals_est rescored" '[ $rc -eq 0 ] && [ -e "$work/a/$MC/maps.streams-real.h5" ] && grep -q "\"mapper_forwards\": 0" "$work/a/$MC/score.record.json"'

# bad input
msg=$(score 2 "$work/a" --dataset mvtec3d --category bagel --shots 1 --tag nope 2>&1); rc=$?
ok "missing model refused, path named" '[ $rc -eq 2 ] && grep -q "models/mvtec3d/bagel/k1/nope/mapper.safetensors" <<<"$msg" && grep -q cmds-train <<<"$msg"'
tool mapper "$work/w8.safetensors" 8 3 12 1 && model "$work/a" bagel w8 "$work/w8.safetensors"
msg=$(score 2 "$work/a" --dataset mvtec3d --category bagel --shots 1 --tag w8 2>&1); rc=$?
ok "width mismatch refused" '[ $rc -eq 2 ] && grep -q "mapper.width = 8" <<<"$msg" && grep -q "16 wide" <<<"$msg"'
tool mapper "$work/l2.safetensors" 16 2 12 1 && model "$work/a" bagel l2 "$work/l2.safetensors"
msg=$(score 2 "$work/a" --dataset mvtec3d --category bagel --shots 1 --tag l2 2>&1); rc=$?
ok "layers mismatch refused" '[ $rc -eq 2 ] && grep -q "mapper.layers = 2" <<<"$msg"'
tool mapper "$work/ok.safetensors" 16 3 8 1 && model "$work/a" bagel rnd "$work/ok.safetensors"
score 2 "$work/a" --dataset mvtec3d --category bagel --shots 1 --tag rnd >/dev/null; rc=$?
ok "a mapper_save file at another resolution (8 -> 24) scores" '[ $rc -eq 0 ] && [ "$(tool attr "$work/a/maps/mvtec3d/bagel/k1/rnd/streams.h5" resolution)" = 8 ]'
head -c 3000 "$fx/score/e2e_mapper.safetensors" > "$work/trunc.safetensors" && model "$work/a" bagel tr "$work/trunc.safetensors"
msg=$(score 2 "$work/a" --dataset mvtec3d --category bagel --shots 1 --tag tr 2>&1); rc=$?
ok "truncated model refused, file named" '[ $rc -ne 0 ] && grep -q "k1/tr/mapper.safetensors" <<<"$msg"'
msg=$(score 2 "$work/a" --dataset mvtec3d --category bagel --shots 1 --set score.fusion=sum 2>&1); rc=$?
ok "bad value refused" '[ $rc -eq 2 ] && grep -q "score.fusion=.sum.: expected one of mul|add|max|2d|3d" <<<"$msg"'
msg=$(score 2 "$work/a" --dataset mvtec3d --category bagel --shots 1 --set score.l9=1 2>&1); rc=$?
ok "unknown key refused" '[ $rc -eq 2 ] && grep -q "unknown configuration key .score.l9." <<<"$msg"'
printf 'x train.steps=5\n' > "$work/bad_settings.txt"
msg=$(score 2 "$work/a" --dataset mvtec3d --category bagel --shots 1 --settings "$work/bad_settings.txt" 2>&1); rc=$?
ok "training key in a settings file refused" '[ $rc -eq 2 ] && grep -q "bad_settings.txt:1: train.steps" <<<"$msg"'
msg=$(score 2 "$work/a" --dataset mvtec3d --category bagel --shots 1 --setting default --set score.l1=0.5 2>&1); rc=$?
ok "a name reused for another setting refused" '[ $rc -eq 2 ] && grep -q "exists with another setting" <<<"$msg"'
msg=$(score 2 "$work/a" --dataset mvtec3d --category nothere --shots 1 2>&1); rc=$?
ok "missing feature cache refused" '[ $rc -eq 2 ] && grep -q "nothere.features.h5" <<<"$msg"'
test_end
