# ghostnn quickstart: `make train` and `make test` (see README.md). Both install missing Debian
# packages, configure into build/ and build first.
BUILD ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
CMAKE_ARGS ?=
TRAIN_ARGS ?=

.PHONY: all deps configure build test train asan bench compare format help

all: build

help:
	@echo "make train   build, then train the CIFAR-10 sample with its defaults"
	@echo "make test    build, then run the whole test suite (ctest)"
	@echo "make asan    the test suite under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/)"
	@echo "make bench   build, then run the Google Benchmark suites in perf/ (norms, layers, training step)"
	@echo "make compare build, then time a ResNet-20 step in ghostnn and PyTorch (perf/compare_pytorch.py)"
	@echo "make format  clang-format every source file"

deps:
	@scripts/install-deps.sh

$(BUILD)/build.ninja: | deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS)

configure: deps $(BUILD)/build.ninja

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

train: configure
	cmake --build $(BUILD) -j $(JOBS) --target train_cifar
	$(BUILD)/samples/train_cifar $(TRAIN_ARGS)

asan: deps
	cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DGHOSTNN_SANITIZE=ON -DGHOSTNN_CUDA=OFF -DGHOSTNN_BUILD_PERF=OFF
	cmake --build build-asan -j $(JOBS)
	ctest --test-dir build-asan --output-on-failure -j $(JOBS)

bench: build
	$(BUILD)/perf/bench_norms --benchmark_counters_tabular=true
	$(BUILD)/perf/bench_layers --benchmark_counters_tabular=true
	$(BUILD)/perf/bench_train_step --benchmark_counters_tabular=true --models=resnet20

COMPARE_ARGS ?=
compare: configure
	cmake --build $(BUILD) -j $(JOBS) --target bench_train_step
	python3 perf/compare_pytorch.py --ghostnn-bench $(BUILD)/perf/bench_train_step $(COMPARE_ARGS)

format:
	clang-format -i $$(git ls-files '*.cpp' '*.hpp' '*.cu' '*.cuh')
