#!/usr/bin/env bash
# One `run` call on a lent GPU machine: configure kernels-only + CUDA (sm_90) with warnings as
# errors, build, then every test a kernels-only build has: `ctest -L unit` (CPU, all cores) and
# `ctest -L cuda` (one at a time: nn ops and ViT parity, nn backward, mapper, and the diffusion
# pieces on the GPU against diffusers' fixtures and the CPU path: UNet, UNet LoRA, VAE, Marigold
# normals, SD img2img, SD LoRA fine-tune). No benchmarks (tests/device/bench_diffusion.sh, bench_vit.sh).
#   tests/device/verify.sh            from the repository root; logs in $OUT, the summary last
# Needs no carried wheels. Measured for planning (see docs): the build is ~250 CPU-seconds of
# compilation (7 min at -j2 on a shared 2-core VM), about 1-2 min at -j16; the tests 1-3 min.
# Files in $OUT (5, the device tool brings back 8 at most):
#   verify-summary.txt  machine, software, each step's status and time, test totals, failures
#   verify-build.log    configure + build output
#   verify-ctest.log    ctest's console output of both runs
#   verify-unit.log     every unit test's full output (ctest's LastTest.log)
#   verify-cuda.log     every CUDA test's full output: the parity errors to record in analysis/
# Exit status: 0 when everything built and every test passed; 1 otherwise; 3 without a GPU
# (CMDS_DEVICE_DRY_RUN=1 goes on: the CUDA tests then skip). Options in tests/device/common.sh.
dk_name=verify
# shellcheck source=tests/device/common.sh
. "$(dirname "$0")/common.sh"

require_gpu
environment
status=0
if ! build_kernels "$dk_out/verify-build.log"; then
  note "verify: no build (above; the errors, if any, in verify-build.log)"
  exit 1
fi

# ctest LABEL JOBS CAP: one labelled run; its LastTest.log kept as verify-<label>.log.
run_ctest() {
  local label=$1 jobs=$2 cap=$3 exclude=()
  [ "$label" = unit ] && exclude=(-LE cuda)
  step "ctest -L $label (-j$jobs)" "$cap" "$dk_out/verify-ctest.log" \
    ctest --test-dir "$dk_build" -L "$label" "${exclude[@]}" -j"$jobs" --output-on-failure --timeout 300
  local rc=$?
  cp "$dk_build/Testing/Temporary/LastTest.log" "$dk_out/verify-$label.log" 2>/dev/null
  return $rc
}
run_ctest unit "$dk_jobs" 300 || status=1
# CUDA tests one at a time: each also runs the CPU path (the nn and mapper ones on 8 threads; the
# diffusion ones on tiny checkpoints, one thread), and a failure is clearer alone.
run_ctest cuda 1 360 || status=1

note "== tests"
grep -E "tests passed|tests failed|\*\*\*|Not Run|Timeout|Failed  " "$dk_out/verify-ctest.log" | tee -a "$dk_summary"
note "== CUDA parity (from verify-cuda.log; all of it there)"
# The lines the CUDA tests print with their errors: nn ops and ViT ("rel L2"), UNet, Marigold,
# img2img, SD LoRA factors ("max |diff|"), VAE ("max relative error"), SD LoRA loss and gradient
# norms ("worst relative"), UNet LoRA gradients ("of the tensor's scale", "past 1e-4"), every
# diffusion test's direct GPU-vs-CPU comparison ("CUDA vs CPU"), and failed checks ("FAIL").
grep -E "rel L2|max \|diff\||max relative error|worst relative|of the tensor's scale|past 1e-4|CUDA vs CPU|^FAIL|skipped" \
  "$dk_out/verify-cuda.log" 2>/dev/null | head -200 | tee -a "$dk_summary"
note "verify: $([ $status = 0 ] && echo "all built, all tests passed" || echo "FAILURES above"), $(dk_elapsed) s"
exit $status
