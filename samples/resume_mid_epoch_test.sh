#!/usr/bin/env bash
# A run stopped mid-epoch (--stop-after-steps, the same path Ctrl-C takes) and resumed must end
# where an uninterrupted run ends: train_cifar on the first 1024 CIFAR-10 training images (4
# steps of 256 per epoch), 3 steps straight, against 1 step, stop, resume, 2 more steps. The two
# checkpoints (weights, running statistics, momentum, metadata) must be the same bytes.
# Usage: resume_mid_epoch_test.sh TRAIN_CIFAR DATA_ARCHIVE WORK_DIR. Exit 77: no data (skipped).
set -euo pipefail
train=$1 data=$2 work=$3
if [ ! -e "$data" ]; then
  echo "skipped: the CIFAR-10 archive is not at $data"
  exit 77
fi
rm -rf "$work" && mkdir -p "$work"
common=(--device cpu --threads 2 --data "$data" --train-subset 1024 --epochs 1 --seed 3
        --norm gni:16)
"$train" "${common[@]}" --checkpoint-dir "$work/straight" --stop-after-steps 3
"$train" "${common[@]}" --checkpoint-dir "$work/split" --stop-after-steps 1
"$train" "${common[@]}" --checkpoint-dir "$work/split" --stop-after-steps 2 \
  --resume "$work/split/last.safetensors" | tee "$work/resumed.txt"
grep -q "resumed from .* at epoch 1 batch 1 (step 1)" "$work/resumed.txt"
cmp "$work/straight/last.safetensors" "$work/split/last.safetensors"
echo "same checkpoint after 3 steps straight and after 1 + 2 steps resumed mid-epoch"
rm -rf "$work"
