"""Landmark matching of a face model on the real MTFL test faces (the paper's Table 1 protocol).

The matching numbers of the built-in ``resnet18-faces`` model card and of ``docs/notes/2026-12-benchmarks.md`` come
from this script (the regression numbers from ``scripts/regression_benchmarks.py``): the first
``--match-images`` AFLW test faces, resized to ``input + 2*border`` and border-cropped to ``input`` after
warping; Table 1's TPS pairs (same identity) and consecutive pairs (different identity), nearest
neighbour, error in the 70-px frame.

Usage (one model per call; JSONs go to ``--out``; ``--summary`` prints the markdown table)::

    python scripts/faces_model.py --label random --backbone resnet18 --out runs/eval
    python scripts/faces_model.py --label moco --backbone resnet18-faces --out runs/eval
    python scripts/faces_model.py --label moco+proj --backbone resnet18-faces --projector resnet18-faces --out runs/eval
    python scripts/faces_model.py --summary --out runs/eval
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contrastive_landmarks import Hypercolumn, LandmarkModel, load_backbone  # noqa: E402
from contrastive_landmarks.data import MTFL  # noqa: E402
from contrastive_landmarks.data import transforms as T  # noqa: E402
from contrastive_landmarks.evaluation import ProjectedDescriptors, evaluate_matching, save_results  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", help="name of this model in the tables")
    parser.add_argument("--backbone", default="resnet18", help="timm name (random init) or model directory")
    parser.add_argument("--projector", default=None, help="model directory holding a projector (fit-projector, bundle)")
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "mtfl"))
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--border", type=int, default=13, help="border crop (13 at 64 px, 20 at 96 px)")
    parser.add_argument("--match-images", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--init-seed", type=int, default=0, help="seed of a random initialisation")
    parser.add_argument("--out", default="runs/eval")
    parser.add_argument("--summary", action="store_true", help="print the markdown tables of --out and exit")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.summary:
        print(summary(out))
        return 0
    if not args.label:
        parser.error("--label is required")
    if args.threads:
        torch.set_num_threads(args.threads)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(args.init_seed)  # a randomly initialised backbone is then the same every run
    backbone = load_backbone(args.backbone)
    projector = LandmarkModel.from_pretrained(args.projector).projector if args.projector else None
    if args.projector and projector is None:
        parser.error(f"{args.projector} holds no projector")
    say = lambda message: print(f"[{args.label}] {message}", file=sys.stderr, flush=True)  # noqa: E731
    started = time.time()
    resize = args.input_size + 2 * args.border
    match_set = MTFL(args.root, "test", transform=T.Resize(resize))
    full = Hypercolumn(backbone, size=None).eval()  # match at full input resolution, as the authors
    model = full if projector is None else ProjectedDescriptors(full, projector)
    result = evaluate_matching(
        model, match_set, num_images=args.match_images, crop=args.border, normalize=backbone.normalize
    )
    result["label"] = args.label
    save_results(result, out / f"{args.label}_matching.json")
    say(
        f"matching: same {result['same']['error']:.2f}, different {result['different']['error']:.2f} "
        f"({time.time() - started:.0f} s)"
    )
    return 0


def summary(out: Path) -> str:
    """A markdown table from the matching JSON files in ``out``."""
    lines = ["| model | same identity (px @70) | different identity (px @70) | pairs |", "|---|---|---|---|"]
    for path in sorted(out.glob("*_matching.json")):
        data = json.loads(path.read_text())
        lines.append(
            f"| {data.get('label', path.stem)} | {data['same']['error']:.2f} | "
            f"{data['different']['error']:.2f} | {data['config']['pairs']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
