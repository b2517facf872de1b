"""Shared pieces of the dataset readers: image decoding, file checks and the keypoint dataset base.

Every reader yields the sample contract of ``docs/design.md``: a ``dict`` with

- ``image``: ``(3, H, W)`` float in ``[0, 1]``,
- ``keypoints``: ``(N, 2)`` float ``(x, y)`` pixels (pixel centres at integers, see
  :mod:`contrastive_landmarks.coords`),
- ``visible``: ``(N,)`` bool,
- ``index``: int (position in the dataset),

and unlabelled readers yield ``image`` and ``index`` only. Images are decoded with Pillow, which is
part of the ``train``, ``viz`` and ``dev`` extras (not a core dependency): it is imported when the
first image is read, with an :class:`ImportError` naming the extra when it is missing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["KeypointDataset", "KeypointSubset", "Sample", "Transform", "load_image", "require_dir", "require_file"]

Sample = dict
#: how far (a fraction of the image's width / height) a visible keypoint may lie outside its image
OUTSIDE_TOLERANCE = 0.1
#: A transform maps a sample dict to a sample dict (see :mod:`contrastive_landmarks.data.transforms`).
Transform = Callable[[dict], dict]


def _pil():
    try:
        from PIL import Image
    except ImportError as error:  # pragma: no cover - exercised only without Pillow
        raise ImportError(
            "reading images needs Pillow, which is in the [train], [viz] and [dev] extras: "
            'pip install "contrastive-landmarks[train]"'
        ) from error
    return Image


def load_image(path: str | os.PathLike) -> Tensor:
    """Decode an image file to a ``(3, H, W)`` float tensor in ``[0, 1]`` (grey and RGBA become RGB).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable image (truncated, another format); the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    image_module = _pil()
    try:
        with image_module.open(path) as image:
            mode = image.mode
            array = np.asarray(image) if mode in _WIDE_GREY_MODES else np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as error:  # truncated, not an image, unsupported mode
        raise ValueError(f"cannot read image {path}: {error}") from error
    if mode in _WIDE_GREY_MODES:
        return _wide_grey(array, mode, path)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


# Pillow's single-channel modes wider than 8 bits; ``convert("RGB")`` clips them to 255 (a 16-bit
# PNG came out all white), so they are scaled here instead.
_WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _wide_grey(array: np.ndarray, mode: str, path: Path) -> Tensor:
    """A 16-bit (or 32-bit integer / float) grey image as ``(3, H, W)`` in ``[0, 1]``.

    16-bit modes are divided by 65535 (the full range of the type, not the image's maximum, so that
    a dark image stays dark). Mode ``"I"`` (how some Pillow versions open 16-bit PNGs) is read the
    same way when its values fit 16 bits; wider values and floats outside ``[0, 1]`` have no known
    scale and are refused.
    """
    values = array.astype(np.float64)
    if mode == "F":
        if values.size and (values.min() < 0.0 or values.max() > 1.0):
            raise ValueError(
                f"cannot read image {path}: a float image with values in [{values.min():g}, {values.max():g}], "
                "outside [0, 1]; convert it to an 8- or 16-bit image"
            )
    else:
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"cannot read image {path}: a {mode!r} integer image with values in "
                f"[{values.min():g}, {values.max():g}], wider than 16 bits; convert it to an 8- or 16-bit image"
            )
        values = values / 65535.0
    grey = torch.from_numpy(values.astype(np.float32))
    return grey.unsqueeze(0).expand(3, -1, -1).contiguous()


def require_file(path: str | os.PathLike, what: str, layout: str = "") -> Path:
    """Return ``path`` if it is a file, else raise a :class:`FileNotFoundError` naming it and the layout."""
    path = Path(path)
    if not path.is_file():
        hint = f"; expected layout: {layout}" if layout else ""
        raise FileNotFoundError(f"{what} not found: {path}{hint}")
    return path


def require_dir(path: str | os.PathLike, what: str, layout: str = "") -> Path:
    """Return ``path`` if it is a directory, else raise a :class:`FileNotFoundError` naming it and the layout."""
    path = Path(path)
    if not path.is_dir():
        hint = f"; expected layout: {layout}" if layout else ""
        raise FileNotFoundError(f"{what} not found: {path}{hint}")
    return path


class KeypointDataset(Dataset):
    """Images with ``N`` annotated keypoints each; the base of every labelled reader.

    Args:
        root: directory the image paths are relative to.
        images: image paths, relative to ``root`` (absolute paths are used as given).
        keypoints: ``(M, N, 2)`` ``(x, y)`` pixel coordinates in the *stored* images.
        visible: ``(M, N)`` bool; ``None`` means every point is visible.
        boxes: optional ``(M, 4)`` ``[x0, y0, x1, y1]`` pixel boxes (object or face boxes), passed to
            transforms as ``sample["box"]``.
        transform: a sample transform (see :mod:`contrastive_landmarks.data.transforms`), applied last.
        eye_indices: the two keypoints whose distance normalises the inter-ocular error, if defined.
        names: optional keypoint names.
        flip_pairs: left/right keypoint index pairs that a horizontal flip swaps, if defined (no flip
            augmentation without them).

    A sample is ``{"image": (3, H, W), "keypoints": (N, 2), "visible": (N,), "index": int}``, plus
    ``"box"`` ``(4,)`` when boxes are given (transforms may drop it).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        images: Sequence[str],
        keypoints: Tensor | np.ndarray,
        visible: Tensor | np.ndarray | None = None,
        *,
        boxes: Tensor | np.ndarray | None = None,
        transform: Transform | None = None,
        eye_indices: tuple[int, int] | None = None,
        names: Sequence[str] | None = None,
        flip_pairs: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        self.root = Path(root)
        self.images = [str(p) for p in images]
        self.keypoints = torch.as_tensor(np.asarray(keypoints, dtype=np.float32))
        if self.keypoints.ndim != 3 or self.keypoints.shape[-1] != 2:
            raise ValueError(f"keypoints must be (M, N, 2), got {tuple(self.keypoints.shape)}")
        if self.keypoints.shape[0] != len(self.images):
            raise ValueError(f"{len(self.images)} images but {self.keypoints.shape[0]} keypoint rows")
        if visible is None:
            self.visible = torch.ones(self.keypoints.shape[:2], dtype=torch.bool)
        else:
            self.visible = torch.as_tensor(np.asarray(visible)).bool()
            if self.visible.shape != self.keypoints.shape[:2]:
                raise ValueError(f"visible must be {tuple(self.keypoints.shape[:2])}, got {tuple(self.visible.shape)}")
        self.boxes = None if boxes is None else torch.as_tensor(np.asarray(boxes, dtype=np.float32))
        if self.boxes is not None and self.boxes.shape != (len(self.images), 4):
            raise ValueError(f"boxes must be ({len(self.images)}, 4), got {tuple(self.boxes.shape)}")
        self.transform = transform
        self.eye_indices = eye_indices
        self.names = list(names) if names is not None else None
        self.flip_pairs = tuple((int(a), int(b)) for a, b in flip_pairs) if flip_pairs else None

    @property
    def num_keypoints(self) -> int:
        return int(self.keypoints.shape[1])

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, index: int) -> Path:
        return self.root / self.images[index]

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {type(self).__name__} of {len(self)} samples")
        index = index % len(self)
        path = self.image_path(index)
        if not path.is_file():
            stored = self.images[index]
            relative = "" if Path(stored).is_absolute() else f", {stored!r} relative to {self.root}"
            raise FileNotFoundError(f"image not found: {path} (sample {index}{relative})")
        image = load_image(path)
        self._check_points_inside(index, path, image.shape[-2:])
        sample = {
            "image": image,
            "keypoints": self.keypoints[index].clone(),
            "visible": self.visible[index].clone(),
            "index": index,
        }
        if self.boxes is not None:
            sample["box"] = self.boxes[index].clone()
        return self.transform(sample) if self.transform is not None else sample

    def _check_points_inside(self, index: int, path: Path, size: Sequence[int]) -> None:
        """Refuse a visible keypoint far outside its image (a wrong column, a swapped or scaled coordinate).

        Points up to :data:`OUTSIDE_TOLERANCE` of the image's width / height beyond its edges are
        accepted (DeepLabCut labels, for one, can sit slightly outside).
        """
        height, width = int(size[0]), int(size[1])
        points, visible = self.keypoints[index], self.visible[index]
        margin_x, margin_y = OUTSIDE_TOLERANCE * width, OUTSIDE_TOLERANCE * height
        x, y = points[:, 0], points[:, 1]
        off_x = (x < -0.5 - margin_x) | (x > width - 0.5 + margin_x)
        off_y = (y < -0.5 - margin_y) | (y > height - 0.5 + margin_y)
        outside = visible & torch.isfinite(points).all(-1) & (off_x | off_y)
        if bool(outside.any()):
            k = int(outside.nonzero()[0])
            name = f" ({self.names[k]})" if self.names and k < len(self.names) else ""
            count = int(outside.sum())
            raise ValueError(
                f"{path}: keypoint {k}{name} at (x={float(x[k]):g}, y={float(y[k]):g}) lies far outside the "
                f"{width}x{height} image ({count} such point{'s' if count > 1 else ''} in sample {index}); "
                "check the label file's columns and units (pixels of the stored image), or mark the point "
                "not visible"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, {self.num_keypoints} keypoints, root={str(self.root)!r})"


class KeypointSubset(Dataset):
    """``data[indices[i]]``, keeping the dataset's ``eye_indices``, ``flip_pairs`` and ``names``.

    Args:
        data: any indexable dataset of samples.
        indices: positions in ``data``.
    """

    def __init__(self, data, indices: Sequence[int]) -> None:
        self.data, self.indices = data, [int(i) for i in indices]
        for key in ("eye_indices", "flip_pairs", "names"):
            setattr(self, key, getattr(data, key, None))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        return self.data[self.indices[index]]

    def __repr__(self) -> str:
        return f"KeypointSubset({len(self)} of {self.data!r})"
