"""Pose relations on a fitted model's held-out frames, with and without, as a JSON record (no refit).

:class:`~contrastive_landmarks.pose_relations.PoseRelations` are fitted on the labels of the frames the model was
fitted on (as :func:`~contrastive_landmarks.train.finetune` does at its end, here for a model written before it or
with them turned off) and the model is scored on frames it never trained on, with and without them, for a few
``max_ratio`` values, beside the mean pose. The frames (never the test frames), as ``decode_window.py`` reads them:
the fit's own validation frames; ``--holdout F`` the training frames a ``finetune_sweep.py --holdout F`` run set
aside; ``--unused`` the training frames a ``--num-labelled`` fit did not draw::

    python benchmarks/pose_relations.py runs/models/capauto lp --seed 0 --out benchmarks/results/decode/rel-capauto.json
    python benchmarks/pose_relations.py runs/models/lp-n10 lp --num-labelled 10 --unused --out ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from decode_window import _commit, _frames

from contrastive_landmarks import LandmarkModel
from contrastive_landmarks.framing import mean_pose, pose_in_frames
from contrastive_landmarks.metrics import mean_pixel_error
from contrastive_landmarks.train.finetuning import _relate

RATIOS = (0.05, 0.1, 0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a fitted one-pass model directory (finetune_sweep.py / finetune_test.py --keep)")
    parser.add_argument("project", choices=("dlc", "lp"))
    parser.add_argument("--seed", type=int, default=0, help="the fit's seed (its frames follow it)")
    parser.add_argument("--num-labelled", type=int, default=None)
    parser.add_argument("--holdout", type=float, default=0.0)
    parser.add_argument("--unused", action="store_true", help="score the training frames a few-label fit left out")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    what, (frames, keypoints, visible), fitted = _frames(args)
    model = LandmarkModel.from_pretrained(args.model).eval()

    def error() -> float:
        with torch.no_grad():
            points = torch.cat([model.detect(frames[i : i + 8]) for i in range(0, len(frames), 8)])
        return mean_pixel_error(points, keypoints, visible)

    model.relations = None
    errors, found = {"none": error()}, {}
    for ratio in RATIOS:
        _, found[str(ratio)] = _relate(model, fitted, None, float("nan"), ratio)
        errors[str(ratio)] = error()
        print(f"max_ratio {ratio}: {errors[str(ratio)]:.3f} px (none: {errors['none']:.3f})", flush=True)
    sizes = [tuple(f.shape[-2:]) for f in frames]
    pose = mean_pose(fitted[1], fitted[2], [tuple(f.shape[-2:]) for f in fitted[0]])
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": _commit(),
        "model": args.model,
        "project": args.project,
        "seed": args.seed,
        "frames": what,
        "error_px_by_max_ratio": errors,
        "relations_by_max_ratio": found,
        "mean_pose_px": mean_pixel_error(pose_in_frames(pose, sizes), keypoints, visible),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
