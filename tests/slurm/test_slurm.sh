#!/bin/bash
# cmds-run --slurm against a real Slurm: the Debian slurm-wlm daemons (slurmctld + slurmd,
# authenticated by munge) started here as a one-node cluster with everything (config, keys,
# state, spool, logs, sockets) in a temporary directory, the job submitted through our own
# chain (cmds-run SPEC --slurm: RUN/slurm/submit.sh and the slurm/*.sbatch templates, srun
# as the launcher, PMIx picked by the templates since this cluster's MpiDefault is none),
# run to completion, then checked:
#  - every job of the chain (synth, prep, features, train array, score array, metrics,
#    report) COMPLETED with exit code 0, its log in RUN/slurm/logs/;
#  - the MPI stages really ran on 2 ranks started by srun (records: ranks 2, the Slurm job
#    id), every stage is recorded as done and every output exists (models, maps, results,
#    the report);
#  - the same chain with `slurm.launcher: mpiexec` (Open MPI's mpiexec inside the jobs) into
#    another run directory on the same caches: all jobs complete, metrics one 2-rank world;
#  - the results of both equal those of a plain `cmds-run SPEC` (mpiexec, no Slurm) into a
#    third run directory: the metrics JSON identical except the maps path (the maps'
#    content hash included).
# The daemons are always stopped (trap), leftover job processes of this cluster killed by
# pid, the temporary directory removed. Skips (77) when not root or Slurm/munge are missing.
# Usage: test_slurm.sh BIN SOURCE_DIR WORK
set -u
bin=$1; src=$2; work=$3
skip() { echo "skip: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (slurmd, munged)"
for p in slurmctld slurmd sbatch squeue sinfo scontrol srun scancel munged munge; do
  command -v "$p" >/dev/null 2>&1 || skip "$p not installed (.ci/install-deps.sh: slurmctld slurmd slurm-client munge)"
done
node=$(hostname -s)
getent hosts "$node" >/dev/null || skip "this host's name '$node' does not resolve"
rm -rf "$work"; mkdir -p "$work"
pass=0; fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $2" >&2; fi; }
t_start=$(date +%s)

# ---- the cluster ------------------------------------------------------------------------
# Short paths in /tmp: munge's and slurmd's unix sockets have a 108-byte limit.
cl=$(mktemp -d /tmp/cmds-slurm.XXXXXX) || exit 1
chmod 755 "$cl"   # munged wants its socket's directory reachable by everyone
mkdir -p "$cl/state" "$cl/spool" "$cl/log" "$cl/run" "$cl/munge"
chmod 755 "$cl/munge"
export SLURM_CONF=$cl/slurm.conf
stop_cluster() {
  set +e
  if [ -e "$cl/run/slurmctld.bg" ]; then
    ids=$(squeue -h -o %i 2>/dev/null)
    if [ -n "$ids" ]; then
      scancel $ids >/dev/null 2>&1; i=0
      while [ -n "$(squeue -h -o %i 2>/dev/null)" ] && [ $i -lt 40 ]; do sleep 0.25; i=$((i + 1)); done
    fi
  fi
  for d in slurmd slurmctld; do
    [ -e "$cl/run/$d.bg" ] && kill "$(cat "$cl/run/$d.bg")" 2>/dev/null
  done
  for d in slurmd slurmctld; do
    if [ -e "$cl/run/$d.bg" ]; then
      p=$(cat "$cl/run/$d.bg"); i=0
      while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
      kill -KILL "$p" 2>/dev/null
    fi
  done
  if [ -e "$cl/munge/munged.pid" ]; then
    p=$(cat "$cl/munge/munged.pid"); kill "$p" 2>/dev/null; i=0
    while kill -0 "$p" 2>/dev/null && [ $i -lt 25 ]; do sleep 0.2; i=$((i + 1)); done
  fi
  # Job steps and their processes outlive slurmd: find those of this cluster (their
  # environment names its slurm.conf) and end them by pid.
  unset SLURM_CONF
  for e in /proc/[0-9]*/environ; do
    p=${e#/proc/}; p=${p%/environ}
    [ "$p" = $$ ] && continue
    if { tr '\0' '\n' <"$e"; } 2>/dev/null | grep -qx "SLURM_CONF=$cl/slurm.conf"; then
      echo "stopping leftover process $p: $({ tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null)"
      kill -KILL "$p" 2>/dev/null
    fi
  done
  sleep 0.2
  if [ "$fail" -ne 0 ] || [ "${KEEP_LOGS:-0}" = 1 ]; then
    mkdir -p "$work/cluster-logs" && cp "$cl"/log/* "$work/cluster-logs/" 2>/dev/null
  fi
  rm -rf "$cl"
}
trap stop_cluster EXIT
trap 'exit 1' INT TERM

# munge: our own key, socket, pid, log and seed files.
dd if=/dev/urandom bs=1 count=1024 of="$cl/munge/munge.key" 2>/dev/null
chmod 600 "$cl/munge/munge.key"
munged --socket="$cl/munge/sock" --key-file="$cl/munge/munge.key" --pid-file="$cl/munge/munged.pid" \
  --log-file="$cl/log/munged.log" --seed-file="$cl/munge/seed" >"$cl/log/munged.out" 2>&1
ok $? "munged did not start: $(cat "$cl/log/munged.out" "$cl/log/munged.log" 2>/dev/null | tail -3)"
echo test | munge -S "$cl/munge/sock" | unmunge -S "$cl/munge/sock" >/dev/null 2>&1
ok $? "munge round trip through $cl/munge/sock"

# Free TCP ports for slurmctld and slurmd (a site's Slurm may use 6817/6818).
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
cport=$((20000 + ($$ % 20000))); i=0
while ! { port_free "$cport" && port_free $((cport + 1)); } && [ $i -lt 50 ]; do cport=$((cport + 2)); i=$((i + 1)); done
# CPUs: the machine's (not `nproc`, which follows OMP_NUM_THREADS); at least 2 for the
# 2-rank stages (a 1-CPU machine is declared with 2: config_overrides, oversubscribed).
cpus=$(getconf _NPROCESSORS_ONLN); over=""
if [ "$cpus" -lt 2 ]; then cpus=2; over="SlurmdParameters=config_overrides"; fi
mem=$(awk '/^MemTotal:/ {m = int($2 / 1024); r = m - (m / 10 > 512 ? int(m / 10) : 512); print (r > 256 ? r : 256)}' /proc/meminfo)
cat >"$SLURM_CONF" <<EOF
# One-node test cluster of tests/slurm/test_slurm.sh (written by the test, removed after).
ClusterName=cmdstest
SlurmctldHost=localhost
SlurmctldPort=$cport
SlurmdPort=$((cport + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$cl/munge/sock
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=kill_invalid_depend
ReturnToService=2
$over
MinJobAge=600
StateSaveLocation=$cl/state
SlurmdSpoolDir=$cl/spool
SlurmctldPidFile=$cl/run/slurmctld.pid
SlurmdPidFile=$cl/run/slurmd.pid
SlurmctldLogFile=$cl/log/slurmctld.log
SlurmdLogFile=$cl/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=cmdstest Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D >"$cl/log/slurmctld.out" 2>&1 &
echo $! >"$cl/run/slurmctld.bg"
slurmd -D >"$cl/log/slurmd.out" 2>&1 &
echo $! >"$cl/run/slurmd.bg"
i=0
until sinfo -h -N -o '%T' 2>/dev/null | grep -qx idle; do
  i=$((i + 1))
  if [ $i -gt 150 ]; then
    ok 1 "the node never became idle: $(sinfo -N 2>&1 | tail -2) $(tail -3 "$cl/log/slurmctld.log" "$cl/log/slurmd.log" 2>&1)"
    exit 1
  fi
  sleep 0.2
done
echo "cluster up: node $node, $cpus CPUs, ${mem} MB, ports $cport/$((cport + 1)) ($(($(date +%s) - t_start)) s)"

# ---- the job ----------------------------------------------------------------------------
# A tiny variant of jobs/demo.yaml: one category, k = 1 and 2 (two training units: the
# train and score arrays have two tasks), 2 ranks for prep, features, metrics.
spec() {
  cat <<EOS
job: slurmtest
version: 1
run: $work/$1
cache: $work/cache
ranks: 2
device: cpu
backbone: {random: 0}
datasets:
  - name: mvtec3d
    root: $work/data
    categories: [bagel]
    synth: {seed: 5, size: 200}
shots: [1, 2]
config:
  mapper.resolution: 28
  mapper.ca_reduction: 36
  train.steps: 20
  train.noise_sigma: 0
  score.l1: 0
  score.l2: 0
slurm: {cpus_per_rank: 1, gpus_per_rank: 0, launcher: $2}
EOS
}
unset CMDS_SRUN_FLAGS SLURM_MPI_TYPE
# Submits the spec's chain (run directory $1, launcher $2), waits for it, checks every job.
chain() {
  spec "$1" "$2" >"$work/$1.yaml"
  (cd "$work" && "$bin/cmds-run" "$work/$1.yaml" --slurm --slurm-dir "$src/slurm") >"$work/$1.submit.log" 2>&1
  ok $? "cmds-run --slurm failed: $(tail -5 "$work/$1.submit.log")"
  jobs=$(sed -n 's/^cmds: \([a-z]*\) -> job \([0-9]*\)$/\1=\2/p' "$work/$1.submit.log")
  [ "$(echo "$jobs" | grep -c .)" = 7 ]; ok $? "expected 7 chained jobs: $(cat "$work/$1.submit.log")"
  echo "$1 ($2): submitted $(echo $jobs)"
  # Wait for the chain (a failed job cancels its dependants: kill_invalid_depend); a job
  # pending for a reason that never resolves stops the wait at once.
  i=0
  while [ -n "$(squeue -h -o %i 2>/dev/null)" ] && [ $i -lt 720 ]; do
    if squeue -h -o %r 2>/dev/null | grep -Eq 'PartitionConfig|ReqNodeNotAvail|BadConstraints|NeverSatisfied|launch failed'; then
      break
    fi
    sleep 0.25; i=$((i + 1))
  done
  [ -z "$(squeue -h -o %i)" ]; ok $? "jobs still queued (180 s at most): $(squeue 2>&1)"
  echo "$1: chain finished ($(($(date +%s) - t_start)) s)"
  for sj in $jobs; do
    st=${sj%%=*}; id=${sj#*=}
    states=$(scontrol -o show job "$id" 2>&1 | sed -n 's/.* JobState=\([A-Z_]*\) .* ExitCode=\([0-9:]*\) .*/\1 \2/p' | sort -u)
    [ "$states" = "COMPLETED 0:0" ]; ok $? "$1: job $st ($id): $states"
  done
  run=$work/$1
  logs=$(ls "$run"/slurm/logs/*.out 2>/dev/null | wc -l)
  [ "$logs" = 9 ]; ok $? "$1: expected 9 job logs (5 jobs + 2 x 2 array tasks), found $logs"
  for st in synth prep features train score metrics report; do
    [ -s "$run/state/$st.done" ]; ok $? "$1: stage $st not recorded as done"
  done
  [ "$(grep -c '"status": "done"' "$run/manifest.json")" = 7 ]; ok $? "$1: manifest: not every stage done"
  for k in 1 2; do
    d=$(ls -d "$run"/models/mvtec3d/bagel/k$k/default-* 2>/dev/null | head -1)
    [ -s "$d/mapper.safetensors" ] && [ -s "$d/mapper.json" ] && [ ! -e "$d/ckpt.safetensors" ]; ok $? "$1: model k$k"
    # One setting (named as cmds-score derives it from the score.* keys).
    [ "$(ls "$run/maps/mvtec3d/bagel/k$k/${d##*/}"/maps.*.h5 2>/dev/null | wc -l)" = 1 ]; ok $? "$1: maps k$k"
    [ "$(ls "$run/results/mvtec3d/bagel/k$k/${d##*/}"/*.json 2>/dev/null | grep -vc '\.record\.json$')" = 1 ]
    ok $? "$1: result k$k"
    grep -q "\"slurm_job_id\": \"[0-9]" "$d/train.record.json"; ok $? "$1: k$k not trained in a Slurm job"
  done
  [ -s "$run/report/main/results.md" ]; ok $? "$1: report"
  grep -q "I-AUROC" "$run"/slurm/logs/cmds-slurmtest-report-*.out; ok $? "$1: the report job printed no table"
}

# 1. srun (the default launcher): the chain does synth, prep and features too.
chain slurm srun
run=$work/slurm
grep -q "prep: srun --ntasks=2 --mpi=pmix " "$run"/slurm/logs/cmds-slurmtest-prep-*.out
ok $? "prep not started by srun --mpi=pmix: $(grep '\[cmds-run\]' "$run"/slurm/logs/cmds-slurmtest-prep-*.out)"
grep -q '"ranks": 2' "$work/cache/mvtec3d/bagel.prep.json" && grep -q '"slurm_job_id": "[0-9]' "$work/cache/mvtec3d/bagel.prep.json"
ok $? "prep record: not 2 ranks under a Slurm job"
grep -q '"ranks": 2' "$work/cache/mvtec3d/bagel.features.json"; ok $? "features did not run on 2 ranks"
# 2. mpiexec inside the jobs (slurm.launcher: mpiexec), same caches: prep and features start
# on 2 ranks and find their caches complete, train, score, metrics run again.
chain slurm_mpiexec mpiexec
grep -q "metrics: mpiexec -n 2 " "$work"/slurm_mpiexec/slurm/logs/cmds-slurmtest-metrics-*.out
ok $? "metrics not started by mpiexec -n 2"
# One 2-rank world splits the 2 results (one each); two singletons would both do both.
[ "$(grep -c '^\[metrics r0/1\] .*maps.*done$' "$work"/slurm_mpiexec/slurm/logs/cmds-slurmtest-metrics-*.out)" = 2 ]
ok $? "metrics under mpiexec: not one 2-rank world: $(cat "$work"/slurm_mpiexec/slurm/logs/cmds-slurmtest-metrics-*.out)"

# ---- the same spec without Slurm: the same results ----------------------------------------
spec local mpiexec >"$work/local.yaml"
(cd "$work" && "$bin/cmds-run" "$work/local.yaml") >"$work/local.log" 2>&1
ok $? "local cmds-run: $(tail -5 "$work/local.log")"
n=0
for a in "$run"/results/mvtec3d/*/k*/*/*.json; do
  case $a in *.record.json) continue ;; esac
  grep -q '"content_hash": "[0-9a-f]' "$a"; ok $? "no maps content hash in $a"
  grep -v '"maps":' "$a" >"$work/a.cmp"
  for other in local slurm_mpiexec; do
    b=$work/$other/${a#"$run"/}
    grep -v '"maps":' "$b" >"$work/b.cmp" 2>/dev/null
    cmp -s "$work/a.cmp" "$work/b.cmp"; ok $? "Slurm (srun) and $other results differ: $a $b: $(diff "$work/a.cmp" "$work/b.cmp" | head -6)"
  done
  n=$((n + 1))
done
[ $n = 2 ]; ok $? "expected 2 results, compared $n"
grep '"i_auroc"\|"aupro_30"' $(ls "$run"/results/mvtec3d/bagel/k*/*/*.json | grep -v '\.record\.json$') | sed "s|$run/||; s/^/  /"
echo "$pass passed, $fail failed ($(($(date +%s) - t_start)) s)"
[ "$fail" -eq 0 ]
