"""The ``predict`` subcommand: a model's landmarks and confidences for image files or a video, as CSV, JSON or
DeepLabCut CSV.

Images of any size are read as they are; :meth:`~contrastive_landmarks.LandmarkModel.detect` resizes each to the
model's input size and returns points in the image's own pixels (pixel centres at integers), so the output
can be drawn on the original files. Scores are :func:`~contrastive_landmarks.pipeline.landmark_scores`.

A video (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ``.m4v``, or any file PyAV opens; the ``[video]`` extra) is
decoded once, in order, in batches of ``--batch-size`` frames, and written one row per frame (the row's index is
the frame number), in DeepLabCut's layout by default; ``--labelled-video`` also writes a copy with the points
drawn as coloured dots.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .common import UserError, fail, progress_available, setup

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["add_predict_parser", "draw_points", "image_files", "positive_int", "write_predictions"]

FORMATS = ("csv", "json", "dlc")
#: Dot colours of a labelled video, one per landmark in turn (matplotlib's tab10), RGB 0..255.
PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (a one-line usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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


def write_predictions(
    path: Path, rows: list[dict], names: list[str], fmt: str, scorer: str = "model", *, key: str = "image"
) -> None:
    """Write ``rows`` (``{key, "points": [(x, y)] * N, "scores": [s] * N}``) to ``path`` as ``fmt``.

    ``csv``: ``<key>,<name>_x,<name>_y,<name>_score,...``. ``json``: a list of ``{<key>, "landmarks":
    {name: {"x", "y", "score"}}}``. ``dlc``: DeepLabCut's 3-row header (scorer / bodyparts / coords
    ``x, y, likelihood``), one row per image. ``key`` is ``"image"`` (a path) or ``"frame"`` (a frame number).
    """
    if fmt == "json":
        payload = [
            {
                key: r[key],
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
            writer.writerow([key, *[f"{n}_{c}" for n in names for c in ("x", "y", "score")]])
        for r in rows:
            values = [f"{v:.3f}" for p, s in zip(r["points"], r["scores"]) for v in (p[0], p[1], s)]
            writer.writerow([r[key], *values])


def draw_points(images: Tensor, points: Tensor, radius: int | None = None) -> Tensor:
    """``images`` with a filled dot of :data:`PALETTE` colour at each point (drawn in place).

    Args:
        images: ``(B, 3, H, W)`` float ``[0, 1]``.
        points: ``(B, N, 2)`` ``(x, y)`` pixels (pixel centres at integers); non-finite points are skipped.
        radius: dot radius in pixels (default: 1/100 of the shorter side, at least 2).

    Returns:
        ``images``.
    """
    import torch

    height, width = images.shape[-2:]
    r = radius if radius is not None else max(2, round(min(height, width) / 100))
    offsets = torch.arange(-r, r + 1)
    disk = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= r * r + r  # a round-looking dot at small radii
    dy, dx = (grid[disk] for grid in torch.meshgrid(offsets, offsets, indexing="ij"))
    for image, frame_points in zip(images, points):
        for k, (x, y) in enumerate(frame_points.tolist()):
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            ys, xs = dy + round(y), dx + round(x)
            inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
            colour = torch.tensor(PALETTE[k % len(PALETTE)], dtype=image.dtype) / 255
            image[:, ys[inside], xs[inside]] = colour[:, None]
    return images


def _video_input(paths: list[str]) -> Path | None:
    """The video ``paths`` names (by suffix, or a file PyAV opens), or ``None`` when they name images."""
    from ..data.folder import IMAGE_EXTENSIONS
    from ..data.video import is_video_file

    videos = [Path(p) for p in paths if Path(p).suffix.lower() not in IMAGE_EXTENSIONS and not Path(p).is_dir()]
    videos = [p for p in videos if is_video_file(p)]
    if not videos:
        return None
    if len(paths) > 1:
        raise UserError(f"predict reads one video at a time, or image files; got {len(paths)} inputs with {videos[0]}")
    return videos[0]


def _output_path(args: argparse.Namespace, video: Path | None) -> Path:
    if args.output is not None:
        output = Path(args.output)
    elif video is not None:  # DeepLabCut's habit: beside the video, named after it and the model
        output = video.with_name(f"{video.stem}_{Path(str(args.model)).name}.csv")
    else:
        raise UserError("give the file to write with --output (.csv or .json)")
    written = [output] + ([Path(args.labelled_video)] if args.labelled_video else [])
    for path in written:
        if not path.parent.is_dir():
            raise UserError(f"the output folder {path.parent} does not exist")
        if video is not None and path.resolve() == video.resolve():
            raise UserError(f"{path} is the input video; write the output elsewhere")
    return output


@contextmanager
def _named_content_warnings():
    """Silence ``detect``'s warning about blank / noise inputs, which names batch indices: the CLI names files."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"images\[\d+\] is ", category=UserWarning)
        yield


def _warn_content(what: list[str]) -> None:
    """One line on stderr for the inputs :func:`~contrastive_landmarks.check.content_problem` rejects."""
    if what:
        listed = "; ".join(what[:5]) + (f"; and {len(what) - 5} more" if len(what) > 5 else "")
        print(f"warning: {listed}: their points are guesses, not landmarks", file=sys.stderr)


def _predict_images(model, files: list[Path], batch_size: int) -> list[dict]:
    import torch

    from ..check import content_problem
    from ..data.base import load_image

    rows, flagged = [], []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images = [load_image(f) for f in chunk]
        flagged += [f"{f} is {why}" for f, image in zip(chunk, images) if (why := content_problem(image))]
        with torch.no_grad(), _named_content_warnings():
            points, scores = model.detect(images, return_scores=True)
        for file, p, s in zip(chunk, points.tolist(), scores.tolist()):
            rows.append({"image": str(file), "points": p, "scores": s})
    _warn_content(flagged)
    return rows


def _predict_video(model, video: Path, args: argparse.Namespace) -> list[dict]:
    """One row per frame (``{"frame", "points", "scores"}``), decoding once; the labelled copy as it goes."""
    import torch

    from ..check import content_problem
    from ..data.video import VideoFrames, VideoWriter

    frames = VideoFrames(video)
    bar = None
    if progress_available(not args.no_progress):
        from tqdm import tqdm

        bar = tqdm(total=len(frames), unit="frame", desc=video.name, file=sys.stderr)
    labelled = Path(args.labelled_video) if args.labelled_video else None
    writer = VideoWriter(labelled, frames.fps or 30.0) if labelled is not None else None
    rows: list[dict] = []
    flagged: dict[str, list[int]] = {}
    done = False
    try:
        for start in range(0, len(frames), args.batch_size):
            numbers = range(start, min(start + args.batch_size, len(frames)))
            images = torch.stack([frames[i]["image"] for i in numbers])
            with torch.no_grad(), _named_content_warnings():
                points, scores = model.detect(images, return_scores=True)
            for i, image, p, s in zip(numbers, images, points.tolist(), scores.tolist()):
                frame = frames.locate(i)[1]
                rows.append({"frame": frame, "points": p, "scores": s})
                if why := content_problem(image):
                    flagged.setdefault(why, []).append(frame)
            if writer is not None:
                writer.write(draw_points(images, points))
            if bar is not None:
                bar.update(len(numbers))
        done = True
        _warn_content(
            [f"{len(f)} frames are {why} (the first: {', '.join(map(str, f[:5]))})" for why, f in flagged.items()]
        )
    finally:
        frames.close()
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
            if not done:
                labelled.unlink(missing_ok=True)
    return rows


def _run_predict(args: argparse.Namespace) -> int:
    from ..pipeline import LandmarkModel

    setup(args)
    try:
        video = _video_input(args.images)
        if args.labelled_video and video is None:
            raise UserError("--labelled-video needs a video input")
        files = image_files(args.images) if video is None else []
        output = _output_path(args, video)
        fmt = args.format or {".json": "json"}.get(output.suffix.lower(), "csv" if video is None else "dlc")
        model = LandmarkModel.from_pretrained(args.model)
        if model.regressor is None:
            raise UserError(f"{args.model} has no landmark regressor (fit one with fit-regressor)")
        names = list(model.landmark_names) or [f"point{i}" for i in range(model.regressor.num_landmarks)]
        if video is None:
            rows = _predict_images(model, files, args.batch_size)
        else:
            rows = _predict_video(model, video, args)
        scorer = Path(str(args.model)).name
        write_predictions(output, rows, names, fmt, scorer=scorer, key="image" if video is None else "frame")
    except (UserError, ValueError, FileNotFoundError, ImportError) as error:
        return fail("predict", error)
    source = "" if video is None else f" (frames of {video})"
    extra = f"; labelled video {args.labelled_video}" if args.labelled_video else ""
    summary = f"wrote {len(rows)} predictions{source} of {len(names)} landmarks to {output} ({fmt}){extra}"
    print(summary, file=sys.stderr)
    return 0


def add_predict_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``predict``."""
    parser = subparsers.add_parser(
        "predict",
        description="Detect the landmarks of a model directory, registry name (resnet18-faces) or Hub id in image "
        "files or folders of images, of any size, or in every frame of a video (the [video] extra); points are in "
        "each image's own pixels (centres at integers), with a confidence per landmark.",
    )
    parser.add_argument("model", help="model directory, registry name or Hub repo id (LandmarkModel.from_pretrained)")
    parser.add_argument(
        "images", nargs="+", help="image files or folders of images, or one video (.mp4, .avi, .mov, .mkv, .m4v)"
    )
    parser.add_argument(
        "--output",
        default=None,
        help="file to write (.csv or .json); required for images, for a video the default is "
        "VIDEO-STEM_MODEL.csv beside the video",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="csv (one row per image or frame), json, or dlc (DeepLabCut's 3-row header, x / y / likelihood); "
        "default: json for a .json output, else dlc for a video and csv for images",
    )
    parser.add_argument(
        "--labelled-video", default=None, metavar="FILE", help="also write a copy of the video with the points drawn"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, help="images or frames per forward pass (default 32)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for a video)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.set_defaults(func=_run_predict)
    return parser
