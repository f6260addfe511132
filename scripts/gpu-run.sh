#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, over what scripts/pack-gpu-run.sh packed into
# .devrun/. Steps in order of importance under one time budget (BUDGET seconds, default 540: one
# call of the device tool, whose limit is 600 s), each also under its own limit, so a run cut
# short still returns what matters most:
#   tests    every test binary, the GPU ones first (GPU tests running)
#   devices  compare_devices (each primitive and a ResNet-20 step on CPU and GPU)
#   train    a ResNet-20 gni:16 CIFAR-10 training of $EPOCHS epochs (default 30; TRAIN_ARGS adds
#            flags, e.g. --conv-math bf16 or --cuda-graph)
#   step     ResNet-20 steps interleaved: every conv math x eager/graphed x plain/nhwc
#            activations, one step of each in turn; then ResNet-18's as benchmarks
#   fusion   layer fusion on against off, interleaved and graphed (fp32 and TF32)
#   profile  where a ResNet-20 gni:16 step goes, op by op (fp32 plain, TF32 and bf16 nhwc)
#   pytorch  compare_pytorch.py: fp32, TF32, TF32 and bf16 channels last (PyTorch is installed
#            there)
#   norms    the norm suite on the GPU (JSON)
#   layers   the layer suite on the GPU (JSON)
# STEPS=tests,train,... picks steps (default: all). The device tool returns at most 8 files, so
# every step's text goes to one log ($OUT/log.txt) and the JSON to a few files.
# Session 16 (H200) took: tests ~25 s, devices ~2 s, train 30 epochs 42-64 s, one
# compare_pytorch ~16-30 s, the norm suite over 70 s.
set -uo pipefail
R=.devrun
OUT=${OUT:-$R/out}
STEPS=${STEPS:-tests,devices,train,step,fusion,profile,pytorch,norms,layers}
BUDGET=${BUDGET:-540}
EPOCHS=${EPOCHS:-30}
LOG="$OUT/log.txt"
T0=$(date +%s)
mkdir -p "$OUT" /tmp/ghostnn-deps
[ -f "$R"/bin.tar.gz ] && [ ! -d "$R"/bin ] && tar xzf "$R"/bin.tar.gz -C "$R"
for d in "$R"/debs/*.deb; do dpkg -x "$d" /tmp/ghostnn-deps; done
export LD_LIBRARY_PATH=/tmp/ghostnn-deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export CIFAR10_DIR=$PWD/$R/data  # test_train reads the archive from there
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
B=$R/bin
want() { [[ ",$STEPS," == *",$1,"* ]]; }
say() { echo "== $(date +%T) +$(($(date +%s) - T0))s $*" | tee -a "$LOG"; }
left() { echo $((BUDGET - ($(date +%s) - T0))); }
# cap N: the seconds a command may take: N, or what is left of the budget when that is less.
cap() {
  local l
  l=$(left)
  if [ "$1" -lt "$l" ]; then echo "$1"; else echo $((l > 5 ? l : 5)); fi
}
# Runs "$@" under `cap N` seconds unless under 10 s of the budget are left; records its status.
summary=()
run() {
  local limit=$1 label=$2
  shift 2
  if [ "$(left)" -lt 10 ]; then
    summary+=("$label skipped (budget spent)")
    return
  fi
  say "$label"
  timeout "$(cap "$limit")" "$@" 2>&1 | tee -a "$LOG"
  summary+=("$label rc=${PIPESTATUS[0]}")
}
merge_json() {  # merge_json OUT IN...: Google Benchmark outputs' benchmark lists, as one list
  python3 -c 'import json,sys; print(json.dumps([b for f in sys.argv[2:] for b in json.load(open(f))["benchmarks"]]))' "$@" > "$1"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$LOG"

fails=0
if want tests; then
  ran=" "
  for t in "$B"/test_gpu "$B"/test_cuda_backend "$B"/test_*; do
    name=$(basename "$t")
    case "$ran" in *" $name "*) continue ;; esac  # the GPU ones ran first
    ran+="$name "
    [ "$(left)" -lt 10 ] && { summary+=("$name skipped (budget spent)"); fails=$((fails + 1)); continue; }
    say "$name"
    timeout "$(cap 120)" "$t" --gtest_brief=1 >> "$LOG" 2>&1
    rc=$?
    [ $rc -ne 0 ] && fails=$((fails + 1))
    summary+=("$name rc=$rc")
  done
  grep -E "^\[  (PASSED|FAILED|SKIPPED) " "$LOG" | sort | uniq -c | tee -a "$LOG"
fi
want devices && run 60 compare_devices "$B"/compare_devices --json "$OUT/compare_devices.json"
if want train && [ -f "$R"/data/cifar10-jpeg.tar.gz ]; then
  start=$(date +%s)
  # shellcheck disable=SC2086
  run 150 "train_cifar $EPOCHS epochs gni:16 ${TRAIN_ARGS:-}" "$B"/train_cifar --data "$R"/data \
    --device cuda --epochs "$EPOCHS" --norm gni:16 --threads "$OMP_NUM_THREADS" \
    --checkpoint-dir /tmp/ckpt --log-json "$OUT/train.jsonl" ${TRAIN_ARGS:-}
  summary+=("train_cifar wall=$(($(date +%s) - start))s")
fi
if want step; then
  run 90 "ResNet-20 steps interleaved: conv math x graph x layout" "$B"/bench_train_step \
    --devices=cuda --models=resnet20 --norms=bn,gni:16 --conv-math=fp32,tf32,bf16 \
    --graph=off,on --gpu-layouts=plain,nhwc --interleave=30 --warmup=5
  run 90 "ResNet-18 steps (graphed)" "$B"/bench_train_step --devices=cuda --models=resnet18 \
    --norms=bn,gni:16 --conv-math=fp32,tf32,bf16 --graph --gpu-layouts=plain,nhwc --steps=30 \
    --warmup=5 --benchmark_out=/tmp/step18.json --benchmark_out_format=json
  [ -s /tmp/step18.json ] && merge_json "$OUT/step_resnet18_cuda.json" /tmp/step18.json
fi
if want fusion; then
  run 60 "layer fusion on/off interleaved, graphed" "$B"/bench_train_step --devices=cuda \
    --models=resnet20 --norms=bn,gni:16 --conv-math=fp32,tf32 --graph --gpu-layouts=plain,nhwc \
    --fusion=on,off --interleave=30 --warmup=5
fi
if want profile; then
  run 40 "profile fp32 plain" "$B"/bench_train_step --devices=cuda --models=resnet20 \
    --norms=gni:16 --warmup=5 --profile=20
  run 40 "profile tf32, bf16 nhwc" "$B"/bench_train_step --devices=cuda --models=resnet20 \
    --norms=gni:16 --warmup=5 --profile=20 --conv-math=tf32,bf16 --gpu-layouts=nhwc
fi
if want pytorch; then
  for variant in "fp32" "tf32" "tf32 --channels-last" "bf16 --channels-last"; do
    tag=$(echo "$variant" | tr -d ' -')
    # shellcheck disable=SC2086
    run 90 "compare_pytorch --conv-math $variant" env PYTHONUNBUFFERED=1 python3 \
      "$B"/compare_pytorch.py --device cuda --conv-math $variant \
      --ghostnn-bench "$B"/bench_train_step --json "/tmp/compare_$tag.json"
  done
  compare=(/tmp/compare_*.json)
  [ -s "${compare[0]}" ] &&
    python3 -c 'import json,sys; print(json.dumps([r for f in sys.argv[1:] for r in json.load(open(f))], indent=1))' \
      "${compare[@]}" > "$OUT/compare_pytorch_cuda.json"
fi
for suite in norms layers; do
  want $suite || continue
  run 120 "bench_$suite" "$B"/bench_$suite --benchmark_filter=/cuda --benchmark_min_time=0.03 \
    --benchmark_out="$OUT/${suite}_cuda.json" --benchmark_out_format=json > /dev/null
done
say "done"
printf '%s\n' "${summary[@]}" | tee -a "$LOG"
echo "test binaries failed or skipped: $fails" | tee -a "$LOG"
exit "$fails"
