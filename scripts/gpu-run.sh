#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, over what scripts/pack-gpu-run.sh packed into
# .devrun/. Steps in order of importance, each under its own time limit, so a run cut short still
# returns what matters most: every test binary (GPU tests included), compare_devices, a ResNet-20
# gni:16 training of $EPOCHS epochs (when EPOCHS is set), the CUDA training-step benchmark, the
# PyTorch comparison, the norm and layer suites. The device tool returns at most 8 files, so the
# text of every step goes to one log ($OUT/log.txt) and each step's JSON to its own file.
# STEPS=tests,devices,train,step,pytorch,norms,layers picks steps (default: all).
set -uo pipefail
R=.devrun
OUT=${OUT:-$R/out}
STEPS=${STEPS:-tests,devices,train,step,pytorch,norms,layers}
LOG="$OUT/log.txt"
mkdir -p "$OUT" /tmp/ghostnn-deps
for d in "$R"/debs/*.deb; do dpkg -x "$d" /tmp/ghostnn-deps; done
export LD_LIBRARY_PATH=/tmp/ghostnn-deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export CIFAR10_DIR=$PWD/$R/data  # test_train reads the archive from there
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
want() { [[ ",$STEPS," == *",$1,"* ]]; }
say() { echo "== $(date +%T) $*" | tee -a "$LOG"; }
summary=()
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$LOG"

fails=0
if want tests; then
  for t in "$R"/bin/test_*; do
    name=$(basename "$t")
    say "$name"
    timeout 300 "$t" --gtest_brief=1 >> "$LOG" 2>&1
    rc=$?
    [ $rc -ne 0 ] && fails=$((fails + 1))
    summary+=("$name rc=$rc")
  done
  grep -E "^\[  (PASSED|FAILED|SKIPPED) " "$LOG" | sort | uniq -c | tee -a "$LOG"
fi
if want devices; then
  say compare_devices
  timeout 240 "$R"/bin/compare_devices --json "$OUT/compare_devices.json" 2>&1 | tee -a "$LOG"
  summary+=("compare_devices rc=$?")
fi
if want train && [ -n "${EPOCHS:-}" ] && [ -f "$R"/data/cifar10-jpeg.tar.gz ]; then
  say "train_cifar $EPOCHS epochs gni:16"
  start=$(date +%s)
  timeout 420 "$R"/bin/train_cifar --data "$R"/data --device cuda --epochs "$EPOCHS" \
    --norm gni:16 --threads "$OMP_NUM_THREADS" --checkpoint-dir /tmp/ckpt \
    --log-json "$OUT/train.jsonl" 2>&1 | tr '\r' '\n' | grep -v '^ *\[' | tee -a "$LOG" | tail -n 8
  summary+=("train_cifar rc=$? wall=$(( $(date +%s) - start ))s")
fi
if want step; then
  say bench_train_step
  timeout 180 "$R"/bin/bench_train_step --devices=cuda --steps=30 --warmup=5 \
    --benchmark_out="$OUT/step_cuda.json" --benchmark_out_format=json 2>&1 | tee -a "$LOG"
  summary+=("bench_train_step rc=$?")
fi
if want pytorch; then
  say compare_pytorch
  PYTHONUNBUFFERED=1 timeout 240 python3 "$R"/bin/compare_pytorch.py --device cuda \
    --ghostnn-bench "$R"/bin/bench_train_step --json "$OUT/compare_pytorch_cuda.json" 2>&1 |
    tee -a "$LOG"
  summary+=("compare_pytorch rc=$?")
fi
for suite in norms layers; do
  want $suite || continue
  say "bench_$suite"
  timeout 75 "$R"/bin/bench_$suite --benchmark_filter=/cuda --benchmark_min_time=0.03 \
    --benchmark_out="$OUT/${suite}_cuda.json" --benchmark_out_format=json >> "$LOG" 2>&1
  summary+=("bench_$suite rc=$?")
done
say done
printf '%s\n' "${summary[@]}" | tee -a "$LOG"
echo "test binaries failed: $fails" | tee -a "$LOG"
exit "$fails"
