#!/bin/bash
# Learning curve of MoCo on the mirror-mouse video (issue 21), test-free: for each backbone, a quick frozen
# fit-regressor on the lp-mirror-mouse training frames (dlc_split seed 0; its 20 % test frames are never read)
# and its validation error (25 % of the training frames held out), beside random init and resnet18-faces.
# Backbones come from the segmented video pretraining run (benchmarks/video_pretrain.sh OUT_DIR [WEIGHT]).
# Usage: benchmarks/video_learning_curve.sh [OUT_DIR [BACKBONE ...]]   (one thread, ~5 min a backbone here)
#   e.g. benchmarks/video_learning_curve.sh runs/curve-eq resnet18 runs/video-eq/backbone-{150,300,600}
set -u
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
out=${1:-runs/curve}
mkdir -p "$out"
shift || true
backbones=("$@")
[ ${#backbones[@]} -gt 0 ] || backbones=(resnet18 resnet18-faces runs/video-moco/backbone-{75,150,300,450,600})
for backbone in "${backbones[@]}"; do
  name=$(basename "$backbone")
  start=$(date +%s)
  .venv/bin/contrastive-landmarks fit-regressor --backbone "$backbone" --dataset dlc \
    --root ../shared/data/lp-mirror-mouse/CollectedData.csv --image-size 128 --steps 600 \
    --val-fraction 0.25 --threads 1 --no-progress --output "$out/$name" > "$out/$name.log" 2>&1
  echo "$name rc=$? seconds=$(( $(date +%s) - start )) $(tail -1 "$out/$name.log")"
done
