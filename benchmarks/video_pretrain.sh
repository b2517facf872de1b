#!/bin/bash
# MoCo on the mirror-mouse video (issue 21), in segments that each resume the last exactly, exporting a backbone at
# every segment's end for benchmarks/video_learning_curve.sh. The recipe of the learning curve in
# docs/notes/2026-12-benchmarks.md ("Pretraining on the user's own video"):
# ResNet-18, every frame, 128 px (animals preset: crops of at least 0.7 of the frame; EXTRA="--min-scale 0.2" for the
# earlier runs), batch 64, queue 512, 40 epochs = 600 steps.
# Usage: [EXTRA="--min-scale 0.7"] benchmarks/video_pretrain.sh OUT_DIR [EQUIVARIANCE_WEIGHT] [THREADS]
#   e.g. benchmarks/video_pretrain.sh runs/video-eq 1.0 2
set -eu
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
out=$1; weight=${2:-0}; threads=${3:-1}
for steps in 150 300 600; do
  .venv/bin/contrastive-landmarks pretrain --video ../shared/data/lp-mirror-mouse/videos/test_vid.mp4 \
    --arch resnet18 --batch-size 64 --queue-size 512 --epochs 40 --equivariance "$weight" ${EXTRA:-} \
    --output-dir "$out" --max-steps "$steps" --resume --checkpoint-every 50 --num-workers 0 \
    --threads "$threads" --no-progress
  .venv/bin/python -c "import sys; from contrastive_landmarks.train import export_backbone; \
export_backbone(sys.argv[1] + '/checkpoint.pt', sys.argv[1] + '/backbone-$steps')" "$out"
  echo "step $steps: $(tail -1 "$out/log.jsonl")"
done
