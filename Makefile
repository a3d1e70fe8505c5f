# The two commands of the README's quick start:
#   make demo   install what is missing, build, run the pipeline on the synthetic dataset
#   make test   install what is missing, build, run the tests (ctest, without benchmarks)
# Other targets: build, bench, soak, asan (sanitizer build + tests), clean.
# Benchmarks live in the CTest configuration `bench` (cmake/CmdsTesting.cmake): a plain
# `ctest` never lists or starts them; `make bench` = `ctest -C bench -L bench`. The same for
# the kill-and-resume soak: `make soak` = `ctest -C soak -L soak`.
BUILD    ?= build
TYPE     ?= Release
JOBS     ?= $(shell nproc)
DEMO_OUT ?= demo-out
NP       ?= 2
CMAKE_FLAGS ?=
ifdef CI
CMAKE_FLAGS += -DCMDS_WERROR=ON
endif
BIN      := $(BUILD)/bin

.PHONY: deps configure build demo test bench soak asan clean

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

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

bench: build
	@cd $(BUILD) && ctest --output-on-failure -C bench -L bench -V

# The kill-and-resume soak (tests/jobs/test_soak.sh, a few minutes): a small job killed at
# random points until it finishes, checked against an uninterrupted run. Replay a failure with
# the seed it printed: make soak CMDS_SOAK_SEED=S; more kills: CMDS_SOAK_ROUNDS=N.
soak: build
	@cd $(BUILD) && CMDS_SOAK_SEED=$(CMDS_SOAK_SEED) CMDS_SOAK_ROUNDS=$(CMDS_SOAK_ROUNDS) \
	  ctest --output-on-failure -C soak -L soak -V

asan:
	@$(MAKE) test BUILD=build-asan TYPE=Asan

clean:
	rm -rf $(BUILD) build-asan $(DEMO_OUT)
