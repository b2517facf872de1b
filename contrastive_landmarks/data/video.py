"""Frames of video files as unlabelled samples (the ``[video]`` extra: PyAV).

:func:`read_video_frames` decodes one video in order and yields ``(frame number, (3, H, W) image)``;
:class:`VideoFrames` is a dataset over the frames of one or more videos, yielding the unlabelled sample
contract of ``docs/design.md``: ``{"image": (3, H, W) float in [0, 1], "index": int}`` (grey videos are
decoded to 3 channels). Reading a :class:`VideoFrames` in index order decodes each video once, in order;
other orders seek to the keyframe before the frame asked for and decode forward from there.

Opening a video reads its packet table (no decoding) to count the frames and to find a truncated file:
a container whose header promises more frames than its data holds raises a :class:`ValueError` naming the
file. PyAV is imported when the first video is opened, with an :class:`ImportError` naming the extra.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .base import Transform

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
#: Frames a reader decodes forward (rather than seeking) to reach a frame ahead of its position.
_FORWARD_GAP = 64

Region = tuple[int, int, int, int]


def _av():
    try:
        import av
    except ImportError as error:
        raise ImportError(
            'reading videos needs PyAV, which is the [video] extra: pip install "contrastive-landmarks[video]"'
        ) from error
    return av


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
        av = _av()
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


@dataclass(frozen=True)
class VideoInfo:
    """What opening a video found.

    Attributes:
        path: the file.
        num_frames: frames in the video (counted from its packets, not taken from the header).
        fps: average frame rate, or ``None`` when the container does not say.
        width, height: frame size in pixels.
    """

    path: Path
    num_frames: int
    fps: float | None
    width: int
    height: int


def _open(path: Path):
    """``(container, stream)`` of ``path``'s first video stream, errors naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    av = _av()
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as error:  # not a video, a truncated header, an empty container
        reason = getattr(error, "strerror", None) or error
        raise ValueError(f"cannot read video {path}: {reason} (not a video, or a truncated one)") from error
    if not container.streams.video:
        container.close()
        raise ValueError(f"cannot read video {path}: it has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


class _Reader:
    """One open video: its frame table and a decoder positioned at ``self._next``.

    ``self.pts[i]`` is the presentation timestamp of frame ``i`` (``None`` when the container has no
    timestamps; then frames are counted in decoding order and going back re-opens the file).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        av = _av()
        container, stream = _open(path)
        try:
            timestamps, keyframes = [], []
            for packet in container.demux(stream):
                if packet.size == 0:  # the flush packet at the end
                    continue
                timestamps.append(packet.pts)
                if packet.is_keyframe and packet.pts is not None:
                    keyframes.append(packet.pts)
        except av.error.FFmpegError as error:
            container.close()
            raise ValueError(f"cannot read video {path}: {getattr(error, 'strerror', None) or error}") from error
        promised = int(stream.frames or 0)
        rate = stream.average_rate or stream.guessed_rate
        self.info = VideoInfo(path, len(timestamps), float(rate) if rate else None, stream.width, stream.height)
        container.close()
        if not timestamps:
            raise ValueError(f"video {path} holds no frames")
        if promised and len(timestamps) < promised:
            raise ValueError(
                f"video {path} is truncated: its header promises {promised} frames, its data holds {len(timestamps)}"
            )
        self.pts: list[int] | None = None if None in timestamps else sorted(timestamps)
        self._index = {p: i for i, p in enumerate(self.pts)} if self.pts is not None else None
        self._keyframes = sorted(keyframes)
        self._container = None
        self._frames: Iterator | None = None
        self._next = 0  # the frame the decoder yields next

    # -- decoding ----------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._frames, self._next = None, None, 0

    def _restart(self, frame: int = 0) -> None:
        """Position the decoder at or before ``frame``: the keyframe before it, or the start (re-opening the
        file, the one start every container honours)."""
        seek = frame > 0 and self.pts is not None and bool(self._keyframes)
        if not seek:
            self.close()
        if self._container is None:
            self._container, _ = _open(self.path)
        stream = self._container.streams.video[0]
        if seek:
            target = self._keyframes[max(bisect.bisect_right(self._keyframes, self.pts[frame]) - 1, 0)]
            self._container.seek(target, stream=stream, backward=True)
            self._next = -1  # known from the first frame's timestamp
        self._frames = self._container.decode(stream)

    def _decode_next(self):
        """``(frame number, av.VideoFrame)`` of the decoder's next frame."""
        av = _av()
        try:
            frame = next(self._frames)
        except StopIteration:
            raise IndexError(f"video {self.path} ended before frame {self._next}") from None
        except av.error.FFmpegError as error:
            raise ValueError(
                f"cannot decode frame {self._next} of video {self.path}: {getattr(error, 'strerror', None) or error}"
            ) from error
        if self._index is not None and frame.pts in self._index:
            number = self._index[frame.pts]
        elif self._next >= 0:
            number = self._next
        else:  # after a seek, a frame without a known timestamp: start over from the beginning
            raise LookupError(frame.pts)
        self._next = number + 1
        return number, frame

    def frame(self, number: int):
        """The ``av.VideoFrame`` of frame ``number`` (decoding forward, seeking when it is behind or far ahead)."""
        if not 0 <= number < self.info.num_frames:
            raise IndexError(f"frame {number} out of range for video {self.path} of {self.info.num_frames} frames")
        if self._frames is None or not self._next <= number <= self._next + _FORWARD_GAP:
            self._restart(number)
        for attempt in range(2):
            try:
                while True:
                    got, frame = self._decode_next()
                    if got == number:
                        return frame
                    if got > number:  # the seek landed after it, or it is missing: decode from the start
                        raise LookupError(number)
            except LookupError:
                if attempt:
                    break
                self._restart(0)
        raise ValueError(f"cannot decode frame {number} of video {self.path}")

    def __getstate__(self) -> dict:  # an open container does not pickle (DataLoader workers)
        state = dict(self.__dict__)
        state.update(_container=None, _frames=None, _next=0)
        return state


def _to_image(frame, region: Region | None) -> Tensor:
    """``(3, H, W)`` float ``[0, 1]`` of an ``av.VideoFrame`` (any pixel format, grey included)."""
    array = frame.to_ndarray(format="rgb24")
    if region is not None:
        x0, y0, x1, y1 = region
        array = array[y0:y1, x0:x1]
    # in NumPy: the same values as torch's permute().float().div_(255), which is 10-100x slower on a busy CPU
    # with more than one intra-op thread
    image = array.transpose(2, 0, 1).astype(np.float32)
    image /= 255.0
    return torch.from_numpy(image)


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
    return _Reader(Path(path)).info


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
    reader = _Reader(Path(path))
    chosen = _selection(reader.info.num_frames, every, max_frames)
    crop = _check_region(region, reader.info)

    def frames() -> Iterator[tuple[int, Tensor]]:
        try:
            for number in chosen:
                yield number, _to_image(reader.frame(number), crop)
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
        self._readers = [_Reader(Path(p)) for p in names]
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
        sample = {"image": _to_image(frame, self._crops[video]), "index": index}
        return self.transform(sample) if self.transform is not None else sample

    def close(self) -> None:
        """Close the open decoders (reading again reopens them)."""
        for reader in self._readers:
            reader.close()

    def __repr__(self) -> str:
        return f"VideoFrames({len(self)} frames of {', '.join(str(i.path) for i in self.info)})"


class VideoWriter:
    """Encode ``(3, H, W)`` float ``[0, 1]`` frames (or ``(B, 3, H, W)`` batches) to a video file.

    H.264 (``libx264``) when this PyAV build has it, else MPEG-4 part 2; ``yuv420p``, so odd sizes are
    padded by one edge row / column. Use as a context manager, or call :meth:`close` (it flushes the encoder).

    Args:
        path: the file to write (its suffix picks the container: ``.mp4``, ``.avi``, ``.mkv``, ...).
        fps: frames per second.
        codec: an encoder name, instead of the choice above.
    """

    def __init__(self, path: str | os.PathLike, fps: float, *, codec: str | None = None) -> None:
        from fractions import Fraction

        av = _av()
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"the folder {self.path.parent} of the video to write does not exist")
        self.codec = codec or ("libx264" if "libx264" in av.codecs_available else "mpeg4")
        self._rate = Fraction(fps).limit_denominator(1001)
        try:
            self._container = av.open(str(self.path), mode="w")
        except (av.error.FFmpegError, OSError, ValueError) as error:
            raise ValueError(f"cannot write video {self.path}: {error}") from error
        self._stream = None
        self.frames = 0

    def write(self, images: Tensor) -> None:
        """Append ``(3, H, W)`` or ``(B, 3, H, W)`` float ``[0, 1]`` frames (every frame of one size)."""
        av = _av()
        batch = images.unsqueeze(0) if images.ndim == 3 else images
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"frames must be (3, H, W) or (B, 3, H, W), got {tuple(images.shape)}")
        arrays = batch.detach().float().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        height, width = arrays.shape[1:3]
        if self._stream is None:
            self._stream = self._container.add_stream(self.codec, rate=self._rate)
            self._stream.width, self._stream.height = width + width % 2, height + height % 2
            self._stream.pix_fmt = "yuv420p"
        elif (width + width % 2, height + height % 2) != (self._stream.width, self._stream.height):
            raise ValueError(f"frame of {width}x{height} in a video of {self._stream.width}x{self._stream.height}")
        pad = ((0, height % 2), (0, width % 2), (0, 0))
        for array in arrays:
            frame = av.VideoFrame.from_ndarray(np.pad(array, pad, mode="edge"), format="rgb24")
            self._container.mux(self._stream.encode(frame))
            self.frames += 1

    def close(self) -> None:
        """Flush the encoder and close the file."""
        if self._container is None:
            return
        try:
            if self._stream is not None:
                self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
