"""Both passes of ``LandmarkModel.detect`` around an exported ONNX network, in numpy alone.

:func:`contrastive_landmarks.export.export_onnx` copies this file beside the ``.onnx`` file as
``<stem>_framing.py``; it imports nothing of ``contrastive_landmarks`` (numpy, and onnxruntime to run the graph),
so a caller without the library can use it, or read it as the definition of the sidecar's framing rules::

    from model_framing import ExportedModel   # the copy beside model.onnx and model.json

    model = ExportedModel("model.onnx")
    points, scores = model.detect([frame])    # frames (H, W, 3) RGB, uint8 or float in [0, 1]
    # points (B, N, 2) (x, y) pixels of each frame, scores (B, N), as LandmarkModel.detect(..., return_scores=True)

Images here are ``(C, H, W)`` float arrays (channels first, as the graph takes them); points are ``(x, y)`` pixels
with pixel centres at integers; a box is ``(cx, cy, side, angle)`` in frame pixels, angle in degrees. Each function
mirrors one of the library's (named in its docstring), which ``tests/test_export.py`` checks it against.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "ExportedModel",
    "crop",
    "frame_box",
    "keypoint_box",
    "resize",
    "resize_weights",
    "sample_bilinear",
    "to_float_frame",
    "uncrop_points",
]


def to_float_frame(frame: np.ndarray) -> np.ndarray:
    """An ``(H, W, 3)`` RGB frame, ``uint8`` or float in ``[0, 1]``, as a ``(3, H, W)`` float64 array in ``[0, 1]``.

    (OpenCV decodes BGR: pass ``frame[..., ::-1]``.)
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"a frame must be (H, W, 3) RGB, got shape {frame.shape}")
    values = frame.astype(np.float64) / 255 if frame.dtype == np.uint8 else frame.astype(np.float64)
    return np.ascontiguousarray(values.transpose(2, 0, 1))


def resize_weights(n_in: int, n_out: int) -> np.ndarray:
    """The ``(n_out, n_in)`` matrix of PyTorch's antialiased bilinear resize along one axis (``align_corners=False``).

    PIL's triangle filter stretched by the downscale factor ``n_in / n_out`` (plain bilinear when upscaling), each
    row normalised to sum to one: ``F.interpolate(..., mode="bilinear", antialias=True)``, one axis.
    """
    scale = n_in / n_out
    support, inverse = (scale, 1 / scale) if scale >= 1 else (1.0, 1.0)
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = scale * (i + 0.5)
        low = max(int(centre - support + 0.5), 0)
        high = min(int(centre + support + 0.5), n_in)
        taps = np.maximum(0.0, 1.0 - np.abs((np.arange(low, high) - centre + 0.5) * inverse))
        weights[i, low:high] = taps / taps.sum()
    return weights


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(C, H, W)`` -> ``(C, h, w)`` for ``size = (h, w)``, antialiased bilinear (:func:`resize_weights` per axis).

    Mirrors ``F.interpolate(image, size, mode="bilinear", align_corners=False, antialias=True)``.
    """
    rows = resize_weights(image.shape[-2], size[0])
    cols = resize_weights(image.shape[-1], size[1])
    return np.einsum("hH,cHW,wW->chw", rows, image, cols, optimize=True)


def sample_bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``image`` ``(C, H, W)`` read at pixel positions ``x``, ``y`` (any equal shapes) -> ``(C, *x.shape)``.

    Bilinear between the four nearest pixel centres, a neighbour outside the image counting as zero: PyTorch's
    ``grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)`` in pixel coordinates.
    """
    h, w = image.shape[-2:]
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    out = np.zeros((image.shape[0], *x.shape))
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = (x0 + dx).astype(np.int64), (y0 + dy).astype(np.int64)
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            values = image[:, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
            out += values * (wx * wy * inside)
    return out


def frame_box(height: int, width: int) -> np.ndarray:
    """The letterbox box of an ``H x W`` frame, ``(4,)`` float32: centred, side ``max(H, W)`` (``frame_boxes``)."""
    return np.array([(width - 1) / 2, (height - 1) / 2, max(height, width), 0.0], dtype=np.float32)


def keypoint_box(
    points: np.ndarray, height: int, width: int, margin: float, min_fraction: float, max_fraction: float | None = None
) -> np.ndarray:
    """A square box around ``points`` ``(N, 2)``, ``(4,)`` float32 (``keypoint_boxes``).

    Centre: the middle of the finite points' bounding box; side: ``margin`` times its longer side, at least
    ``min_fraction`` of the frame's longer side and, unless ``max_fraction`` is ``None``, at most that fraction of it
    (but never below the points' extent). No finite point: :func:`frame_box`.
    """
    points = np.asarray(points, dtype=np.float32)
    points = points[np.isfinite(points).all(-1)]
    if not len(points):
        return frame_box(height, width)
    low, high = points.min(0), points.max(0)
    extent = float((high - low).max())
    side = max(extent * margin, min_fraction * max(height, width))
    if max_fraction is not None:
        side = max(min(side, max_fraction * max(height, width)), extent)
    return np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, side, 0.0], dtype=np.float32)


def _rotation(angle: float) -> np.ndarray:
    a = math.radians(angle)
    return np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])  # crop axes -> frame axes, y down


def uncrop_points(points: np.ndarray, box: Sequence[float], size: int) -> np.ndarray:
    """Pixels ``(N, 2)`` of a ``size``-square crop at ``box`` -> pixels of its frame (``uncrop_points``)."""
    cx, cy, side, angle = (float(v) for v in box)
    local = (np.asarray(points, dtype=np.float64) + 0.5) * (side / size) - side / 2
    return local @ _rotation(angle).T + np.array([cx, cy])


def crop(
    frame: np.ndarray, box: Sequence[float], size: int, *, max_step: float = 2.0, below: float = 0.75
) -> np.ndarray:
    """The ``(C, S, S)`` crop of a ``(C, H, W)`` frame at ``box`` (``crop_images``; zeros outside the frame).

    When a crop pixel would cover more than ``max_step`` frame pixels (scale ``min(1, max_step S / side)`` below
    ``below``), the frame is first resized (:func:`resize`) so that it covers ``max_step``, and the sampling
    positions are mapped into the resized frame, each axis by its own factor (the rounded sizes differ slightly).
    """
    h, w = frame.shape[-2:]
    cx, cy, side, angle = (float(v) for v in np.asarray(box, dtype=np.float32))
    scale = min(1.0, max_step * size / side)
    if scale < below:
        small = (max(1, round(h * scale)), max(1, round(w * scale)))
        frame = resize(frame, small)
    v, u = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    source = uncrop_points(np.stack([u.ravel(), v.ravel()], -1), (cx, cy, side, angle), size)
    if scale < below:  # frame pixels -> pixels of the resized frame, each axis by its own factor
        source = (source + 0.5) * np.array([small[1] / w, small[0] / h]) - 0.5
    return sample_bilinear(frame, source[:, 0].reshape(size, size), source[:, 1].reshape(size, size))


class ExportedModel:
    """An exported model: the ONNX graph of one pass and its sidecar's framing, as ``LandmarkModel.detect``.

    Args:
        path: the ``.onnx`` file (its sidecar is the ``.json`` beside it) or the sidecar itself.
        run: the network, ``batch (B, 3, S_h, S_w) float32 -> (points (B, N, 2), scores (B, N))``; default: an
            onnxruntime session on the graph.
        providers: onnxruntime execution providers (default: the CPU).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        path = Path(path)
        self.sidecar = json.loads(path.with_suffix(".json").read_text())
        if run is None:
            import onnxruntime

            session = onnxruntime.InferenceSession(str(path.with_name(self.sidecar["onnx"])), providers=list(providers))

            def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                points, scores = session.run(["points", "scores"], {"image": batch})
                return points, scores

        self.run = run
        self.size = tuple(self.sidecar["input"]["size"])
        self.framing = self.sidecar["framing"]

    def _pass(self, frames: list[np.ndarray], boxes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One pass on the frames' boxes: ``(B, N, 2)`` frame pixels and ``(B, N)`` scores."""
        side, antialias = self.size[0], self.framing["antialias"]
        batch = np.stack([crop(f, b, side, **antialias) for f, b in zip(frames, boxes)]).astype(np.float32)
        points, scores = self.run(batch)
        return np.stack([uncrop_points(p, b, side) for p, b in zip(points, boxes)]), np.asarray(scores)

    def detect(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks and scores of ``B`` frames of any sizes.

        Args:
            frames: ``(H_i, W_i, 3)`` RGB frames, ``uint8`` or float in ``[0, 1]``.

        Returns:
            ``points`` ``(B, N, 2)`` float32 ``(x, y)`` pixels of each frame and ``scores`` ``(B, N)`` float32.
        """
        images = [to_float_frame(frame) for frame in frames]
        sizes = [image.shape[-2:] for image in images]
        if self.framing["kind"] == "resize":
            batch = np.stack([image if image.shape[-2:] == self.size else resize(image, self.size) for image in images])
            points, scores = self.run(batch.astype(np.float32))
            scale = np.array([[w / self.size[1], h / self.size[0]] for h, w in sizes])[:, None]
            return ((np.asarray(points, np.float64) + 0.5) * scale - 0.5).astype(np.float32), np.asarray(scores)
        points, scores = self._pass(images, [frame_box(h, w) for h, w in sizes])
        if self.framing["stages"] == 2:
            rule = [self.framing[key] for key in ("margin", "min_fraction")] + [self.framing.get("max_fraction")]
            boxes = [keypoint_box(p, h, w, *rule) for p, (h, w) in zip(points, sizes)]
            points, scores = self._pass(images, boxes)
        return points.astype(np.float32), scores.astype(np.float32)
