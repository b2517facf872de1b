"""``predict``'s video path: where each video's outputs go, its frames decoded once and predicted (tracked or
every frame), the labelled copy drawn as it goes, and its track written (and filtered).

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
two-pass :meth:`~contrastive_landmarks.LandmarkModel.detect` on every frame instead.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..data.dlc_output import write_track
from .common import UserError, progress_available
from .predict_outputs import SUFFIXES, check_writable, is_folder_name, output_format, track_of, warn_content

if TYPE_CHECKING:
    from collections.abc import Iterator

    from torch import Tensor

    from ..pipeline import LandmarkModel

__all__ = ["PALETTE", "VideoJob", "decoded", "draw_points", "plan_videos", "predict_frames", "predict_video"]

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


@dataclass
class VideoJob:
    """One video and where its outputs go: predictions, an optional labelled copy, and the ``(file, format)``
    pairs of the filtered track (none without ``--filter``)."""

    video: Path
    output: Path
    labelled: Path | None
    filtered: list[tuple[Path, str]]


def plan_videos(args: argparse.Namespace, videos: list[Path], scorer: str) -> tuple[list[VideoJob], str]:
    """Where each video's outputs go, and the format; every output checked writable (before any prediction).

    Raises:
        UserError: an ``--output`` or ``--labelled-video`` file for several videos, a folder that does not exist,
            two outputs to one file, or an output that cannot be written (:func:`check_writable`).
    """
    from .filter import filtered_outputs

    single = len(videos) == 1
    folder: Path | None = None
    output_file: Path | None = None
    if args.output is not None:
        if is_folder_name(args.output):
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
    fmt = output_format(args.format, output_file, "dlc")
    labelled_folder: Path | None = None
    if args.labelled_video and is_folder_name(args.labelled_video):
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
        jobs.append(VideoJob(video, output, labelled, filtered))
    written = [p for job in jobs for p in (job.output, job.labelled, *(f for f, _ in job.filtered)) if p is not None]
    repeated = sorted({str(p) for p in written if written.count(p) > 1})
    if repeated:
        raise UserError(f"two outputs would be written to {repeated[0]} (videos with the same name?)")
    for path in written:
        check_writable(path, videos)
    return jobs, fmt


def decoded(frames, batch_size: int) -> Iterator[tuple[range, Tensor, list[str | None]]]:
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


def predict_frames(
    model: LandmarkModel, video: Path, args: argparse.Namespace, labelled: Path | None
) -> tuple[list[dict], int]:
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
    batches = decoded(frames, args.batch_size)
    try:
        for numbers, images, problems in batches:
            batch = images.to(args.device)
            with torch.no_grad(), inference_precision(args.device, args.precision or "auto"):
                if tracked:  # the frames' content is checked as they are decoded (decoded), named by frame number
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
        warn_content(
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


def predict_video(
    model: LandmarkModel, job: VideoJob, args: argparse.Namespace, names: list[str], scorer: str, fmt: str
) -> str:
    """Predict ``job``'s video (:func:`predict_frames`), write its track as ``fmt`` (and its filtered track with
    ``--filter``); the line that says what was written."""
    rows, full = predict_frames(model, job.video, args, job.labelled)
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
    return line
