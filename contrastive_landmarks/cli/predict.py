"""The ``predict`` subcommand: a model's landmarks and confidences for image files or videos, as CSV, JSON,
DeepLabCut CSV or DeepLabCut's ``.h5``; ``--filter`` also writes the filtered track of each video.

Images of any size are read as they are; :meth:`~contrastive_landmarks.LandmarkModel.detect` resizes each to the
model's input size and returns points in the image's own pixels (pixel centres at integers), so the output
can be drawn on the original files. Scores are :func:`~contrastive_landmarks.pipeline.landmark_scores`.

Videos (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ``.m4v``, or any file PyAV opens; the ``[video]`` extra), given
as files or folders, are each decoded once, in order, in batches of ``--batch-size`` frames, and written one row
per frame (the row's index is the frame number), in DeepLabCut's layout by default. Each output goes beside its
video (or into the ``--output`` folder) under DeepLabCut's naming, ``<video stem>DLC_<model folder name>.csv``
(``.h5`` with ``--format h5``; DeepLabCut's own is ``<video stem>DLC_<network><task><date>shuffle<n>_<iteration>.h5``:
the scorer, ``DLC_...``, appended to the stem, which is what DeepLabCut's tools look for), with that scorer in the
file's ``scorer`` level. ``--labelled-video`` also writes a copy with the points drawn as coloured dots
(``<stem>DLC_<model>_labeled.mp4`` in a folder). Every input video is opened (a truncated or unreadable one is
named) and every output checked to be writable before the first frame is predicted. ``--filter median|savgol``
then writes ``<output stem>_filtered<ext>`` (and, for an ``.h5``, the ``_filtered.csv`` DeepLabCut's
``filterpredictions`` writes beside it) with :func:`~contrastive_landmarks.filtering.filter_track`.

A two-stage model's videos are *tracked* by default (:mod:`contrastive_landmarks.tracking`): each frame's crop is
placed from the frames before it and only the second pass runs, the whole-frame two-pass path taking over on the
first frame, where the likelihood drops and where the animal nears the crop's edge; ``--every-frame`` runs the
two-pass :meth:`~contrastive_landmarks.LandmarkModel.detect` on every frame instead. ``--device`` picks where the
network runs (default: the GPU when there is one) and ``--precision`` its autocast (default for videos ``auto``:
bfloat16 for the backbone on a CPU or GPU that computes it natively; for images ``fp32``, exactly ``detect``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..data.dlc_output import FORMATS, format_for, write_track
from .common import UserError, fail, progress_available, setup

if TYPE_CHECKING:
    from collections.abc import Iterator

    from torch import Tensor

    from ..data.dlc_output import Track

__all__ = [
    "add_predict_parser",
    "check_writable",
    "dlc_scorer",
    "draw_points",
    "positive_int",
    "predict_inputs",
    "track_of",
]

#: What a DeepLabCut-named output's extension is, per format.
SUFFIXES = {"csv": ".csv", "dlc": ".csv", "json": ".json", "h5": ".h5"}
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


def dlc_scorer(model: str) -> str:
    """DeepLabCut's scorer for a model directory or registry name: ``DLC_<its folder name>``."""
    return f"DLC_{Path(str(model).rstrip('/').rstrip(os.sep)).name}"


def track_of(rows: list[dict], names: list[str], scorer: str = "model", *, key: str = "image") -> Track:
    """``rows`` (``{key, "points": (N, 2), "scores": (N,)}`` each) as a
    :class:`~contrastive_landmarks.data.dlc_output.Track` of ``len(rows)`` rows and the N landmarks ``names``."""
    import numpy as np

    from ..data.dlc_output import Track

    count = len(names)
    points = np.asarray([r["points"] for r in rows], dtype=np.float64).reshape(len(rows), count, 2)
    scores = np.asarray([r["scores"] for r in rows], dtype=np.float64).reshape(len(rows), count)
    return Track(points, scores, names, [r[key] for r in rows], scorer=scorer, key=key)


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


def _is_folder_name(name: str) -> bool:
    return Path(name).is_dir() or name.endswith(("/", os.sep))


def check_writable(path: Path, inputs: list[Path]) -> None:
    """A :class:`UserError` unless ``path`` can be written: its folder exists and is writable, it is not a folder,
    not a read-only file, and not one of the ``inputs``."""
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: the output folder {path.parent} does not exist")
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")
    if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"cannot write {path}: no permission to write there")
    if path.exists() and any(path.resolve() == i.resolve() for i in inputs):
        raise UserError(f"{path} is an input; write the output elsewhere")


@dataclass
class _VideoJob:
    """One video and where its outputs go: predictions, an optional labelled copy, and the ``(file, format)``
    pairs of the filtered track (none without ``--filter``)."""

    video: Path
    output: Path
    labelled: Path | None
    filtered: list[tuple[Path, str]]


def _plan_videos(args: argparse.Namespace, videos: list[Path], scorer: str) -> tuple[list[_VideoJob], str]:
    """Where each video's outputs go, and the format; every output checked writable (before any prediction)."""
    from .filter import filtered_outputs

    single = len(videos) == 1
    folder: Path | None = None
    output_file: Path | None = None
    if args.output is not None:
        if _is_folder_name(args.output):
            folder = Path(args.output)
            if not folder.is_dir():
                raise UserError(f"the output folder {folder} does not exist")
        elif not single:
            raise UserError(
                f"--output {args.output} names one file but there are {len(videos)} videos: give a folder (each "
                f"video's predictions are written there as <video>{scorer}.csv or .h5), or leave --output out to "
                "write each beside its video"
            )
        else:
            output_file = Path(args.output)
    fmt = _output_format(args.format, output_file, "dlc")
    labelled_folder: Path | None = None
    if args.labelled_video and _is_folder_name(args.labelled_video):
        labelled_folder = Path(args.labelled_video)
        if not labelled_folder.is_dir():
            raise UserError(f"the folder {labelled_folder} for --labelled-video does not exist")
    elif args.labelled_video and not single:
        raise UserError(
            f"--labelled-video {args.labelled_video} names one file but there are {len(videos)} videos: give a "
            f"folder (each copy is written there as <video>{scorer}_labeled.mp4)"
        )
    jobs = []
    for video in videos:
        output = output_file or (folder or video.parent) / f"{video.stem}{scorer}{SUFFIXES[fmt]}"
        labelled = None
        if labelled_folder is not None:
            labelled = labelled_folder / f"{video.stem}{scorer}_labeled.mp4"
        elif args.labelled_video:
            labelled = Path(args.labelled_video)
        filtered = filtered_outputs(output, fmt) if args.filter else []
        jobs.append(_VideoJob(video, output, labelled, filtered))
    written = [p for job in jobs for p in (job.output, job.labelled, *(f for f, _ in job.filtered)) if p is not None]
    repeated = sorted({str(p) for p in written if written.count(p) > 1})
    if repeated:
        raise UserError(f"two outputs would be written to {repeated[0]} (videos with the same name?)")
    for path in written:
        check_writable(path, videos)
    return jobs, fmt


def _image_output(args: argparse.Namespace, files: list[Path]) -> tuple[Path, str]:
    if args.output is None:
        raise UserError("give the file to write with --output (.csv, .json or .h5)")
    output = Path(args.output)
    check_writable(output, files)
    return output, _output_format(args.format, output, "csv")


def _output_format(given: str | None, output: Path | None, default: str) -> str:
    """``--format``, else the one ``output``'s suffix asks for, else ``default``; a :class:`UserError` when
    ``--format`` and a known suffix disagree (an HDF5 file named ``.csv`` is read by nothing)."""
    implied = format_for(output, default) if output is not None else default
    if given is None:
        return implied
    suffix = output.suffix.lower() if output is not None else ""
    if suffix in (".csv", ".json", ".h5", ".hdf5") and SUFFIXES[given] != {".hdf5": ".h5"}.get(suffix, suffix):
        raise UserError(f"--format {given} writes a {SUFFIXES[given]} file, but --output {output} ends in {suffix}")
    return given


def _warn_content(what: list[str]) -> None:
    """One line on stderr for the inputs :func:`~contrastive_landmarks.check.content_problem` rejects."""
    if what:
        listed = "; ".join(what[:5]) + (f"; and {len(what) - 5} more" if len(what) > 5 else "")
        print(f"warning: {listed}: their points are guesses, not landmarks", file=sys.stderr)


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
    _warn_content(flagged)
    return rows


def _decoded(frames, batch_size: int) -> Iterator[tuple[range, Tensor, list[str | None]]]:
    """A video's frames in batches: ``(frame indices, (B, 3, H, W) images, each image's content problem)``.

    The next batch is decoded (and checked, :func:`~contrastive_landmarks.check.content_problem`) in a thread
    while the caller predicts this one: PyAV and NumPy release the GIL, so decoding overlaps the network.
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from ..check import content_problem

    def read(start: int) -> tuple[range, Tensor, list[str | None]]:
        numbers = range(start, min(start + batch_size, len(frames)))
        images = torch.stack([frames[i]["image"] for i in numbers])
        return numbers, images, [content_problem(image) for image in images]

    starts = list(range(0, len(frames), batch_size))
    with ThreadPoolExecutor(1, thread_name_prefix="decode") as pool:
        pending = pool.submit(read, starts[0]) if starts else None
        for following in [*starts[1:], None]:
            batch = pending.result()
            pending = pool.submit(read, following) if following is not None else None
            yield batch


def _predict_video(model, video: Path, args: argparse.Namespace, labelled: Path | None) -> tuple[list[dict], int]:
    """One row per frame (``{"frame", "points", "scores"}``), decoding once; the labelled copy as it goes.

    Returns:
        the rows, and how many frames took the whole-frame two-pass path (all of them unless tracked).
    """
    import torch

    from ..data.video import VideoFrames, VideoWriter
    from ..tracking import TrackState, can_track, inference_precision, track_frames

    tracked = can_track(model) and not args.every_frame
    state, full = TrackState(), 0

    frames = VideoFrames(video)
    bar = None
    if progress_available(not args.no_progress):
        from tqdm import tqdm

        bar = tqdm(total=len(frames), unit="frame", desc=video.name, file=sys.stderr)
    writer = VideoWriter(labelled, frames.fps or 30.0) if labelled is not None else None
    rows: list[dict] = []
    flagged: dict[str, list[int]] = {}
    done = False
    batches = _decoded(frames, args.batch_size)
    try:
        for numbers, images, problems in batches:
            batch = images.to(args.device)
            with torch.no_grad(), inference_precision(args.device, args.precision or "auto"):
                if tracked:  # the frames' content is checked as they are decoded (_decoded), named by frame number
                    points, scores, used, state = track_frames(model, batch, state, check_content=False)
                    full += int(used.sum())
                else:
                    points, scores = model.detect(batch, return_scores=True, check_content=False)
                    full += len(numbers)
            points, scores = points.float().cpu(), scores.float().cpu()
            for i, why, p, s in zip(numbers, problems, points.tolist(), scores.tolist()):
                frame = frames.locate(i)[1]
                rows.append({"frame": frame, "points": p, "scores": s})
                if why:
                    flagged.setdefault(why, []).append(frame)
            if writer is not None:
                writer.write(draw_points(images, points))
            if bar is not None:
                bar.update(len(numbers))
        done = True
        _warn_content(
            [
                f"{len(f)} frames of {video.name} are {why} (the first: {', '.join(map(str, f[:5]))})"
                for why, f in flagged.items()
            ]
        )
    finally:
        batches.close()  # waits for a batch being decoded before the decoder is closed
        frames.close()
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
            if not done:
                labelled.unlink(missing_ok=True)
    return rows, full


def _run_predict(args: argparse.Namespace) -> int:
    from ..device import autocast_dtype, resolve_device
    from ..pipeline import LandmarkModel

    setup(args)
    videos: list[Path] = []
    jobs: list[_VideoJob] = []
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
            jobs, fmt = _plan_videos(args, videos, scorer)
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
            rows, full = _predict_video(model, job.video, args, job.labelled)
            track = track_of(rows, names, scorer, key="frame")
            write_track(job.output, track, fmt)
            line = f"wrote {len(rows)} predictions (frames of {job.video}) of {len(names)} landmarks to {job.output}"
            line += f" ({fmt}"
            if full < len(rows):
                line += f"; tracked, {full} frames on the whole frame"
            line += ")"
            if job.labelled is not None:
                line += f"; labelled video {job.labelled}"
            if job.filtered:
                from .filter import describe_filtering, filter_and_write, resolve_pcutoff

                pcutoff, source = resolve_pcutoff(args, job.video)
                result = filter_and_write(track, job.filtered, args, args.filter, pcutoff)
                written = ", ".join(str(path) for path, _ in job.filtered)
                what = describe_filtering(result, args.filter, pcutoff, source, names)
                line += f"; filtered ({what}) to {written}"
            print(line, file=sys.stderr)
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
