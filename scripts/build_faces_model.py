"""Build the built-in ``resnet18-faces`` model from a MoCo pretraining checkpoint.

Steps (all on unlabelled or training images; the MTFL test faces are never read here):

1. export the query encoder's backbone from the checkpoint;
2. re-estimate its BatchNorm statistics on clean, unlabelled training faces
   (:func:`contrastive_landmarks.train.recalibrate_batchnorm`; MoCo's running statistics come from
   augmented batches);
3. fit a 256-d :class:`~contrastive_landmarks.SpatialProjector` with Eq. 3 (x' = x) on unlabelled faces
   (CelebA-6k and MTFL train images), the epoch chosen on held-out images;
4. fit a 5-point :class:`~contrastive_landmarks.LandmarkRegressor` on the MTFL training labels with the
   library's recipe (:func:`~contrastive_landmarks.train.fit_regressor` defaults; faces cut at the test
   framing with jitter spanning it), selected on 500 clean held-out training faces (the transfer protocol
   of ``scripts/regression_benchmarks.py``);
5. save the bundle as a half-precision model directory with a model card.

Usage::

    python scripts/build_faces_model.py runs/moco_r18_64/checkpoint.pt runs/faces
    python scripts/build_faces_model.py ... --install   # also copy into contrastive_landmarks/weights/
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset, Subset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contrastive_landmarks import Hypercolumn, LandmarkModel, LandmarkRegressor, load_backbone, save_pretrained  # noqa: E402
from contrastive_landmarks.data import MTFL, ImageFolder, KeypointSubset  # noqa: E402
from contrastive_landmarks.data import transforms as T  # noqa: E402
from contrastive_landmarks.data.mtfl import AFLW_FRAMING_JITTER  # noqa: E402
from contrastive_landmarks.evaluation import split_indices  # noqa: E402
from contrastive_landmarks.train import export_backbone, fit_projector, fit_regressor, recalibrate_batchnorm  # noqa: E402

LANDMARKS = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")


def _images(dataset, indices, batch=128):
    for start in range(0, len(indices), batch):
        yield torch.stack([dataset[i]["image"] for i in indices[start : start + batch]])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="hypercolumn / regressor grid of the bundle")
    parser.add_argument("--recalibrate-images", type=int, default=4096)
    parser.add_argument("--projector-images", type=int, default=3000)
    parser.add_argument("--projector-epochs", type=int, default=5)
    parser.add_argument("--projector-lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--install", action="store_true", help="copy the result to contrastive_landmarks/weights/")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    size = args.input_size
    transform = T.aflw_transform(size)
    mtfl_root = Path(args.data) / "mtfl"

    started = time.time()
    raw = export_backbone(args.checkpoint, out / "backbone_raw")
    backbone = load_backbone(str(raw))
    # clean, unlabelled training faces at the test framing (labels only locate the crop)
    faces = MTFL(mtfl_root, "train", transform=transform, face_crop=True)
    order = torch.randperm(len(faces), generator=torch.Generator().manual_seed(0)).tolist()
    seen = recalibrate_batchnorm(
        backbone, (backbone.normalize(x) for x in _images(faces, order[: args.recalibrate_images]))
    )
    save_pretrained(out / "backbone", backbone.body.state_dict(), backbone.config)
    timings["export + BN recalibration"] = time.time() - started
    print(f"BN statistics re-estimated on {seen} faces", flush=True)

    # projector: unlabelled faces (CelebA-6k, MTFL train), never the test faces
    started = time.time()
    celeba = ImageFolder(Path(args.data) / "celeba-6k" / "images", transform=T.celeba_transform(size))
    pool = ConcatDataset([celeba, MTFL(mtfl_root, "train", transform=transform)])
    pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(1)).tolist()
    n = args.projector_images
    projector_train, projector_val = Subset(pool, pick[:n]), Subset(pool, pick[n : n + max(200, n // 10)])
    hypercolumn = Hypercolumn(backbone, size=args.size).eval()
    fitted = fit_projector(
        hypercolumn,
        projector_train,
        projector_val,
        dim=256,
        epochs=args.projector_epochs,
        lr=args.projector_lr,
        seed=0,
        progress=False,
    )
    projector = fitted.projector
    projector.size = (args.size, args.size)
    timings["projector"] = time.time() - started
    print(
        f"projector: val loss {fitted.best_score:.4f} (untrained {fitted.initial_score:.4f}), "
        f"epoch {fitted.best_epoch}",
        flush=True,
    )

    # regressor: MTFL training labels (the library's recipe), selected on clean held-out training faces
    started = time.time()
    jittered = MTFL(
        mtfl_root,
        "train",
        face_crop=size,
        face_crop_jitter=AFLW_FRAMING_JITTER,
        generator=torch.Generator().manual_seed(0),
    )
    clean = MTFL(mtfl_root, "train", face_crop=size)
    train_part, val_part = split_indices(len(clean), 0.1, 0, max_val=500)
    result = fit_regressor(hypercolumn, KeypointSubset(jittered, train_part), KeypointSubset(clean, val_part), seed=0)
    regressor: LandmarkRegressor = result.regressor
    timings["regressor"] = time.time() - started
    print(
        f"regressor: val IOD {result.score:.2f} % (mean shape {result.baseline:.2f} %) at step {result.best_step}",
        flush=True,
    )

    model = LandmarkModel(hypercolumn, projector, regressor, regressor_input="hypercolumn", landmark_names=LANDMARKS)
    facts = {
        "projector": {
            "val_loss": fitted.best_score,
            "untrained_val_loss": fitted.initial_score,
            "epoch": fitted.best_epoch,
            "train_images": n,
            "config": fitted.config,
        },
        "regressor": {
            "val_iod": result.score,
            "val_mean_shape_iod": result.baseline,
            "step": result.best_step,
            "train_images": len(train_part),
            "val_images": len(val_part),
            "config": result.config,
        },
        "bn_recalibration_images": seen,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    (out / "build.json").write_text(json.dumps(facts, indent=2, default=str) + "\n")
    card_path = out / "card.md"
    card = card_path.read_text() if card_path.is_file() else None
    bundle = model.save_pretrained(out / "resnet18-faces", card=card, dtype=torch.float16)
    print(f"wrote {bundle}", flush=True)
    if args.install:
        target = ROOT / "contrastive_landmarks" / "weights" / "resnet18-faces"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(bundle, target)
        print(f"installed {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
