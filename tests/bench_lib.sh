# shellcheck shell=bash
# Sourced by the benchmark drivers (diffusion/bench_sd.sh, bench_marigold.sh, bench_vae.sh,
# kernels/nn/bench_nn_backward2.sh, bench_vit.sh): the GPU check, and running a side with its output
# shown as it comes (so a run stopped by a time cap still shows how far it got) and kept.

# skip_without_gpu DEV: exit 77 (ctest: skipped) at once when DEV is cuda and this machine shows
# no NVIDIA GPU, before any checkpoint is made. Where nothing can tell, the program decides.
skip_without_gpu() {
  [ "$1" = cuda ] || return 0
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L 2>/dev/null | grep -q '^GPU' && return 0
  elif compgen -G '/dev/nvidia[0-9]*' >/dev/null; then
    return 0
  fi
  echo "no GPU: skipped"
  exit 77
}

# Python sides: output as it comes, never the network (local random checkpoints only), no progress bars.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_DISABLE_TELEMETRY=1
_line_buffered=()
command -v stdbuf >/dev/null 2>&1 && _line_buffered=(stdbuf -oL -eL)

# streamed VAR CMD...: runs CMD (line-buffered) with its stdout and stderr printed as they come
# and kept in VAR; returns CMD's exit status.
streamed() {
  local _var=$1 _tmp _rc
  shift
  _tmp=$(mktemp)
  "${_line_buffered[@]}" "$@" 2>&1 | tee "$_tmp"
  _rc=${PIPESTATUS[0]}
  printf -v "$_var" '%s' "$(cat "$_tmp")"
  rm -f "$_tmp"
  return "$_rc"
}

# reference VAR CMD...: the PyTorch side, streamed; a failure is reported and kept out of the ratio.
reference() {
  local _var=$1
  shift
  streamed "$_var" "$@" && return 0
  local _rc=$?
  echo "reference: failed (exit $_rc)"
  printf -v "$_var" '%s' ""
  return 0
}
