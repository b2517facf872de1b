"""Measure a face model on the real MTFL data: landmark regression (full and few-shot) and matching.

The numbers of the built-in ``resnet18-faces`` model card and of ``docs/benchmarks.md`` come from this
script. Protocol (every choice on a validation split of MTFL train, the 2,995 AFLW test faces of
MTFL touched once per reported number):

- images: MTFL 80x80 crops, resized to ``input + 2*border`` and border-cropped to ``input`` pixels
  (the paper's 136 -> 96 at 96 px; 90 -> 64 at 64 px, the same 70.6 % centre); training faces are
  cropped around their landmarks to the test framing first (``MTFL(face_crop=True)``; MTFL stores its
  training faces as looser crops, see ``shared/data/README.md``);
- validation: 10 % of the training rows, at most 1,000 (``split_seed`` 0);
- regressor: the authors' (K heatmaps per landmark, soft-argmax, per-landmark linear), Adam
  (0.5, 0.999), cosine, per-channel standardisation, the epoch chosen on validation;
- few-shot: ``N`` labelled images drawn from the training part per seed, tiled to
  ``--samples-per-epoch`` samples an epoch, mean ± std over seeds;
- matching: the first ``--match-images`` test faces, Table 1's TPS pairs (same identity) and
  consecutive pairs (different identity), nearest neighbour, error in the 70-px frame.

Usage (one model per call; JSONs go to ``--out``; ``--summary`` prints the markdown table)::

    python benchmarks/faces_model.py --label random --backbone resnet18 --out runs/eval
    python benchmarks/faces_model.py --label moco --backbone runs/moco/backbone --out runs/eval
    python benchmarks/faces_model.py --label moco+proj --backbone runs/moco/backbone \
        --projector runs/projector/projector.safetensors --out runs/eval
    python benchmarks/faces_model.py --summary --out runs/eval
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
from contrastive_landmarks.evaluation import (  # noqa: E402
    ProjectedDescriptors,
    evaluate_matching,
    evaluate_regression,
    save_results,
)
from contrastive_landmarks.features import FeatureCache  # noqa: E402


def datasets(root: str, input_size: int, border: int, limit_train: int | None, limit_test: int | None):
    transform = T.aflw_transform(input_size, input_size + 2 * border)
    train = MTFL(root, "train", transform=transform, face_crop=True)
    test = MTFL(root, "test", transform=transform)
    if limit_train:
        train = torch.utils.data.Subset(train, range(min(limit_train, len(train))))
        train.eye_indices = (0, 1)
    if limit_test:
        test = torch.utils.data.Subset(test, range(min(limit_test, len(test))))
    return train, test


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", help="name of this model in the tables")
    parser.add_argument("--backbone", default="resnet18", help="timm name (random init) or model directory")
    parser.add_argument("--projector", default=None, help="model directory holding a projector (fit-projector, bundle)")
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "mtfl"))
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--border", type=int, default=13, help="border crop (13 at 64 px, 20 at 96 px)")
    parser.add_argument("--size", type=int, default=32, help="hypercolumn / regressor grid")
    parser.add_argument("--heatmaps", type=int, default=50)
    parser.add_argument("--full-epochs", type=int, default=10)
    parser.add_argument("--fewshot", type=int, nargs="*", default=[10, 50, 100, 1000])
    parser.add_argument("--fewshot-epochs", type=int, default=10)
    parser.add_argument("--samples-per-epoch", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--fewshot-wd", type=float, default=5e-2, help="authors' few-shot weight decay")
    parser.add_argument("--match-images", type=int, default=1000)
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--limit-test", type=int, default=None)
    parser.add_argument("--skip", nargs="*", default=[], choices=["full", "fewshot", "matching"])
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
    hypercolumn = Hypercolumn(backbone, size=args.size).eval()
    projector = LandmarkModel.from_pretrained(args.projector).projector if args.projector else None
    if args.projector and projector is None:
        parser.error(f"{args.projector} holds no projector")
    train, test = datasets(args.root, args.input_size, args.border, args.limit_train, args.limit_test)
    # stage maps depend on the backbone and the data only (a projector is applied after the cache)
    tag = (f"{Path(args.backbone).name}-{args.input_size}px-{args.border}-"
           f"{args.limit_train or 'all'}-{args.limit_test or 'all'}")
    cache = FeatureCache(6 << 30, out / "cache", dtype=torch.float16, tag=tag, persist=True)
    say = lambda message: print(f"[{args.label}] {message}", file=sys.stderr, flush=True)  # noqa: E731
    common = dict(projector=projector, heatmaps_per_landmark=args.heatmaps, size=args.size, lrs=[args.lr],
                  cache=cache, progress=say)

    if "full" not in args.skip:
        started = time.time()
        result = evaluate_regression(hypercolumn, train, test, seeds=[0], epochs=args.full_epochs,
                                     weight_decay=5e-4, **common)
        result["label"] = args.label
        save_results(result, out / f"{args.label}_full.json")
        say(f"full: test IOD {result['test']['mean']:.2f} % ({time.time() - started:.0f} s)")
    if "fewshot" not in args.skip:
        for n in args.fewshot:
            started = time.time()
            result = evaluate_regression(hypercolumn, train, test, num_labelled=n, seeds=args.seeds,
                                         epochs=args.fewshot_epochs, samples_per_epoch=args.samples_per_epoch,
                                         weight_decay=args.fewshot_wd, **common)
            result["label"] = args.label
            save_results(result, out / f"{args.label}_fewshot_{n}.json")
            say(f"few-shot {n}: test IOD {result['test']['mean']:.2f} ± {result['test']['std']:.2f} % "
                f"({time.time() - started:.0f} s)")
    if "matching" not in args.skip:
        started = time.time()
        resize = args.input_size + 2 * args.border
        match_set = MTFL(args.root, "test", transform=T.Resize(resize))
        full = Hypercolumn(backbone, size=None).eval()  # match at full input resolution, as the authors
        model = full if projector is None else ProjectedDescriptors(full, projector)
        result = evaluate_matching(model, match_set, num_images=args.match_images, crop=args.border,
                                   normalize=backbone.normalize)
        result["label"] = args.label
        save_results(result, out / f"{args.label}_matching.json")
        say(f"matching: same {result['same']['error']:.2f}, different {result['different']['error']:.2f} "
            f"({time.time() - started:.0f} s)")
    return 0


def summary(out: Path) -> str:
    """Markdown tables from the JSON files in ``out``."""
    rows: dict[str, dict] = {}
    for path in sorted(out.glob("*.json")):
        data = json.loads(path.read_text())
        label = data.get("label", path.stem)
        key = path.stem[len(label) + 1:]
        rows.setdefault(label, {})[key] = data
    lines = ["| model | all labels | 10 | 50 | 100 | 1000 | matching same | matching different |",
             "|---|---|---|---|---|---|---|---|"]
    def cell(run: dict | None) -> str:
        if run is None:
            return "–"
        test = run["test"]
        return f"{test['mean']:.2f}" + (f" ± {test['std']:.2f}" if len(test["per_seed"]) > 1 else "")

    for label, runs in rows.items():
        match = runs.get("matching")
        same = f"{match['same']['error']:.2f}" if match else "–"
        different = f"{match['different']['error']:.2f}" if match else "–"
        cells = [cell(runs.get(k)) for k in ("full", "fewshot_10", "fewshot_50", "fewshot_100", "fewshot_1000")]
        lines.append(f"| {label} | {' | '.join(cells)} | {same} | {different} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
