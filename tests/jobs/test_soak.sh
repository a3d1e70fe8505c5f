#!/bin/bash
# The kill-and-resume soak: "outputs appear atomically, finished work is never redone or
# corrupted, a killed or requeued job resumes where it stopped", checked at many random points
# (jobs.e2e checks it at two chosen ones). The job (tests/jobs/soak.yaml): synthetic MVTec
# 3D-AD and Eyecandies data (one category each), k = 1 and 2, the random backbone, 16 x 16
# mappers trained 20 steps, two scoring settings (mul, add), metrics and the report.
#  1. The reference: the job run once, uninterrupted; then moved aside (WORK/ref), so the
#     soak runs in the very same paths and every file must come out byte for byte the same.
#  2. The soak: the job again from nothing, `cmds-run -n 2` started and killed after a random
#     delay, again and again until a cmds-run finishes by itself (at most ROUNDS kills; then
#     one last run without a kill). Each kill is, at random, SIGKILL or SIGTERM, sent to
#     cmds-run alone (a node loss / Slurm's signal to the batch script: the stages learn of it
#     from cmds-run's death) or to its whole process group (cmds-run, mpiexec and the ranks
#     at once: the stages die mid-write, or all stop on SIGTERM as under scancel).
#     After each kill, once every process of the run has ended:
#     - every final file (no .partial/.tmp name) is complete: HDF5 opens, has its
#       cmds_schema, every dataset reads in full, every done flag is set; safetensors headers
#       validate; JSON parses (soak_check); CSV/TSV/Markdown end with a newline;
#     - no finished output changed: the inode, mtime and size of every final file once seen
#       stay the same in all later rounds (records, state, tasks, the manifest, checkpoints,
#       the synthetic data and the report, which their stages rewrite by design, excepted).
#  3. At the end: cmds-run exited 0, every stage is recorded done, no .partial/.tmp file or
#     checkpoint is left, the same files exist as in the reference and each equals it (HDF5
#     and safetensors: every dataset's / tensor's bytes and every attribute; everything else
#     byte for byte, except records, state and the manifest, whose times and durations differ).
# Replay a failure with the seed it printed: CMDS_SOAK_SEED=S (or argument 6).
# Usage: test_soak.sh BIN SOURCE_DIR WORK SOAK_CHECK [ROUNDS] [SEED]
#   ROUNDS: most kills (default CMDS_SOAK_ROUNDS or 30); SEED: default CMDS_SOAK_SEED or random.
set -u
bin=$1; src=$2; work=$3; check=$4
rounds=${5:-${CMDS_SOAK_ROUNDS:-30}}
seed=${6:-${CMDS_SOAK_SEED:-$(($(date +%s%N) % 1000000))}}
. "$src/tests/lib/common.sh"
test_begin "$work"
ok_rc() { ok "$2" "[ $1 = 0 ]"; }
echo "soak: seed $seed (replay: CMDS_SOAK_SEED=$seed), at most $rounds kills"
RANDOM=$seed
t_start=$(date +%s)
J=$work/job
export CMDS_SOAK_DIR=$J
spec=$src/tests/jobs/soak.yaml

# ---- helpers ----------------------------------------------------------------------------------
# Final outputs: every file under the run, the cache and the data but partial / temporary ones
# and the run's lock.
finals() {
  find "$J" -type f ! -name '*.partial' ! -name '*.tmp' ! -name '*.tmp.*' ! -name '*.partial.*' \
    ! -name '.cmds-run.lock' 2>/dev/null | sort
}
# The final outputs whose place must never change once they exist: not the files their stage
# rewrites on purpose (records of each run, RUN/state, RUN/tasks, the manifest, the training
# checkpoints, which are replaced at each checkpoint, the synthetic data, which cmds-synth
# writes whole whenever it runs, and the report, a few small files rewritten by each report run).
immutable() {
  finals | grep -v -e '\.record\.json$' -e '/manifest\.json$' -e "^$J/run/state/" -e "^$J/run/tasks/" \
    -e '/ckpt\.[a-z]*$' -e "^$J/data/" -e "^$J/run/report/"
}
# path inode mtime size of the immutable outputs.
places() { immutable | while read -r f; do find "$f" -maxdepth 0 -printf '%p %i %T@ %s\n'; done; }
# Every final file complete and readable; $1 names the moment in messages.
check_finals() {
  local what=$1 list bad=0
  list=$(finals | grep -e '\.h5$' -e '\.safetensors$' -e '\.json$')
  if [ -n "$list" ]; then
    # shellcheck disable=SC2086
    "$check" $list >"$work/check.out" 2>"$work/check.err"
    ok_rc $? "$what: a final file is incomplete or unreadable: $(cat "$work/check.err")"
  fi
  for f in $(finals | grep -e '\.csv$' -e '\.tsv$' -e '\.md$'); do
    [ -s "$f" ] && [ "$(tail -c 1 "$f" | od -An -c | tr -d ' ')" = '\n' ] || { echo "  cut: $f"; bad=1; }
  done
  ok "$what: a final CSV/TSV/Markdown file is empty or cut" '[ $bad = 0 ]'
}
# Waits until every process of the killed run (its session: setsid) has ended (the stages
# finish stopping: checkpoints, partial files); fails, and kills them, after 180 s.
wait_session() {
  local sid=$1 i=0
  while [ -n "$(ps -o pid= -s "$sid" 2>/dev/null)" ] && [ $i -lt 1800 ]; do sleep 0.1; i=$((i + 1)); done
  left=$(ps -o pid=,args= -s "$sid" 2>/dev/null)
  ok "the processes of the killed run did not end within 180 s: $left" '[ -z "$left" ]'
  [ -z "$left" ] || kill -KILL -- "-$sid" 2>/dev/null
}
rand() { echo $(((RANDOM << 15 | RANDOM) % $1)); } # 0 .. $1-1

# ---- 1: the reference ---------------------------------------------------------------------------
"$bin/cmds-run" "$spec" -n 2 >"$work/ref.log" 2>&1
ok_rc $? "the reference run failed: $(tail -20 "$work/ref.log")"
t_ref=$(($(date +%s) - t_start))
mv "$J" "$work/ref"
echo "reference: ${t_ref} s"

# ---- 2: the soak ---------------------------------------------------------------------------------
# Delays: uniform in 0.3 s .. an eighth of the reference's time (at least 2 s): about 15 kills
# before the job is through, some in each stage, the short ones (metrics, report) included.
max_ms=$((t_ref * 125)); [ $max_ms -lt 2000 ] && max_ms=2000
modes=("KILL cmds-run" "TERM cmds-run" "KILL group" "TERM group")
: >"$work/places.db"
round=0 finished=0 summary=""
while [ $round -le "$rounds" ] && [ $finished = 0 ]; do
  round=$((round + 1))
  log=$work/round$round.log
  last=$([ $round -gt "$rounds" ] && echo 1 || echo 0)
  delay_ms=$((300 + $(rand $((max_ms - 300)))))
  mode=$(rand 4)
  # cmds-run leads its own session and process group (setsid does not fork here: a
  # background job of a script is no group leader), so the group kill reaches every rank.
  setsid "$bin/cmds-run" "$spec" -n 2 >"$log" 2>&1 &
  pid=$!
  t0=$(date +%s%N)
  killed=0
  while kill -0 $pid 2>/dev/null; do
    if [ $last = 0 ] && [ $((($(date +%s%N) - t0) / 1000000)) -ge $delay_ms ]; then
      sig=${modes[$mode]%% *}
      if [ $mode -ge 2 ]; then kill -s "$sig" -- "-$pid" 2>/dev/null; else kill -s "$sig" $pid 2>/dev/null; fi
      killed=1
      break
    fi
    sleep 0.05
  done
  wait $pid 2>/dev/null
  rc=$?
  stage=$(grep -o '^\[cmds-run\] [a-z]*:' "$log" | tail -1 | sed 's/\[cmds-run\] //; s/://')
  wait_session $pid
  if [ $killed = 1 ]; then
    printf 'round %2d: %-14s after %5d ms, in %-8s -> exit %d\n' $round "${modes[$mode]}" $delay_ms "${stage:-start}" $rc
    summary="$summary ${stage:-start}"
  else
    printf 'round %2d: %s, no kill            -> exit %d\n' $round "$([ $last = 1 ] && echo 'last run' || echo 'finished first')" $rc
  fi
  if [ $killed = 0 ] || [ $rc = 0 ]; then
    ok_rc $rc "round $round: cmds-run failed by itself: $(tail -20 "$log")"
    [ $rc = 0 ] && finished=1
    [ $rc = 0 ] || break
  fi
  check_finals "round $round"
  # No finished output changed since it first appeared; then remember the new ones.
  places >"$work/places.now"
  changed=$(join -j1 -a1 -e MISSING -o 0,1.2,1.3,1.4,2.2,2.3,2.4 "$work/places.db" "$work/places.now" |
    awk '$2 != $5 || $3 != $6 || $4 != $7 {print "  " $1 ": " $2 " " $3 " " $4 " -> " $5 " " $6 " " $7}')
  ok "round $round: finished outputs were rewritten or removed:
$changed" '[ -z "$changed" ]'
  cat "$work/places.db" "$work/places.now" | sort -u -k1,1 >"$work/places.new" && mv "$work/places.new" "$work/places.db"
  [ -n "$changed" ] && echo "  (the log of round $round: $log)"
done
echo "kills by stage:$(echo "$summary" | tr ' ' '\n' | grep . | sort | uniq -c | awk '{printf " %s %s", $2, $1}')"
ok "the job did not finish" '[ $finished = 1 ]'

# ---- 3: the end: finished, clean, and equal to the reference ----------------------------------
grep -q "\[cmds-run\] job soak complete" "$log"; ok_rc $? "the last run did not complete the job"
for st in synth prep features train score metrics report; do
  ok "stage $st not recorded as done" '[ -s "$J/run/state/$st.done" ]'
done
left=$(find "$J" \( -name '*.partial' -o -name '*.partial.*' -o -name '*.tmp' -o -name '*.tmp.*' -o -name 'ckpt.*' \) 2>/dev/null)
ok "files left over: $left" '[ -z "$left" ]'
(cd "$work/ref" && find . -type f ! -name .cmds-run.lock | sort) >"$work/ref.files"
(cd "$J" && find . -type f ! -name .cmds-run.lock | sort) >"$work/soak.files"
ok "the soak and the reference hold other files: $(diff "$work/ref.files" "$work/soak.files" | head -10)" \
  'cmp -s "$work/ref.files" "$work/soak.files"'
# The input identities hash the source files' modification times (schemas/sample_cache_v1.md,
# sample_list_hash), which differ between the two runs' synthetic data; so do the identities
# derived from them (the feature cache's sample_cache_id, the model files' input identity and
# so mapper_id, the maps' streams_identity). They are masked; every value stays compared.
no_ids() {
  sed -E 's/(sample_list_hash|sample_cache_id|mapper_id)(=|"?:? ?=? ?"?)[0-9a-z:]+/\1\2*/g'
}
n=0 differ=""
while read -r f; do
  case $f in
  *.record.json | ./run/manifest.json | ./run/state/* | *.prep.json | *.features.json) continue ;;
  *.h5 | *.safetensors)
    "$check" "$work/ref/$f" 2>&1 | tail -n +2 | no_ids >"$work/a.cmp"
    "$check" "$J/$f" 2>&1 | tail -n +2 | no_ids >"$work/b.cmp" ;;
  *) no_ids <"$work/ref/$f" >"$work/a.cmp"; no_ids <"$J/$f" >"$work/b.cmp" ;;
  esac
  cmp -s "$work/a.cmp" "$work/b.cmp" || differ="$differ
  $f: $(diff "$work/a.cmp" "$work/b.cmp" | head -4 | cut -c1-200 | tr '\n' ' ')"
  n=$((n + 1))
done <"$work/ref.files"
ok "outputs differ from the reference run's:$differ" '[ -z "$differ" ]'
echo "compared $n files with the reference ($(grep -c '/maps\.' "$work/ref.files") maps, $(grep -c '^./run/results/.*[^d]\.json$' "$work/ref.files") results)"
echo "soak: seed $seed, $round rounds, $(($(date +%s) - t_start)) s"
test_end
