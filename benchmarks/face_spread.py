"""How far the built-in face model's points move between faces, beside how far the truth moves (one JSON record).

The model card's "its points follow each face": ``detect`` on the in-domain split's 995 AFLW test faces at 64 px,
the RMS distance of each landmark from its mean over the faces (:func:`~contrastive_landmarks.metrics.point_spread`)
of the predictions and of the labels, their ratio, and the inter-ocular error of the same predictions::

    HF_HUB_OFFLINE=1 python benchmarks/face_spread.py --out benchmarks/results/faces_checks/spread.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from contrastive_landmarks import LandmarkModel
from contrastive_landmarks.data import MTFL, KeypointSubset
from contrastive_landmarks.data.mtfl import aflw_split
from contrastive_landmarks.data.transforms import aflw_transform
from contrastive_landmarks.metrics import inter_ocular_error, point_spread, spread_ratio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_sweep import DATA, _commit


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18-faces")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = LandmarkModel.from_pretrained(args.model).eval()
    test = KeypointSubset(MTFL(DATA / "mtfl", "test", transform=aflw_transform(64)), aflw_split("test"))
    samples = [test[i] for i in range(len(test))]
    images, truth = torch.stack([s["image"] for s in samples]), torch.stack([s["keypoints"] for s in samples])
    pred = torch.cat([model.detect(images[i : i + 128]) for i in range(0, len(images), 128)])
    visible = torch.ones(truth.shape[:2], dtype=torch.bool)
    record = {
        "command": " ".join(["python", *sys.argv]),
        "commit": _commit(),
        "model": args.model,
        "faces": len(images),
        "input_px": 64,
        "pred_rms_px": float(point_spread(pred, visible)),
        "truth_rms_px": float(point_spread(truth, visible)),
        "spread_ratio": spread_ratio(pred, truth, visible),
        "iod_error_pct": float(inter_ocular_error(pred, truth, visible=visible)),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
