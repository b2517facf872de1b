"""Choose the regressor's decode window on a fitted model's validation frames, as a JSON record.

A fine-tuned model's heatmaps are decoded by a soft-argmax over every cell (the paper's) or only around each
heatmap's peak (:attr:`~contrastive_landmarks.LandmarkRegressor.decode_window`, :func:`~contrastive_landmarks.
regressor.around_peak`): where a heatmap has two modes (a paw that could be either of two), every cell averages
them and lands between. This scores one model (``finetune_sweep.py --keep``) on the frames that fit never trained
on, for several windows, without refitting:

- without ``--holdout``: the fit's own validation frames (the same ``val_fraction`` / seed rule
  :func:`~contrastive_landmarks.train.finetune` held out, so a run of the default recipe);
- with ``--holdout F``: the training frames ``finetune_sweep.py --holdout F`` set aside (the few-label runs).

The test frames are never read. Each window's mean error stands beside the training frames' mean pose on the
same frames::

    python benchmarks/decode_window.py runs/models/capauto lp --seed 0 \\
        --out benchmarks/results/decode/lp-capauto-s0.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from contrastive_landmarks import LandmarkModel
from contrastive_landmarks.data.base import KeypointSubset
from contrastive_landmarks.data.dlc import DLCProject, dlc_split
from contrastive_landmarks.framing import mean_pose, pose_in_frames
from contrastive_landmarks.metrics import mean_pixel_error
from contrastive_landmarks.train._loop import holdout_split
from contrastive_landmarks.train.finetuning import FinetuneOptions, _training_frames, load_frames

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
PROJECTS = {"dlc": DATA / "dlc-reaching", "lp": DATA / "lp-mirror-mouse" / "CollectedData.csv"}
WINDOWS = (None, 1, 2, 3, 4, 6, 8)


def _frames(args) -> tuple[str, tuple, tuple]:
    """``(what, scored frames, fitted frames)``, each ``(frames, keypoints, visible)``."""
    project = DLCProject(PROJECTS[args.project])
    train = KeypointSubset(project, dlc_split(project, "train"))
    if args.holdout:
        kept, aside = holdout_split(len(train), args.holdout, 0)
        scored = load_frames(KeypointSubset(project, [train.indices[i] for i in aside]))
        train = KeypointSubset(project, [train.indices[i] for i in kept])
        options = FinetuneOptions(seed=args.seed, num_labelled=args.num_labelled)
        fitted, _ = _training_frames(train, None, options, list(project.names))
        return f"{len(scored[0])} training frames set aside (holdout {args.holdout}, seed 0)", scored, fitted
    options = FinetuneOptions(seed=args.seed, num_labelled=args.num_labelled)
    fitted, val = _training_frames(train, None, options, list(project.names))
    if getattr(args, "unused", False):  # the training frames a --num-labelled fit did not draw
        frames, keypoints, visible = load_frames(train)
        rest = [i for i, f in enumerate(frames) if not any(f.shape == g.shape and f.equal(g) for g in fitted[0])]
        what = f"the {len(rest)} training frames the {len(fitted[0])}-frame fit did not draw (seed {args.seed})"
        return what, ([frames[i] for i in rest], keypoints[rest], visible[rest]), fitted
    if val is None:
        raise SystemExit("this fit held out no validation frames: pass --holdout")
    return f"the fit's {len(val[0])} validation frames (seed {args.seed})", val, fitted


def _commit() -> str:
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return run.stdout.strip() or "?"


def detect_error(model: LandmarkModel, frames, keypoints, visible) -> float:
    """The model's mean pixel error on the frames (``detect`` in batches of 8)."""
    with torch.no_grad():
        points = torch.cat([model.detect(frames[i : i + 8]) for i in range(0, len(frames), 8)])
    return mean_pixel_error(points, keypoints, visible)


def mean_pose_error(fitted, frames, keypoints, visible) -> float:
    """The error of the fitted frames' mean pose on the scored frames: the trivial baseline beside each number."""
    pose = mean_pose(fitted[1], fitted[2], [tuple(f.shape[-2:]) for f in fitted[0]])
    return mean_pixel_error(pose_in_frames(pose, [tuple(f.shape[-2:]) for f in frames]), keypoints, visible)


def write_record(args, fields: dict) -> None:
    """``args.out``: the command, commit, model, project and seed, then ``fields``."""
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": _commit(),
        "model": args.model,
        "project": args.project,
        "seed": args.seed,
        **fields,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a fitted model directory (finetune_sweep.py --keep)")
    parser.add_argument("project", choices=sorted(PROJECTS))
    parser.add_argument("--seed", type=int, default=0, help="the fit's seed (its validation frames follow it)")
    parser.add_argument("--num-labelled", type=int, default=None)
    parser.add_argument("--holdout", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    what, (frames, keypoints, visible), fitted = _frames(args)
    model = LandmarkModel.from_pretrained(args.model).eval()
    errors = {}
    for window in WINDOWS:
        model.regressor.decode_window = window
        errors[str(window)] = detect_error(model, frames, keypoints, visible)
        print(f"window {window}: {errors[str(window)]:.3f} px", flush=True)
    write_record(
        args,
        {
            "frames": what,
            "error_px_by_window": errors,
            "mean_pose_px": mean_pose_error(fitted, frames, keypoints, visible),
        },
    )


if __name__ == "__main__":
    main()
