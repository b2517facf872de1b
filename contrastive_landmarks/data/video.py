"""Frames of video files as unlabelled samples (the ``[video]`` extra: PyAV).

:func:`read_video_frames` decodes one video in order and yields ``(frame number, (3, H, W) image)``;
:class:`VideoFrames` is a dataset over the frames of one or more videos, yielding the unlabelled sample
contract of ``docs/design.md``: ``{"image": (3, H, W) float in [0, 1], "index": int}`` (grey videos are
decoded to 3 channels). Reading a :class:`VideoFrames` in index order decodes each video once, in order;
other orders seek to the keyframe before the frame asked for and decode forward from there.

Opening a video reads its packet table (no decoding) to count the frames and to find a truncated file:
a container whose header promises more frames than its data holds raises a :class:`ValueError` naming the
file. PyAV is imported when the first video is opened, with an :class:`ImportError` naming the extra.

This module finds videos (:func:`folder_videos`, :func:`is_video_file`) and reads their frames; one open video,
decoded and seeked, is :mod:`.video_reader`'s, and writing one (:class:`VideoWriter`) is :mod:`.video_writer`'s.
Every name is importable from here.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from .base import Transform
from .video_reader import FrameReader, Region, VideoInfo, frame_image, import_av
from .video_writer import VideoWriter

__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoFrames",
    "VideoInfo",
    "VideoWriter",
    "folder_videos",
    "is_video_file",
    "read_video_frames",
    "video_info",
]

#: Suffixes taken as videos without opening the file.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v")


def folder_videos(folder: str | os.PathLike) -> list[Path]:
    """The videos of ``folder`` by suffix (:data:`VIDEO_EXTENSIONS`), sorted, leaving out labelled copies
    (``*_labeled.*``, DeepLabCut's naming and ``predict --labelled-video``'s); ``[]`` when it is no folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.stem.endswith("_labeled")
    )


def is_video_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a video by its suffix (:data:`VIDEO_EXTENSIONS`), or else a file that PyAV opens
    with a video stream in it (``False`` without PyAV)."""
    path = Path(path)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return True
    if not path.is_file():
        return False
    try:
        av = import_av()
    except ImportError:
        return False
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0] if container.streams.video else None
            # an image file opens as a one-frame "video" (image2 / *_pipe demuxers): not what is meant here
            name = container.format.name
            return stream is not None and name != "image2" and not name.endswith("_pipe")
    except (av.error.FFmpegError, OSError, ValueError):
        return False


def _check_region(region: Sequence[int] | None, info: VideoInfo) -> Region | None:
    if region is None:
        return None
    values = tuple(int(v) for v in region)
    if len(values) != 4 or any(v != r for v, r in zip(values, region)):
        raise ValueError(f"region must be 4 integers (x0, y0, x1, y1), got {region!r}")
    x0, y0, x1, y1 = values
    if not (0 <= x0 < x1 <= info.width and 0 <= y0 < y1 <= info.height):
        raise ValueError(
            f"region {values} is not inside the {info.width}x{info.height} frames of {info.path} "
            "(need 0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height)"
        )
    return values


def _selection(num_frames: int, every: int, max_frames: int | None) -> range:
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 0):
        raise ValueError(f"max_frames must be a non-negative integer or None, got {max_frames!r}")
    chosen = range(0, num_frames, every)
    return chosen if max_frames is None else chosen[:max_frames]


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Frame count, frame rate and size of a video (reads its packet table, decodes nothing).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable video, no video stream, no frames, or truncated (names the file).
        ImportError: PyAV is missing (names the ``[video]`` extra).
    """
    return FrameReader(Path(path)).info


def read_video_frames(
    path: str | os.PathLike, *, every: int = 1, max_frames: int | None = None, region: Sequence[int] | None = None
) -> Iterator[tuple[int, Tensor]]:
    """Decode a video once, in order: ``(frame number, (3, H, W) float [0, 1] image)`` per kept frame.

    Args:
        path: the video file.
        every: keep frames ``0, every, 2 * every, ...``.
        max_frames: keep at most this many frames.
        region: ``(x0, y0, x1, y1)`` pixels to crop every frame to, half-open like ``image[y0:y1, x0:x1]``
            (so points found in the crop are ``(x + x0, y + y0)`` in the full frame).

    Raises (when called, before the first frame):
        FileNotFoundError: no such file.
        ValueError: not a readable video, no video stream, no frames, truncated, or a bad region (names the file).
        ImportError: PyAV is missing (names the ``[video]`` extra).
    """
    reader = FrameReader(Path(path))
    chosen = _selection(reader.info.num_frames, every, max_frames)
    crop = _check_region(region, reader.info)

    def frames() -> Iterator[tuple[int, Tensor]]:
        try:
            for number in chosen:
                yield number, frame_image(reader.frame(number), crop)
        finally:
            reader.close()

    return frames()


class VideoFrames(Dataset):
    """Unlabelled frames of one or more videos: ``{"image": (3, H, W) float [0, 1], "index": int}``.

    Args:
        paths: a video file or a list of them (frames of the first, then of the second, ...).
        every: keep frames ``0, every, 2 * every, ...`` of each video.
        max_frames: keep at most this many frames of each video.
        region: ``(x0, y0, x1, y1)`` pixels to crop every frame to, half-open like ``image[y0:y1, x0:x1]``.
        transform: sample transform (e.g. ``Resize(96)``), applied last.

    Attributes:
        info: a :class:`VideoInfo` per video (frame count, fps, size).

    ``index`` is the position in the dataset; :meth:`locate` gives the video and frame number behind it.
    Reading in index order decodes each video once; the open decoders are dropped when pickled (DataLoader
    workers open their own) and by :meth:`close`.

    Raises:
        FileNotFoundError: a video does not exist.
        ValueError: a video is not readable, has no video stream or no frames, is truncated, or the region does
            not fit its frames (names the file).
        ImportError: PyAV is missing (names the ``[video]`` extra).
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        every: int = 1,
        max_frames: int | None = None,
        region: Sequence[int] | None = None,
        transform: Transform | None = None,
    ) -> None:
        names = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        if not names:
            raise ValueError("VideoFrames needs at least one video")
        self._readers = [FrameReader(Path(p)) for p in names]
        self.info = [r.info for r in self._readers]
        self._chosen = [_selection(i.num_frames, every, max_frames) for i in self.info]
        self._crops = [_check_region(region, i) for i in self.info]
        self._starts = np.cumsum([0] + [len(c) for c in self._chosen]).tolist()
        self.every, self.max_frames, self.region, self.transform = every, max_frames, region, transform

    def _single(self, what: str) -> VideoInfo:
        if len(self.info) != 1:
            raise ValueError(f"{what} is per video here ({len(self.info)} videos): read .info[i].{what}")
        return self.info[0]

    @property
    def fps(self) -> float | None:
        """The frame rate of the (one) video."""
        return self._single("fps").fps

    @property
    def num_frames(self) -> int:
        """Frames in the (one) video, before ``every`` and ``max_frames`` choose among them."""
        return self._single("num_frames").num_frames

    def __len__(self) -> int:
        return self._starts[-1]

    def locate(self, index: int) -> tuple[Path, int]:
        """``(video path, frame number in it)`` of sample ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} video frames")
        video = bisect.bisect_right(self._starts, index) - 1
        return self.info[video].path, self._chosen[video][index - self._starts[video]]

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} video frames")
        index = int(index) % len(self)
        video = bisect.bisect_right(self._starts, index) - 1
        frame = self._readers[video].frame(self._chosen[video][index - self._starts[video]])
        sample = {"image": frame_image(frame, self._crops[video]), "index": index}
        return self.transform(sample) if self.transform is not None else sample

    def close(self) -> None:
        """Close the open decoders (reading again reopens them)."""
        for reader in self._readers:
            reader.close()

    def __repr__(self) -> str:
        return f"VideoFrames({len(self)} frames of {', '.join(str(i.path) for i in self.info)})"
