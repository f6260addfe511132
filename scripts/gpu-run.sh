#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, over what scripts/pack-gpu-run.sh packed into
# .devrun/: every test binary (GPU tests included), compare_devices, the CUDA benchmarks, the
# PyTorch comparison and, with EPOCHS set, a ResNet-20 gni:16 training. A short table is last.
set -uo pipefail
R=.devrun
OUT=${OUT:-$R/out}
mkdir -p "$OUT" /tmp/ghostnn-deps
for d in "$R"/debs/*.deb; do dpkg -x "$d" /tmp/ghostnn-deps; done
export LD_LIBRARY_PATH=/tmp/ghostnn-deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
fails=0
for t in "$R"/bin/test_*; do
  "$t" --gtest_brief=1 > "$OUT/$(basename "$t").txt" 2>&1 || { fails=$((fails + 1)); echo "FAILED: $t"; }
  grep -E "PASSED|FAILED|SKIPPED" "$OUT/$(basename "$t").txt" | sed "s|^|$(basename "$t"): |"
done
"$R"/bin/compare_devices --json "$OUT/compare_devices.json" | tee "$OUT/compare_devices.txt"
"$R"/bin/bench_norms --benchmark_filter=/cuda --benchmark_min_time=0.2 \
  --benchmark_out="$OUT/norms_cuda.json" --benchmark_out_format=json > "$OUT/norms_cuda.txt" 2>&1
"$R"/bin/bench_layers --benchmark_filter=/cuda --benchmark_min_time=0.2 \
  --benchmark_out="$OUT/layers_cuda.json" --benchmark_out_format=json > "$OUT/layers_cuda.txt" 2>&1
"$R"/bin/bench_train_step --devices=cuda --steps=30 --warmup=5 \
  --benchmark_out="$OUT/step_cuda.json" --benchmark_out_format=json | tee "$OUT/step_cuda.txt"
python3 "$R"/bin/compare_pytorch.py --device cuda --ghostnn-bench "$R"/bin/bench_train_step \
  --json "$OUT/compare_pytorch_cuda.json" 2>&1 | tee "$OUT/compare_pytorch_cuda.txt"
if [ -n "${EPOCHS:-}" ] && [ -f "$R"/data/cifar10-jpeg.tar.gz ]; then
  "$R"/bin/train_cifar --data "$R"/data --device cuda --epochs "$EPOCHS" --norm gni:16 \
    --threads "$OMP_NUM_THREADS" --checkpoint-dir "$OUT/ckpt" --log-json "$OUT/train.jsonl" \
    2>&1 | tail -n "$((EPOCHS + 5))" | tee "$OUT/train.txt"
fi
python3 "$R"/bin/summarize.py "$OUT/norms_cuda.json" > "$OUT/norms_cuda.md" || true
echo "test binaries failed: $fails"
exit "$fails"
