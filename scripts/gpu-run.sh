#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, over what scripts/pack-gpu-run.sh packed into
# .devrun/. Steps in order of importance, each under its own time limit, so a run cut short still
# returns what matters most: every test binary (GPU tests included), compare_devices, the step
# eager against replayed from a CUDA graph, the step with plain against channels-last (nhwc)
# activations per convolution math (and PyTorch likewise), the step with and without its layer
# fusions (interleaved), a ResNet-20 gni:16 training of
# $EPOCHS epochs (when
# EPOCHS is set; TRAIN_ARGS adds flags, e.g. --tf32 or --cuda-graph), the
# per-op profile of a ResNet-20 step, the CUDA training-step benchmark, the PyTorch comparison
# (fp32, TF32 and bf16 convolutions), the norm and layer suites. The device tool returns at most 8
# files, so the text of every step goes to one log ($OUT/log.txt) and the JSON to a few files.
# STEPS=tests,devices,graph,layouts,fusion,train,profile,step,pytorch,norms,layers picks steps
# (default: all).
set -uo pipefail
R=.devrun
OUT=${OUT:-$R/out}
STEPS=${STEPS:-tests,devices,graph,layouts,fusion,train,profile,step,pytorch,norms,layers}
LOG="$OUT/log.txt"
mkdir -p "$OUT" /tmp/ghostnn-deps
[ -f "$R"/bin.tar.gz ] && [ ! -d "$R"/bin ] && tar xzf "$R"/bin.tar.gz -C "$R"
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
if want graph; then
  for tf in 0 1; do
    for mode in 0 1; do
      say "bench_train_step --graph=$mode --tf32=$tf"
      timeout 150 "$R"/bin/bench_train_step --devices=cuda --models=resnet20,resnet18 \
        --norms=bn,gni:16 --steps=50 --warmup=5 --tf32=$tf --graph=$mode 2>&1 | tee -a "$LOG"
      summary+=("bench_train_step graph=$mode tf32=$tf rc=$?")
    done
  done
fi
if want layouts; then
  # Plain (NCHW) against channels-last GPU activations, each convolution math, graphed steps.
  for math in fp32 tf32 bf16; do
    say "bench_train_step --gpu-layouts=plain,nhwc --conv-math=$math --graph"
    timeout 150 "$R"/bin/bench_train_step --devices=cuda --models=resnet20,resnet18 \
      --norms=bn,gni:16 --gpu-layouts=plain,nhwc --conv-math=$math --graph --steps=30 \
      --warmup=5 --benchmark_out="/tmp/layouts_$math.json" --benchmark_out_format=json 2>&1 |
      tee -a "$LOG"
    summary+=("bench_train_step layouts conv-math=$math rc=$?")
  done
  python3 -c 'import json,sys; print(json.dumps([b for f in sys.argv[1:] for b in json.load(open(f))["benchmarks"]]))' \
    /tmp/layouts_*.json > "$OUT/layouts_cuda.json"
  say "bench_train_step --profile nhwc bf16"
  timeout 90 "$R"/bin/bench_train_step --devices=cuda --models=resnet20 --norms=gni:16 \
    --gpu-layouts=nhwc --conv-math=bf16 --warmup=5 --profile=20 2>&1 | tee -a "$LOG"
  summary+=("profile nhwc bf16 rc=$?")
  for math in tf32 bf16; do
    say "compare_pytorch --channels-last --conv-math $math"
    PYTHONUNBUFFERED=1 timeout 240 python3 "$R"/bin/compare_pytorch.py --device cuda \
      --channels-last --conv-math $math --ghostnn-bench "$R"/bin/bench_train_step \
      --json "/tmp/compare_nhwc_$math.json" 2>&1 | tee -a "$LOG"
    summary+=("compare_pytorch channels-last $math rc=$?")
  done
  python3 -c 'import json,sys; print(json.dumps([r for f in sys.argv[1:] for r in json.load(open(f))], indent=1))' \
    /tmp/compare_nhwc_*.json > "$OUT/compare_pytorch_nhwc.json"
fi
if want fusion; then
  # Layer fusion on against off (the same numbers, fewer ops), one step of each in turn, graphed,
  # plain and channels-last activations, fp32 and TF32.
  for math in fp32 tf32; do
    say "bench_train_step --fusion=on,off --interleave --conv-math=$math"
    timeout 120 "$R"/bin/bench_train_step --devices=cuda --models=resnet20 --norms=bn,gni:16 \
      --gpu-layouts=plain,nhwc --fusion=on,off --conv-math=$math --graph --interleave=50 \
      --warmup=5 2>&1 | tee -a "$LOG"
    summary+=("bench_train_step fusion conv-math=$math rc=$?")
  done
fi
if want train && [ -n "${EPOCHS:-}" ] && [ -f "$R"/data/cifar10-jpeg.tar.gz ]; then
  say "train_cifar $EPOCHS epochs gni:16"
  start=$(date +%s)
  # shellcheck disable=SC2086
  timeout 420 "$R"/bin/train_cifar --data "$R"/data --device cuda --epochs "$EPOCHS" \
    --norm gni:16 --threads "$OMP_NUM_THREADS" --checkpoint-dir /tmp/ckpt \
    --log-json /tmp/train.jsonl ${TRAIN_ARGS:-} 2>&1 | tr '\r' '\n' | grep -v '^epoch.*\[' |
    tee -a "$LOG" | tail -n 8
  summary+=("train_cifar ${TRAIN_ARGS:-} rc=$? wall=$(( $(date +%s) - start ))s")
  cp /tmp/train.jsonl "$OUT/train.jsonl"
fi
if want profile; then
  for tf in 0 1; do
    say "bench_train_step --profile --tf32=$tf"
    timeout 120 "$R"/bin/bench_train_step --devices=cuda --models=resnet20 --norms=bn,gni:16 \
      --warmup=5 --profile=20 --tf32=$tf 2>&1 | tee -a "$LOG"
    summary+=("profile tf32=$tf rc=$?")
  done
fi
if want step; then
  for math in fp32 tf32 bf16; do
    say "bench_train_step --conv-math=$math"
    timeout 180 "$R"/bin/bench_train_step --devices=cuda --steps=30 --warmup=5 --conv-math=$math \
      --benchmark_out="/tmp/step_cuda_$math.json" --benchmark_out_format=json 2>&1 | tee -a "$LOG"
    summary+=("bench_train_step conv-math=$math rc=$?")
  done
  python3 -c 'import json,sys; print(json.dumps([b for f in sys.argv[1:] for b in json.load(open(f))["benchmarks"]]))' \
    /tmp/step_cuda_*.json > "$OUT/step_cuda.json"
  say "bench_train_step GHOSTNN_CONV_ALGO=heuristic (baseline: cuDNN's heuristics, not timing)"
  GHOSTNN_CONV_ALGO=heuristic timeout 120 "$R"/bin/bench_train_step --devices=cuda \
    --models=resnet20,resnet18 --norms=bn,gni:16 --steps=30 --warmup=5 2>&1 | tee -a "$LOG"
  summary+=("bench_train_step heuristic rc=$?")
fi
if want pytorch; then
  for math in fp32 tf32 bf16; do
    say "compare_pytorch --conv-math $math"
    PYTHONUNBUFFERED=1 timeout 240 python3 "$R"/bin/compare_pytorch.py --device cuda \
      --conv-math $math --ghostnn-bench "$R"/bin/bench_train_step \
      --json "/tmp/compare_$math.json" 2>&1 | tee -a "$LOG"
    summary+=("compare_pytorch $math rc=$?")
  done
  python3 -c 'import json,sys; print(json.dumps([r for f in sys.argv[1:] for r in json.load(open(f))], indent=1))' \
    /tmp/compare_*.json > "$OUT/compare_pytorch_cuda.json"
fi
for suite in norms layers; do
  want $suite || continue
  say "bench_$suite"
  timeout 75 "$R"/bin/bench_$suite --benchmark_filter=/cuda --benchmark_min_time=0.03 \
    --benchmark_out="$OUT/${suite}_cuda.json" --benchmark_out_format=json >> "$LOG" 2>&1
  summary+=("bench_$suite rc=$?")
done
if want norms; then
  # The shapes where the channel-resident kernels replace the plane path, on the plane path
  # (GHOSTNN_CUDA_NORMS=planes), with cuDNN's BN again as this run's baseline: text in the log.
  say "bench_norms GHOSTNN_CUDA_NORMS=planes"
  GHOSTNN_CUDA_NORMS=planes timeout 60 "$R"/bin/bench_norms --benchmark_min_time=0.03 \
    --benchmark_filter='^(BatchNorm|BatchNorm_cudnn|GhostNoise|BatchNormGhostNoise)/.*/(256x64x8x8|256x128x16x16|256x256x8x8|256x512x4x4)/cuda' \
    >> "$LOG" 2>&1
  summary+=("bench_norms planes rc=$?")
fi
say done
printf '%s\n' "${summary[@]}" | tee -a "$LOG"
echo "test binaries failed: $fails" | tee -a "$LOG"
exit "$fails"
