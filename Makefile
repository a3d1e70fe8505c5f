# The two commands of the README's quick start:
#   make demo   install what is missing, build, run the pipeline on the synthetic dataset
#   make test   install what is missing, build, run the tests (ctest, without benchmarks)
# Other targets: build, bench, asan (sanitizer build + tests), clean.
BUILD    ?= build
TYPE     ?= Release
JOBS     ?= $(shell nproc)
DEMO_OUT ?= demo-out
NP       ?= 2
CMAKE_FLAGS ?=
ifdef CI
CMAKE_FLAGS += -DCMDS_WERROR=ON
endif
MPIEXEC  := mpiexec --oversubscribe $(if $(filter 0,$(shell id -u)),--allow-run-as-root,)
BIN      := $(BUILD)/bin

.PHONY: deps configure build demo test bench asan clean

deps:
	@./.ci/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(TYPE) $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

# The demo job: synthetic MVTec 3D-AD-layout data, then every stage that exists.
demo: build
	@$(BIN)/cmds-synth --format mvtec3d --out $(DEMO_OUT)/data/mvtec3d --seed 7 --size 400 \
	    --categories bagel,cookie,foam
	@$(BIN)/cmds-synth --format eyecandies --out $(DEMO_OUT)/data/eyecandies --seed 7 --size 256 \
	    --categories CandyCane
	@OMP_NUM_THREADS=1 $(MPIEXEC) -n $(NP) $(BIN)/cmds-prep --dataset mvtec3d \
	    --root $(DEMO_OUT)/data/mvtec3d --out $(DEMO_OUT)/cache --shots 4
	@OMP_NUM_THREADS=1 $(MPIEXEC) -n $(NP) $(BIN)/cmds-prep --dataset eyecandies \
	    --root $(DEMO_OUT)/data/eyecandies --out $(DEMO_OUT)/cache --shots 4
	@# No DINO weights here: a small random ViT stands in (--weights FILE.safetensors for the real one).
	@OMP_NUM_THREADS=1 $(MPIEXEC) -n $(NP) $(BIN)/cmds-features --cache $(DEMO_OUT)/cache --dataset mvtec3d \
	    --random-backbone 0
	@OMP_NUM_THREADS=1 $(MPIEXEC) -n $(NP) $(BIN)/cmds-features --cache $(DEMO_OUT)/cache --dataset eyecandies \
	    --random-backbone 0

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -LE bench

bench: build
	@cd $(BUILD) && ctest --output-on-failure -L bench -V

asan:
	@$(MAKE) test BUILD=build-asan TYPE=Asan

clean:
	rm -rf $(BUILD) build-asan $(DEMO_OUT)
