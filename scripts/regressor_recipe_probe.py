"""One fit_regressor run on real data with options changed from the defaults: how the recipe was chosen.

Validation data only. ``mtfl``: random-init ResNet-18, the first ``--train`` faces of a seed-0 permutation of
MTFL's training rows cut at the test framing with jitter spanning it, the last 300 of that permutation (clean)
for validation. ``dlc``: the DeepLabCut reaching project's training split letterboxed to ``--size``, 8 of its
frames held out. Prints one JSON line (validation error, mean shape, spread, steps, seconds) and the curve.

    python scripts/regressor_recipe_probe.py mtfl                       # the defaults
    python scripts/regressor_recipe_probe.py mtfl --options '{"lr": 3e-3}'
    python scripts/regressor_recipe_probe.py mtfl --size 96
    python scripts/regressor_recipe_probe.py dlc --size 128 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contrastive_landmarks import Hypercolumn, load_backbone  # noqa: E402
from contrastive_landmarks.data import MTFL, KeypointSubset, by_name  # noqa: E402
from contrastive_landmarks.data.mtfl import AFLW_FRAMING_JITTER  # noqa: E402
from contrastive_landmarks.train import Augment, fit_regressor  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", choices=("mtfl", "dlc"))
    parser.add_argument("--root", default=None, help="default ../shared/data/mtfl or ../shared/data/dlc-reaching")
    parser.add_argument("--size", type=int, default=None, help="input size (default 64 for mtfl, 128 for dlc)")
    parser.add_argument("--train", type=int, default=1500, help="mtfl: training faces")
    parser.add_argument("--no-jitter", action="store_true", help="mtfl: face crops without jitter")
    parser.add_argument("--no-augment", action="store_true", help="no warp / flip of the views")
    parser.add_argument("--options", default="{}", help="fit_regressor keyword arguments as JSON")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shared = ROOT.parent / "shared" / "data"
    if args.data == "mtfl":
        size = args.size or 64
        root = Path(args.root or shared / "mtfl")
        jitter = (0.0, 0.0) if args.no_jitter else AFLW_FRAMING_JITTER
        train = MTFL(root, "train", face_crop=size, face_crop_jitter=jitter, generator=torch.Generator().manual_seed(0))
        clean = MTFL(root, "train", face_crop=size)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).tolist()
        train, val = KeypointSubset(train, order[: args.train]), KeypointSubset(clean, order[-300:])
    else:
        size = args.size or 128
        frames = by_name("dlc", str(args.root or shared / "dlc-reaching"), "train", image_size=size)
        order = torch.randperm(len(frames), generator=torch.Generator().manual_seed(0)).tolist()
        train, val = KeypointSubset(frames, order[8:]), KeypointSubset(frames, order[:8])
    options = json.loads(args.options)
    if args.no_augment:
        options["augment"] = Augment.none()
    torch.manual_seed(0)
    features = Hypercolumn(load_backbone("resnet18"), size=None)
    started = time.time()
    fit = fit_regressor(features, train, val, warn=False, **options)
    print(
        json.dumps(
            {
                "data": args.data,
                "size": size,
                "options": args.options,
                "no_augment": args.no_augment,
                "no_jitter": args.no_jitter,
                "metric": fit.metric,
                "val_error": fit.score,
                "mean_shape": fit.baseline,
                "improvement": fit.improvement,
                "spread": fit.spread,
                "best_step": fit.best_step,
                "steps": fit.steps,
                "peakiness": [fit.peakiness_init, fit.peakiness_final],
                "views": fit.config["views"],
                "seconds": round(time.time() - started),
            }
        )
    )
    print([round(h["val_error"], 3) for h in fit.history])
    return 0


if __name__ == "__main__":
    sys.exit(main())
