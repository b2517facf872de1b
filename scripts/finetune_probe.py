"""Validation-only probes of the fine-tuning recipe (``docs/benchmarks.md``, "Fine-tuning").

Fits :func:`contrastive_landmarks.train.finetune` on the *training* frames of a project (the test frames are
never read) with one option changed at a time and prints the validation error beside the mean pose::

    python scripts/finetune_probe.py dlc --backbone resnet18 --steps 1500 --set lr=3e-4
    python scripts/finetune_probe.py lp --backbone resnet18-faces
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from contrastive_landmarks import load_backbone
from contrastive_landmarks.data.base import KeypointSubset
from contrastive_landmarks.data.dlc import DLCProject, dlc_split
from contrastive_landmarks.framing import Framing
from contrastive_landmarks.train.finetune import FinetuneOptions, finetune

PROJECTS = {"dlc": "../shared/data/dlc-reaching", "lp": "../shared/data/lp-mirror-mouse/CollectedData.csv"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("project", choices=sorted(PROJECTS))
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], help="FinetuneOptions fields, e.g. lr=3e-4 stages=1")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    project = DLCProject(PROJECTS[args.project])
    train = KeypointSubset(project, dlc_split(project, "train"))
    fields: dict = {"steps": args.steps}
    framing: dict = {}
    for item in args.set:
        key, value = item.split("=")
        target = framing if key in ("stages", "margin", "min_fraction") else fields
        target[key] = type(getattr(Framing(), key, getattr(FinetuneOptions(), key, 0.0)))(value)
    options = FinetuneOptions(**fields, framing=Framing(**framing), progress=True)
    started = time.perf_counter()
    result = finetune(load_backbone(args.backbone), train, options=options)
    print(
        json.dumps(
            {
                "project": args.project,
                "backbone": args.backbone,
                "set": args.set,
                "steps": args.steps,
                "val_error_px": round(result.score, 2),
                "mean_pose_px": round(result.baseline, 2),
                "best_step": result.best_step,
                "minutes": round((time.perf_counter() - started) / 60, 1),
                "curve": [(h["step"], round(h["val_error"], 1)) for h in result.history],
                "warnings": result.warnings,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
