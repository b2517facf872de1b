"""The ``predict`` subcommand: a model's landmarks and confidences for image files or videos, as CSV, JSON,
DeepLabCut CSV or DeepLabCut's ``.h5``; ``--filter`` also writes the filtered track of each video.

Images of any size are read as they are; :meth:`~contrastive_landmarks.LandmarkModel.detect` resizes each to the
model's input size and returns points in the image's own pixels (pixel centres at integers), so the output
can be drawn on the original files. Scores are :func:`~contrastive_landmarks.pipeline.landmark_scores`.

Videos (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ``.m4v``, or any file PyAV opens; the ``[video]`` extra), given
as files or folders, take the video path of :mod:`~contrastive_landmarks.cli.predict_video`: one row per frame, in
DeepLabCut's layout and naming by default, a two-stage model's frames tracked unless ``--every-frame``, and
optionally a labelled copy and the filtered track. What images and videos share (the scorer's name, the output's
format, the check that it can be written before any prediction, the warning line) is in
:mod:`~contrastive_landmarks.cli.predict_outputs`. ``--device`` picks where the network runs (default: the GPU when
there is one) and ``--precision`` its autocast (default for videos ``auto``: bfloat16 for the backbone on a CPU or
GPU that computes it natively; for images ``fp32``, exactly ``detect``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data.dlc_output import FORMATS, write_track
from .common import UserError, fail, setup
from .predict_outputs import check_writable, dlc_scorer, output_format, track_of, warn_content
from .predict_video import PALETTE, VideoJob, draw_points, plan_videos, predict_video

__all__ = [
    "PALETTE",
    "add_predict_parser",
    "check_writable",
    "dlc_scorer",
    "draw_points",
    "positive_int",
    "predict_inputs",
    "track_of",
]


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (a one-line usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def predict_inputs(paths: list[str]) -> tuple[list[Path], list[Path]]:
    """``(videos, images)`` that ``paths`` name, one of them empty.

    A folder gives its videos (:data:`~contrastive_landmarks.data.video.VIDEO_EXTENSIONS`, labelled copies left
    out), else its images; a file is an image by its suffix, else a video if it is one
    (:func:`~contrastive_landmarks.data.video.is_video_file`), else an image (which then fails to load, named).

    Raises:
        UserError: a path that does not exist, a folder with neither, or videos and images together.
    """
    from ..data.folder import IMAGE_EXTENSIONS
    from ..data.video import VIDEO_EXTENSIONS, folder_videos, is_video_file

    videos: list[Path] = []
    images: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = folder_videos(path)
            if found:
                videos += found
                continue
            pictures = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not pictures:
                raise UserError(
                    f"folder {path} has no videos ({', '.join(VIDEO_EXTENSIONS)}) or images "
                    f"({', '.join(IMAGE_EXTENSIONS)}) in it"
                )
            images += pictures
        elif not path.is_file():
            raise UserError(f"input not found: {path}")
        elif path.suffix.lower() not in IMAGE_EXTENSIONS and is_video_file(path):
            videos.append(path)
        else:
            images.append(path)
    if videos and images:
        raise UserError(f"predict reads videos or images, not both in one call: got video {videos[0]} and {images[0]}")
    return list(dict.fromkeys(videos)), images


def _image_output(args: argparse.Namespace, files: list[Path]) -> tuple[Path, str]:
    if args.output is None:
        raise UserError("give the file to write with --output (.csv, .json or .h5)")
    output = Path(args.output)
    check_writable(output, files)
    return output, output_format(args.format, output, "csv")


def _predict_images(model, files: list[Path], args: argparse.Namespace) -> list[dict]:
    import torch

    from ..check import content_problem
    from ..data.base import load_image
    from ..tracking import inference_precision

    batch_size = args.batch_size

    rows, flagged = [], []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images = [load_image(f) for f in chunk]
        flagged += [f"{f} is {why}" for f, image in zip(chunk, images) if (why := content_problem(image))]
        images = [image.to(args.device) for image in images]
        with torch.no_grad(), inference_precision(args.device, args.precision or "fp32"):
            points, scores = model.detect(images, return_scores=True, check_content=False)  # checked above
        for file, p, s in zip(chunk, points.float().tolist(), scores.float().tolist()):
            rows.append({"image": str(file), "points": p, "scores": s})
    warn_content(flagged)
    return rows


def _run_predict(args: argparse.Namespace) -> int:
    from ..device import autocast_dtype, resolve_device
    from ..pipeline import LandmarkModel

    setup(args)
    videos: list[Path] = []
    jobs: list[VideoJob] = []
    done = 0
    try:
        videos, files = predict_inputs(args.images)
        if args.labelled_video and not videos:
            raise UserError("--labelled-video needs a video input")
        if args.filter and not videos:
            raise UserError("--filter needs video input (it smooths each track over time)")
        settings = {"--window": args.window, "--pcutoff": args.pcutoff, "--max-jump": args.max_jump}
        unused = [option for option, value in settings.items() if value is not None]
        if unused and not args.filter:
            raise UserError(f"{', '.join(unused)} set how --filter filters: add --filter median or --filter savgol")
        args.device = resolve_device(args.device)
        autocast_dtype(args.device, args.precision or "auto")  # an unknown precision is refused before any work
        scorer = dlc_scorer(args.model)
        if videos:
            from ..data.video import video_info

            for video in videos:  # a truncated or unreadable video is named before any work starts
                video_info(video)
            jobs, fmt = plan_videos(args, videos, scorer)
        else:
            output, fmt = _image_output(args, files)
        if fmt == "h5":
            from ..data.dlc_output import require_h5

            require_h5()
        model = LandmarkModel.from_pretrained(args.model).to(args.device)
        if model.regressor is None:
            raise UserError(f"{args.model} has no landmark regressor (fit one with fit-regressor)")
        names = list(model.landmark_names) or [f"point{i}" for i in range(model.regressor.num_landmarks)]
        if not videos:
            rows = _predict_images(model, files, args)
            write_track(output, track_of(rows, names, scorer, key="image"), fmt)
            print(f"wrote {len(rows)} predictions of {len(names)} landmarks to {output} ({fmt})", file=sys.stderr)
        for job in jobs:
            print(predict_video(model, job, args, names, scorer, fmt), file=sys.stderr)
            done += 1
    except (UserError, ValueError, FileNotFoundError, ImportError) as error:
        finished = f" (after {done} of {len(jobs)} videos were written)" if done else ""
        return fail("predict", f"{error}{finished}")
    return 0


def add_predict_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``predict``."""
    from .filter import add_filter_arguments

    parser = subparsers.add_parser(
        "predict",
        description="Detect the landmarks of a model directory, registry name (resnet18-faces) or Hub id in image "
        "files or folders of images, of any size, or in every frame of videos or folders of videos (the [video] "
        "extra); points are in each image's own pixels (centres at integers), with a confidence per landmark. Each "
        "video's predictions go beside it as <video>DLC_<model>.csv (DeepLabCut's naming and layout; .h5 with "
        "--format h5, the [h5] extra).",
    )
    parser.add_argument("model", help="model directory, registry name or Hub repo id (LandmarkModel.from_pretrained)")
    parser.add_argument(
        "images",
        nargs="+",
        metavar="INPUT",
        help="image files or folders of images, or videos (.mp4, .avi, .mov, .mkv, .m4v) or folders of videos",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="file to write (.csv, .json or .h5), required for images; for videos a folder to write "
        "<video>DLC_<model>.csv (or .h5 / .json) into, or a file when there is one video; default: beside each video",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="csv (one row per image or frame), json, dlc (DeepLabCut's CSV: 3-row header, x / y / likelihood) or "
        "h5 (DeepLabCut's .h5, the [h5] extra); default: from the --output suffix (.json, .h5), else dlc for "
        "videos and csv for images",
    )
    parser.add_argument(
        "--labelled-video",
        default=None,
        metavar="FILE|FOLDER",
        help="also write a copy of the video with the points drawn (a folder: <video>DLC_<model>_labeled.mp4 in it)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, help="images or frames per forward pass (default 32)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for a video)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--device", default=None, help="torch device: cpu, cuda, cuda:1, ... (default: the GPU when there is one)"
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default=None,
        help="autocast of the backbone: auto (bfloat16 where the CPU or GPU computes it natively, else float32), "
        "fp32 (exactly LandmarkModel.detect), bf16, fp16 (default: auto for videos, fp32 for images)",
    )
    parser.add_argument(
        "--every-frame",
        action="store_true",
        help="run the whole-frame two-pass detection on every video frame instead of tracking (a two-stage model's "
        "videos are tracked by default: each frame's crop placed from the frames before it, one pass a frame, the "
        "two passes where the likelihood drops or the animal nears the crop's edge)",
    )
    parser.add_argument(
        "--filter",
        choices=("median", "savgol"),
        default=None,
        help="also write each video's filtered track as <output>_filtered (see `contrastive-landmarks filter`)",
    )
    add_filter_arguments(parser)
    parser.set_defaults(func=_run_predict)
    return parser
