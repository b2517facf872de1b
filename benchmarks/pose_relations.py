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

import torch
from decode_window import _frames, detect_error, mean_pose_error, write_record

from contrastive_landmarks import LandmarkModel
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
    model.relations = None
    errors, found = {"none": detect_error(model, frames, keypoints, visible)}, {}
    for ratio in RATIOS:
        _, found[str(ratio)] = _relate(model, fitted, None, float("nan"), ratio)
        errors[str(ratio)] = detect_error(model, frames, keypoints, visible)
        print(f"max_ratio {ratio}: {errors[str(ratio)]:.3f} px (none: {errors['none']:.3f})", flush=True)
    write_record(
        args,
        {
            "frames": what,
            "error_px_by_max_ratio": errors,
            "relations_by_max_ratio": found,
            "mean_pose_px": mean_pose_error(fitted, frames, keypoints, visible),
        },
    )


if __name__ == "__main__":
    main()
