#!/usr/bin/env bash
# Packs what one run on the GPU machine needs into .devrun/ (git-ignored, < 64 MiB): the CUDA
# build's test, sample and benchmark binaries, the Debian libraries they need that the GPU machine
# lacks (oneDNN, OpenCL loader, fmt, Google Benchmark, TurboJPEG), the CIFAR-10 archive, and
# scripts/gpu-run.sh as .devrun/run.sh. Then run it there (device tool, carry [".devrun"],
# timeout_s 600):
#     bash .devrun/run.sh                    # every step under a 540 s budget, most important
#                                            # first: tests, compare_devices, a 30-epoch training,
#                                            # steps, fusion, profile, PyTorch, norm/layer suites
#     STEPS=tests,train BUDGET=200 bash .devrun/run.sh   # only those steps (names in gpu-run.sh)
#     EPOCHS=5 TRAIN_ARGS="--conv-math bf16" STEPS=train bash .devrun/run.sh
# Results land in $OUT (or .devrun/out when OUT is unset): log.txt and a few JSON files. Starting
# a machine took ~30 s in session 16.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGHOSTNN_CUDA=ON >/dev/null
cmake --build "$BUILD"
rm -rf .devrun && mkdir -p .devrun/bin .devrun/debs .devrun/data
cp "$BUILD"/tests/test_* .devrun/bin/ 2>/dev/null || true
# The emulated-device tests run on every machine already: no device time for them.
rm -f .devrun/bin/*.cmake .devrun/bin/*_emulated
cp "$BUILD"/samples/{train_cifar,compare_devices,classify,api_tour} .devrun/bin/
cp "$BUILD"/perf/bench_{norms,layers,train_step} .devrun/bin/
# Symbols are not needed there, and the device tool carries at most 64 MiB in all. Every binary
# holds its own copy of the CUDA kernels: stripped they took 61.6 MiB of the pack in session 7
# (with the data and libraries), 15 MB once gzipped; run.sh unpacks them there.
strip --strip-unneeded .devrun/bin/*
cp perf/compare_pytorch.py perf/summarize.py .devrun/bin/
tar czf .devrun/bin.tar.gz -C .devrun bin && rm -rf .devrun/bin
(cd .devrun/debs && apt-get download libdnnl2 ocl-icd-libopencl1 libfmt9 libbenchmark1debian \
  libturbojpeg0 >/dev/null)
data=../shared/data/cifar10-jpeg.tar.gz
[ -f "$data" ] && cp "$data" .devrun/data/ || echo "note: $data not found; training is skipped"
cp scripts/gpu-run.sh .devrun/run.sh
bytes=$(du -sb .devrun | cut -f1)
echo ".devrun: $((bytes / 1024 / 1024)) MiB ($bytes bytes; the device tool carries at most 64 MiB)"
if [ "$bytes" -gt $((64 * 1024 * 1024)) ]; then
  echo "error: .devrun is over the 64 MiB the device tool carries; leave something out" >&2
  exit 1
fi
