"""The ``predict`` subcommand: a model's landmarks and confidences for image files, as CSV, JSON or DeepLabCut CSV.

Images of any size are read as they are; :meth:`~contrastive_landmarks.LandmarkModel.detect` resizes each to the
model's input size and returns points in the image's own pixels (pixel centres at integers), so the output
can be drawn on the original files. Scores are :func:`~contrastive_landmarks.pipeline.landmark_scores`.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from .common import UserError, fail, setup

__all__ = ["add_predict_parser", "image_files", "write_predictions"]

FORMATS = ("csv", "json", "dlc")


def image_files(paths: list[str]) -> list[Path]:
    """The image files ``paths`` names; a folder gives its images, sorted. Raises a :class:`UserError` naming
    a path that does not exist or a folder without images."""
    from ..data.folder import IMAGE_EXTENSIONS

    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise UserError(f"folder {path} has no images in it ({', '.join(IMAGE_EXTENSIONS)})")
            files.extend(found)
        elif not path.is_file():
            raise UserError(f"image not found: {path}")
        else:
            files.append(path)
    return files


def write_predictions(path: Path, rows: list[dict], names: list[str], fmt: str, scorer: str = "model") -> None:
    """Write ``rows`` (``{"image", "points": [(x, y)] * N, "scores": [s] * N}``) to ``path`` as ``fmt``.

    ``csv``: ``image,<name>_x,<name>_y,<name>_score,...``. ``json``: a list of ``{"image", "landmarks":
    {name: {"x", "y", "score"}}}``. ``dlc``: DeepLabCut's 3-row header (scorer / bodyparts / coords
    ``x, y, likelihood``), one row per image.
    """
    if fmt == "json":
        payload = [
            {
                "image": r["image"],
                "landmarks": {
                    n: {"x": p[0], "y": p[1], "score": s} for n, p, s in zip(names, r["points"], r["scores"])
                },
            }
            for r in rows
        ]
        path.write_text(json.dumps(payload, indent=2) + "\n")
        return
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        if fmt == "dlc":
            writer.writerow(["scorer", *[scorer] * (3 * len(names))])
            writer.writerow(["bodyparts", *[n for n in names for _ in range(3)]])
            writer.writerow(["coords", *["x", "y", "likelihood"] * len(names)])
        else:
            writer.writerow(["image", *[f"{n}_{c}" for n in names for c in ("x", "y", "score")]])
        for r in rows:
            values = [f"{v:.3f}" for p, s in zip(r["points"], r["scores"]) for v in (p[0], p[1], s)]
            writer.writerow([r["image"], *values])


def _run_predict(args: argparse.Namespace) -> int:
    import torch

    from ..data.base import load_image
    from ..pipeline import LandmarkModel

    setup(args)
    try:
        files = image_files(args.images)
        output = Path(args.output)
        fmt = args.format or {".json": "json"}.get(output.suffix.lower(), "csv")
        if not output.parent.is_dir():
            raise UserError(f"the output folder {output.parent} does not exist")
        model = LandmarkModel.from_pretrained(args.model)
        if model.regressor is None:
            raise UserError(f"{args.model} has no landmark regressor (fit one with fit-regressor)")
        names = list(model.landmark_names) or [f"point{i}" for i in range(model.regressor.num_landmarks)]
        rows = []
        for start in range(0, len(files), args.batch_size):
            chunk = files[start : start + args.batch_size]
            with torch.no_grad():
                points, scores = model.detect([load_image(f) for f in chunk], return_scores=True)
            for file, p, s in zip(chunk, points.tolist(), scores.tolist()):
                rows.append({"image": str(file), "points": p, "scores": s})
        write_predictions(output, rows, names, fmt, scorer=Path(str(args.model)).name)
    except (UserError, ValueError, FileNotFoundError) as error:
        return fail("predict", error)
    print(f"wrote {len(rows)} predictions of {len(names)} landmarks to {output} ({fmt})", file=sys.stderr)
    return 0


def add_predict_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``predict``."""
    parser = subparsers.add_parser(
        "predict",
        help="landmarks and confidences of a model for image files (CSV, JSON or DeepLabCut CSV)",
        description="Detect the landmarks of a model directory, registry name (resnet18-faces) or Hub id in image "
        "files or folders of images, of any size; points are in each image's own pixels (centres at integers), "
        "with a confidence per landmark.",
    )
    parser.add_argument("model", help="model directory, registry name or Hub repo id (LandmarkModel.from_pretrained)")
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--output", required=True, help="file to write (.csv or .json)")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="csv (one row per image), json, or dlc (DeepLabCut's 3-row header; default: by suffix)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.set_defaults(func=_run_predict)
    return parser
