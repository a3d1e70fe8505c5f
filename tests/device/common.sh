# shellcheck shell=bash
# Sourced by the scripts of tests/device/ (one `run` call each on a lent GPU machine; see
# verify.sh). What they share: the output folder, the time budget of the call, the summary, the
# GPU check, the carried Python wheels and the kernels-only CUDA build.
#
# Environment (all optional):
#   OUT                    where logs go (the device tool sets it; default ./device-out)
#   CMDS_DEVICE_BUDGET     seconds this script may take in all (default 570: a run call is
#                          killed at 600 s, and the summary must be written before that)
#   CMDS_DEVICE_BUILD      build folder (default build-device; ignored by git, so the device
#                          keeps it between calls while the machine stays warm)
#   CMDS_DEVICE_JOBS       build and ctest parallelism (default: all cores)
#   CMDS_WHEELS            folder of carried wheels (default .whl), installed into CMDS_SITE
#                          (default /tmp/site) which goes first on PYTHONPATH
#   CMDS_DEVICE_DRY_RUN=1  go on without a GPU, to try the scripts on a machine without one: the
#                          CUDA tests skip, the benchmarks run on the CPU at tiny sizes. Without
#                          it, no GPU = exit 3 at once.
set -uo pipefail

dk_start=$(date +%s)
dk_budget=${CMDS_DEVICE_BUDGET:-570}
dk_out=${OUT:-device-out}
dk_build=${CMDS_DEVICE_BUILD:-build-device}
dk_jobs=${CMDS_DEVICE_JOBS:-$(nproc)}
dk_wheels=${CMDS_WHEELS:-.whl}
dk_site=${CMDS_SITE:-/tmp/site}
dk_dry=0
dk_name=${dk_name:-device}
mkdir -p "$dk_out"
dk_summary=$dk_out/$dk_name-summary.txt
: >"$dk_summary"

[ -f CMakeLists.txt ] && [ -d tests/device ] ||
  { echo "run this from the repository root (cd to the tree that holds tests/device)"; exit 2; }

# note LINE...: one line into the summary (and on the console).
note() { echo "$*" | tee -a "$dk_summary"; }

dk_elapsed() { echo $(($(date +%s) - dk_start)); }
# dk_left: seconds left of the budget.
dk_left() { echo $((dk_budget - $(dk_elapsed))); }

# step NAME CAP LOG CMD...: runs CMD with its output appended to LOG, for at most CAP seconds and
# never past the budget (less 20 s kept for the summary); notes its status and time. Returns
# CMD's status (124: stopped at the cap).
step() {
  local name=$1 cap=$2 log=$3 left rc t0
  shift 3
  left=$(($(dk_left) - 20))
  [ "$cap" -gt "$left" ] && cap=$left
  if [ "$cap" -le 5 ]; then
    note "[skip] $name: no time left in this call ($(dk_elapsed) s used of $dk_budget)"
    return 125
  fi
  t0=$(date +%s)
  echo "== $name (cap $cap s): $*" >>"$log"
  timeout -k 10 "$cap" "$@" >>"$log" 2>&1
  rc=$?
  local took=$(($(date +%s) - t0))
  case $rc in
    0) note "[ ok ] $name: ${took} s" ;;
    77) note "[skip] $name: skipped (exit 77), ${took} s" ;;
    124 | 137) note "[STOP] $name: stopped at its cap of $cap s" ;;
    *) note "[FAIL] $name: exit $rc after ${took} s (log: $(basename "$log"))" ;;
  esac
  return $rc
}

# ran RC: true when a step's status RC counts as done: 0, or a skip (77) in a dry run.
ran() { [ "$1" -eq 0 ] || { [ "$1" -eq 77 ] && [ "$dk_dry" = 1 ]; }; }

# require_gpu: exit 3 at once when no NVIDIA GPU is visible (unless CMDS_DEVICE_DRY_RUN=1).
require_gpu() {
  if nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,power.limit \
      --format=csv,noheader 2>&1 | sed 's/^/gpu: /' | tee -a "$dk_summary"
    return 0
  fi
  if [ "${CMDS_DEVICE_DRY_RUN:-0}" = 1 ]; then
    note "gpu: none (CMDS_DEVICE_DRY_RUN=1: a dry run; CUDA tests skip, benchmarks run tiny on the CPU)"
    dk_dry=1
    return 0
  fi
  echo "no NVIDIA GPU here (nvidia-smi lists none): tests/device/ scripts are for the lent GPU machine."
  echo "To try them without one: CMDS_DEVICE_DRY_RUN=1 $0"
  exit 3
}

# environment: what the summary should say about the machine and the software.
environment() {
  note "host: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -m), code $(git describe --always --dirty 2>/dev/null || echo unknown)"
  note "tools: $(cmake --version | head -1), nvcc $(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p' || echo none)"
}

# use_wheels: installs the carried wheels (CMDS_WHEELS, default .whl) into /tmp/site and puts it
# on PYTHONPATH; then reports the Python packages the benchmarks need.
use_wheels() {
  if compgen -G "$dk_wheels/*.whl" >/dev/null; then
    if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$dk_site" "$dk_wheels"/*.whl >"$dk_out/$dk_name-pip.log" 2>&1; then
      export PYTHONPATH=$dk_site${PYTHONPATH:+:$PYTHONPATH}
      local w names=""
      for w in "$dk_wheels"/*.whl; do names+=" ${w##*/}"; done
      note "wheels: installed$names"
      rm -f "$dk_out/$dk_name-pip.log"
    else
      note "wheels: pip install failed (see $dk_name-pip.log)"
    fi
  else
    note "wheels: none in $dk_wheels (diffusers must be carried: tests/device/get_wheels.sh)"
  fi
  local report
  report=$(python3 - <<'PY' 2>&1
import importlib
parts, have = [], []
for name in ("torch", "diffusers", "transformers", "peft", "accelerate", "timm", "huggingface_hub", "numpy"):
    try:
        parts.append(f"{name} {importlib.import_module(name).__version__}")
        have.append(name)
    except Exception as e:  # noqa: BLE001 - any failure to import is what we report
        first = str(e).splitlines()[0][:80] if str(e) else ""
        parts.append(f"{name} MISSING ({type(e).__name__}: {first})")
print("python:", ", ".join(parts))
try:
    import torch
    print("python: torch sees", torch.cuda.device_count(), "GPU(s)",
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception:  # noqa: BLE001
    pass
print("importable:", " ".join(have))
PY
  )
  grep -v '^importable:' <<<"$report" | tee -a "$dk_summary"
  dk_python=" $(sed -n 's/^importable: //p' <<<"$report") "
}

# python_has MODULE...: true when python3 imported every MODULE in use_wheels (which must run first).
python_has() {
  local m
  for m in "$@"; do [[ "${dk_python:-}" == *" $m "* ]] || return 1; done
}

# build_kernels LOG [TARGET...]: configure (kernels only, CUDA sm_90, warnings as errors) unless the
# build folder is already configured so, then build TARGETs (default all). Reuses what is built.
# Without NCCL found, configures again with -DCMDS_NCCL=OFF (the kernels do not use it).
# Returns 1 when the build is not there (failed, or no time left: the summary says which).
build_kernels() {
  local log=$1
  shift
  local flags=(-DCMAKE_BUILD_TYPE=Release -DCMDS_WERROR=ON -DCMDS_KERNELS_ONLY=ON -DCMDS_CUDA=ON
    -DCMAKE_CUDA_ARCHITECTURES=90)
  if [ -f "$dk_build/CMakeCache.txt" ] && grep -q '^CMDS_KERNELS_ONLY:BOOL=ON' "$dk_build/CMakeCache.txt"; then
    note "build: reusing $dk_build"
  fi
  step configure 180 "$log" cmake -S . -B "$dk_build" "${flags[@]}"
  local rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 125 ] && grep -q -i nccl "$log"; then
    step "configure without NCCL" 180 "$log" cmake -S . -B "$dk_build" "${flags[@]}" -DCMDS_NCCL=OFF
    rc=$?
  fi
  if [ $rc -ne 0 ]; then
    [ $rc -ne 125 ] && tail -30 "$log"
    return 1
  fi
  local targets=()
  [ $# -gt 0 ] && targets=(--target "$@")
  step "build (-j$dk_jobs${1:+: $*})" 420 "$log" cmake --build "$dk_build" -j"$dk_jobs" "${targets[@]}"
  rc=$?
  if [ $rc -ne 0 ]; then
    [ $rc -ne 125 ] && grep -E -B2 -A8 "error|Error" "$log" | head -60
    return 1
  fi
}
