"""Writing videos (PyAV, the ``[video]`` extra): :class:`VideoWriter` encodes ``[0, 1]`` frames to a file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torch import Tensor

from .video_reader import import_av

__all__ = ["VideoWriter"]


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

        av = import_av()
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
        av = import_av()
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
