# The two commands of the README's quick start:
#   make demo   install what is missing, build, run the pipeline on the synthetic dataset
#   make test   install what is missing, build, run the tests (ctest, without benchmarks), then
#               the CUDA tests on the CPU emulation (tests/cuda_emu, the whole tree built against
#               it in EMU_BUILD; EMU=off leaves it out)
# Other targets: build, emu (the emulation's tree), bench, soak, asan (sanitizer build + tests), clean.
# Benchmarks live in the CTest configuration `bench` (cmake/CmdsTesting.cmake): a plain
# `ctest` never lists or starts them; `make bench` = `ctest -C bench -L bench`. The same for
# the kill-and-resume soak: `make soak` = `ctest -C soak -L soak`.
BUILD    ?= build
EMU_BUILD ?= build-emu
EMU      ?= on
TYPE     ?= Release
JOBS     ?= $(shell nproc)
DEMO_OUT ?= demo-out
NP       ?= 2
CMAKE_FLAGS ?=
ifdef CI
CMAKE_FLAGS += -DCMDS_WERROR=ON
endif
BIN      := $(BUILD)/bin

.PHONY: deps configure build emu demo test bench soak asan clean

deps:
	@./.ci/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(TYPE) $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

# The demo job (jobs/demo.yaml): synthetic MVTec 3D-AD and EyeCandies-layout data, a small
# random ViT standing in for DINO, then prep, features, train, score, metrics and the table,
# every MPI stage on NP ranks, everything under DEMO_OUT. Re-running skips what is done.
demo: build
	@DEMO_OUT=$(DEMO_OUT) NP=$(NP) OMP_NUM_THREADS=1 $(BIN)/cmds-run jobs/demo.yaml -n $(NP)

# The CUDA emulation (tests/cuda_emu): the .cu kernels compiled as C++ against a CPU emulation
# of the CUDA runtime, cuBLAS and cuBLASLt, so every CUDA test (ctest label cuda) runs without a
# GPU, with launch, barrier, shuffle and memory checks a GPU would not report as clearly. The
# whole tree is built against it, so the stages' --device cuda paths run too (cuda.pipeline).
emu: deps
	@cmake -S . -B $(EMU_BUILD) -DCMAKE_BUILD_TYPE=$(TYPE) -DCMDS_CUDA_EMU=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(EMU_BUILD) -j $(JOBS)

test: build $(if $(filter on,$(EMU)),emu)
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
ifeq ($(EMU),on)
	@cd $(EMU_BUILD) && ctest --output-on-failure -j $(JOBS) -L cuda
endif

bench: build
	@cd $(BUILD) && ctest --output-on-failure -C bench -L bench -V

# The kill-and-resume soak (tests/jobs/test_soak.sh, a few minutes): a small job killed at
# random points until it finishes, checked against an uninterrupted run. Replay a failure with
# the seed it printed: make soak CMDS_SOAK_SEED=S; more kills: CMDS_SOAK_ROUNDS=N.
soak: build
	@cd $(BUILD) && CMDS_SOAK_SEED=$(CMDS_SOAK_SEED) CMDS_SOAK_ROUNDS=$(CMDS_SOAK_ROUNDS) \
	  ctest --output-on-failure -C soak -L soak -V

# Without the emulation: its fibers switch stacks under the sanitizer's feet.
asan:
	@$(MAKE) test BUILD=build-asan TYPE=Asan EMU=off

clean:
	rm -rf $(BUILD) build-asan $(EMU_BUILD) $(DEMO_OUT)
