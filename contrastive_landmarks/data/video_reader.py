"""One open video (PyAV, the ``[video]`` extra): its packet table, a decoder that seeks and decodes frames, a
decoded frame as an image. What :mod:`.video`'s readers and :class:`~.video.VideoFrames` are built on.

Opening a video (:class:`FrameReader`) reads its packet table (no decoding) to count the frames and to find a
truncated file: a container whose header promises more frames than its data holds raises a :class:`ValueError`
naming the file. Frames are then decoded forward from the decoder's position, or after a seek to the keyframe before
the frame asked for. PyAV is imported when the first video is opened (:func:`import_av`), with an
:class:`ImportError` naming the extra.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["FORWARD_GAP", "FrameReader", "Region", "VideoInfo", "frame_image", "import_av", "open_video"]

#: Frames a reader decodes forward (rather than seeking) to reach a frame ahead of its position.
FORWARD_GAP = 64

#: ``(x0, y0, x1, y1)`` pixels of a crop, half-open like ``image[y0:y1, x0:x1]``.
Region = tuple[int, int, int, int]


def import_av():
    """The ``av`` module (PyAV), or an :class:`ImportError` naming the ``[video]`` extra."""
    try:
        import av
    except ImportError as error:
        raise ImportError(
            'reading videos needs PyAV, which is the [video] extra: pip install "contrastive-landmarks[video]"'
        ) from error
    return av


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


def open_video(path: Path):
    """``(container, stream)`` of ``path``'s first video stream, errors naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    av = import_av()
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


class FrameReader:
    """One open video: its frame table and a decoder positioned at ``self._next``.

    ``self.pts[i]`` is the presentation timestamp of frame ``i`` (``None`` when the container has no
    timestamps; then frames are counted in decoding order and going back re-opens the file).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        av = import_av()
        container, stream = open_video(path)
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
            self._container, _ = open_video(self.path)
        stream = self._container.streams.video[0]
        if seek:
            target = self._keyframes[max(bisect.bisect_right(self._keyframes, self.pts[frame]) - 1, 0)]
            self._container.seek(target, stream=stream, backward=True)
            self._next = -1  # known from the first frame's timestamp
        self._frames = self._container.decode(stream)

    def _decode_next(self):
        """``(frame number, av.VideoFrame)`` of the decoder's next frame."""
        av = import_av()
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
        if self._frames is None or not self._next <= number <= self._next + FORWARD_GAP:
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


def frame_image(frame, region: Region | None) -> Tensor:
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
