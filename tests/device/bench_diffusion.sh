#!/usr/bin/env bash
# One `run` call on a lent GPU machine: the diffusion benchmarks on the GPU, ours beside
# diffusers (+ peft) in the same run, each under its own time cap so that one slow benchmark
# cannot eat the call:
#   sd         bench_sd.sh: full-size SD 2.1 (random weights), LoRA training step at 512 (10 steps)
#              and img2img at 512 (50 DDIM steps x strength 0.3, guidance 7.5)
#   marigold   bench_marigold.sh: full-size Marigold normals, an 800x800 image at processing 768,
#              4 steps, median of 5
#   vae        bench_vae.sh: the SD VAE encode + decode at 768, best of 3 (and the latent and image
#              statistics of both sides, same weights and input: they should agree)
#   backward2  bench_nn_backward2.sh: the LoRA fine-tune's training ops at SD 2.1 sizes, 20 reps
# The arguments are those of the ctest registrations (diffusion.bench_*_cuda,
# kernels.nn.bench_backward2_cuda); override one with e.g. SD_ARGS="512 4 50 0.3".
#   tests/device/bench_diffusion.sh [sd] [marigold] [vae] [backward2]     (default: all four)
# From the repository root. Needs diffusers, carried as wheels in .whl (tests/device/get_wheels.sh
# makes them; the device image lacks it); without it only backward2 runs. Reuses build-device when
# the machine kept it (a warm machine does), else builds just the benchmark programs. The random
# checkpoints are made once into build-device/full_sd and full_marigold (the folders the ctest
# registrations use), both at once, before the benchmarks.
# All four do not fit one 10-minute call: run `sd` in one call and `marigold vae backward2` in the
# next (docs: "On a lent GPU"). Caps (seconds): CAP_SD=420 CAP_MARIGOLD=180 CAP_VAE=90
# CAP_BACKWARD2=120 CAP_CKPT=240, each cut to what is left of the call's budget.
# Files in $OUT: bench-summary.txt (the figures to record), bench-build.log, bench-ckpt.log,
# bench-<name>.log per benchmark (at most 7 files). Exit 0 when every benchmark asked for ran
# to its end, 1 otherwise, 3 without a GPU (CMDS_DEVICE_DRY_RUN=1: all run tiny on the CPU, a
# dry run of the script). See common.sh.
dk_name=bench
# shellcheck source=tests/device/common.sh
. "$(dirname "$0")/common.sh"

want=("$@")
[ ${#want[@]} -eq 0 ] && want=(sd marigold vae backward2)
for b in "${want[@]}"; do
  case $b in sd | marigold | vae | backward2) ;; *) echo "unknown benchmark '$b' (sd, marigold, vae, backward2)"; exit 2 ;; esac
done
wants() { local b; for b in "${want[@]}"; do [ "$b" = "$1" ] && return 0; done; return 1; }

require_gpu
environment
use_wheels
export OMP_NUM_THREADS=$dk_jobs OPENBLAS_NUM_THREADS=$dk_jobs OMP_WAIT_POLICY=passive PYTHONUNBUFFERED=1
status=0

if ! python_has torch; then
  note "bench: python3 cannot import torch: no reference and no checkpoints; stopping"
  exit 1
fi
if ! python_has diffusers transformers; then
  run=()
  for b in "${want[@]}"; do
    if [ "$b" = backward2 ]; then run+=(backward2); else note "[skip] $b: needs diffusers (carry .whl: tests/device/get_wheels.sh)"; fi
  done
  [ ${#want[@]} -eq ${#run[@]} ] || status=1
  want=("${run[@]}")
  [ ${#want[@]} -eq 0 ] && exit 1
fi
wants sd && ! python_has peft && note "note: peft missing: the diffusers side of sd will report 'skipped'"

targets=()
wants sd && targets+=(bench_sd)
wants marigold && targets+=(bench_marigold)
wants vae && targets+=(bench_vae)
wants backward2 && targets+=(bench_nn_backward2)
build_kernels "$dk_out/bench-build.log" "${targets[@]}" || { note "bench: no build (above; the errors, if any, in bench-build.log)"; exit 1; }
bin=$dk_build/bin

# The checkpoints, both at once (CPU and disk work; ~2.6 GB of fp16 each). bench_*.sh would make
# them too, inside their caps; made here they are counted apart.
# A dry run (no GPU) runs everything on the CPU with tiny checkpoints (make_full_*.py --tiny) and
# tiny sizes instead: every step of this script, both sides of every benchmark, the parsing.
dev=cuda tiny='' sfx=''
if [ "$dk_dry" = 1 ]; then
  dev=cpu tiny=--tiny sfx=_tiny
  : "${SD_ARGS:=64 2 4 0.5}" "${MARIGOLD_ARGS:=64 2 1}" "${VAE_ARGS:=64 1}" "${BACKWARD2_ARGS:=1}"
fi
ckpts=()
wants sd && ckpts+=("tests/diffusion/make_full_sd.py $dk_build/full_sd$sfx $tiny")
{ wants marigold || wants vae; } && ckpts+=("tests/diffusion/make_full_marigold.py $dk_build/full_marigold$sfx $tiny")
if [ ${#ckpts[@]} -gt 0 ]; then
  step "random checkpoints" "${CAP_CKPT:-240}" "$dk_out/bench-ckpt.log" bash -c '
    pids=(); for c in "$@"; do python3 $c & pids+=($!); done
    rc=0; for p in "${pids[@]}"; do wait $p || rc=1; done; exit $rc' _ "${ckpts[@]}" || status=1
fi

# bench NAME CAP DRIVER ARGS...: one benchmark, its output in bench-NAME.log.
bench() {
  local name=$1 cap=$2
  shift 2
  step "$name" "$cap" "$dk_out/bench-$name.log" "$@"
  ran $? || status=1
}
# shellcheck disable=SC2086 # the *_ARGS are word lists
for b in "${want[@]}"; do
  case $b in
    sd) bench sd "${CAP_SD:-420}" tests/diffusion/bench_sd.sh "$bin/bench_sd" "$dk_build/full_sd$sfx" $dev \
      ${SD_ARGS:-512 10 50 0.3} ;;
    marigold) bench marigold "${CAP_MARIGOLD:-180}" tests/diffusion/bench_marigold.sh "$bin/bench_marigold" \
      "$dk_build/full_marigold$sfx" $dev ${MARIGOLD_ARGS:-800 4 5} ;;
    vae) bench vae "${CAP_VAE:-90}" tests/diffusion/bench_vae.sh "$bin/bench_vae" "$dk_build/full_marigold$sfx" \
      $dev ${VAE_ARGS:-768 3} ;;
    backward2) bench backward2 "${CAP_BACKWARD2:-120}" tests/kernels/nn/bench_nn_backward2.sh \
      "$bin/bench_nn_backward2" $dev ${BACKWARD2_ARGS:-20} ;;
  esac
done

note "== figures (full logs: bench-<name>.log)"
for b in "${want[@]}"; do
  f=$dk_out/bench-$b.log
  [ -f "$f" ] || continue
  note "-- $b"
  if [ "$b" = backward2 ]; then
    grep -E "^device:|reference: (failed|skipped)|Traceback|Error" "$f" | head -10 | tee -a "$dk_summary"
    sed -n '/^speed ratio/,$p' "$f" | head -40 | tee -a "$dk_summary"
    continue
  fi
  grep -E "^device:|s per (training step|image)|speed ratio|peak|^load|workspace|reference: (failed|skipped)|no GPU|^agreement|^diffusers:|^ours: encode|bench_[a-z0-9]*: |Traceback|Error" "$f" |
    grep -v "^  *torch step\|^  step" | head -30 | tee -a "$dk_summary"
done
note "bench: $([ $status = 0 ] && echo "every benchmark ran to its end" || echo "NOT every benchmark ran to its end (above)"), $(dk_elapsed) s"
exit $status
