"""Unlabelled images for pretraining: several sources, per-source pre-crop, optional in-memory cache.

A *source* is a folder (every ``*.jpg``/``*.jpeg``/``*.png`` under it, recursively, sorted), a list
file (one path per line, or a CSV whose first column holds the paths, e.g. MTFL's ``train.csv``;
paths are relative to the file's folder unless ``root`` is given), or a video (``.mp4``, ``.avi``, ...:
its frames, every ``every``-th, at most ``max_frames``; the ``[video]`` extra). A source can carry a
pre-crop, written in a source string as ``PATH;crop=TOP,LEFT,HEIGHT,WIDTH`` or ``PATH;crop=celeba`` (rows
30..208 of a 178x218 CelebA aligned image, the authors' "move head up" crop) and ``;root=DIR``, and a
video ``;every=N;max_frames=M``. ``crop=auto`` (the faces preset's default) applies the CelebA crop to
exactly-178x218 images only.

:class:`PretrainImages` decodes, pre-crops and squashes every image to ``size x size`` and returns
``uint8`` tensors (cheap to batch, cache and ship between processes); :func:`cache_images` decodes a
whole dataset once into one ``(N, 3, size, size)`` uint8 tensor, on which the batched augmentations
of :mod:`contrastive_landmarks.train.moco_views` run.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..data.video import VIDEO_EXTENSIONS

__all__ = ["CELEBA_CROP", "ImageSource", "PretrainImages", "cache_images", "list_images"]

EXTENSIONS = (".jpg", ".jpeg", ".png")
#: ``(top, left, height, width)`` of the authors' CelebA crop: rows 30..208 of the 178x218 aligned image.
CELEBA_CROP: tuple[int, int, int, int] = (30, 0, 178, 178)
_CELEBA_SIZE = (178, 218)  # (W, H) of img_align_celeba
_HEADER_NAMES = {"image", "images", "path", "paths", "file", "filename", "name"}


@dataclass(frozen=True)
class ImageSource:
    """One set of images and how to pre-crop them.

    Attributes:
        path: a folder (searched recursively) or a list file (``.txt``/``.csv``).
        root: folder the list file's paths are relative to (default: the list file's folder).
        crop: ``None``, ``"auto"`` (CelebA crop for 178x218 images only), ``"celeba"`` or
            ``(top, left, height, width)`` pixels.
    """

    path: str
    root: str | None = None
    crop: str | tuple[int, int, int, int] | None = None
    every: int = 1
    max_frames: int | None = None

    @property
    def is_video(self) -> bool:
        """Whether the source is a video file (by its suffix: ``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ``.m4v``)."""
        return Path(self.path).suffix.lower() in VIDEO_EXTENSIONS

    @classmethod
    def parse(cls, spec: str | os.PathLike | ImageSource, default_crop: str | None = None) -> ImageSource:
        """``"PATH[;crop=TOP,LEFT,HEIGHT,WIDTH|celeba|auto|none][;root=DIR][;every=N][;max_frames=M]"`` -> source."""
        if isinstance(spec, ImageSource):
            return spec
        parts = str(spec).split(";")
        path, options = parts[0].strip(), {}
        for part in parts[1:]:
            key, sep, value = part.partition("=")
            if not sep or key.strip() not in ("crop", "root", "every", "max_frames"):
                raise ValueError(
                    f"bad image source option {part!r} in {spec!r}; expected crop=..., root=..., every=N or "
                    "max_frames=M"
                )
            options[key.strip()] = value.strip()
        counts = {}
        for key in ("every", "max_frames"):
            if key in options:
                try:
                    counts[key] = int(options[key])
                except ValueError:
                    raise ValueError(f"{key} must be an integer, got {options[key]!r} in {spec!r}") from None
        if counts and Path(path).suffix.lower() not in VIDEO_EXTENSIONS:
            raise ValueError(f"every= and max_frames= are for videos ({', '.join(VIDEO_EXTENSIONS)}), not {path}")
        if counts.get("every", 1) < 1 or counts.get("max_frames", 1) < 1:
            raise ValueError(f"every and max_frames must be >= 1 in {spec!r}")
        crop: str | tuple[int, int, int, int] | None = options.get("crop", default_crop)
        if isinstance(crop, str):
            if crop.lower() == "none":
                crop = None
            elif crop.lower() not in ("auto", "celeba"):
                try:
                    values = tuple(int(v) for v in crop.split(","))
                except ValueError:
                    values = ()
                if len(values) != 4 or min(values) < 0 or values[2] == 0 or values[3] == 0:
                    raise ValueError(
                        f"crop must be TOP,LEFT,HEIGHT,WIDTH (4 integers), celeba, auto or none; "
                        f"got {crop!r} in {spec!r}"
                    )
                crop = values
            else:
                crop = crop.lower()
        if crop in ("auto", "celeba") and Path(path).suffix.lower() in VIDEO_EXTENSIONS:
            crop = None if crop == "auto" else crop
        return cls(path, options.get("root"), crop, counts.get("every", 1), counts.get("max_frames"))

    def frames(self) -> list[int]:
        """The frame numbers a video source contributes (opens the video's packet table, decodes nothing)."""
        from ..data.video import video_info

        path = Path(self.path)
        if not path.is_file():
            raise FileNotFoundError(f"video not found: {path}")
        chosen = range(0, video_info(path).num_frames, self.every)
        chosen = chosen if self.max_frames is None else chosen[: self.max_frames]
        if not chosen:
            raise ValueError(f"video {path} has no frames")
        return list(chosen)

    def files(self) -> list[Path]:
        """The image paths of this source (checked to exist for folders; list files are trusted)."""
        path = Path(self.path)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
            if not found:
                raise FileNotFoundError(f"no images ({', '.join(EXTENSIONS)}) found under folder {path}")
            return found
        if not path.exists():
            raise FileNotFoundError(f"image source not found: {path} (expected a folder of images or a list file)")
        root = Path(self.root) if self.root is not None else path.parent
        if not root.is_dir():
            raise FileNotFoundError(f"root folder of list file {path} not found: {root}")
        return [root / name for name in _read_list(path)]


def _read_list(path: Path) -> list[str]:
    with open(path, newline="") as handle:
        if path.suffix.lower() == ".csv":
            rows = [row[0].strip() for row in csv.reader(handle) if row and row[0].strip()]
        else:
            rows = [line.strip() for line in handle]
    rows = [r for r in rows if r and not r.startswith("#")]
    if rows and rows[0].lower() in _HEADER_NAMES:
        rows = rows[1:]
    if not rows:
        raise ValueError(f"list file {path} names no images")
    return rows


Crop = str | tuple[int, int, int, int] | None


def list_images(
    sources: Sequence[str | os.PathLike | ImageSource], default_crop: str | None = None
) -> list[tuple[Path, Crop, int | None]]:
    """``(path, crop, frame)`` for every image of every source, in order (``frame`` is ``None`` but for videos)."""
    if isinstance(sources, (str, os.PathLike, ImageSource)):
        sources = [sources]
    if not sources:
        raise ValueError("no image sources given")
    items: list[tuple[Path, Crop, int | None]] = []
    for spec in sources:
        source = ImageSource.parse(spec, default_crop)
        if source.is_video:
            items.extend((Path(source.path), source.crop, frame) for frame in source.frames())
        else:
            items.extend((file, source.crop, None) for file in source.files())
    return items


def _crop_box(crop, width: int, height: int, path: Path) -> tuple[int, int, int, int] | None:
    if crop is None:
        return None
    if crop == "auto":
        if (width, height) != _CELEBA_SIZE:
            return None
        crop = CELEBA_CROP
    elif crop == "celeba":
        crop = CELEBA_CROP
    top, left, h, w = crop
    if top + h > height or left + w > width:
        raise ValueError(
            f"crop (top={top}, left={left}, height={h}, width={w}) does not fit image {path} of size {width}x{height}"
        )
    return left, top, left + w, top + h


class PretrainImages(Dataset):
    """Images of several sources, pre-cropped and squashed to ``size x size``, as ``uint8``.

    Args:
        sources: folders / list files / :class:`ImageSource` / source strings (see module docstring).
        size: output side (the augmentation's input side, e.g. 136 for faces at 96 px).
        default_crop: crop for sources that name none (``"auto"`` for faces).

    Returns per item:
        ``{"image": (3, size, size) uint8, "index": int}`` (uint8 rather than the library's float
        images: this dataset feeds the batched augmentations, which take uint8).
    """

    def __init__(
        self, sources: Sequence[str | os.PathLike | ImageSource], size: int, default_crop: str | None = None
    ) -> None:
        if int(size) < 1:
            raise ValueError(f"size must be positive, got {size}")
        self.size = int(size)
        self.items = list_images(sources, default_crop)
        self._videos: dict[Path, object] = {}

    def __getstate__(self) -> dict:  # open video decoders do not pickle (DataLoader workers open their own)
        return {**self.__dict__, "_videos": {}}

    def _decode(self, path: Path, frame: int | None):
        from PIL import Image

        if frame is None:
            if not path.is_file():
                raise FileNotFoundError(f"image not found: {path}")
            with Image.open(path) as image:
                return image.convert("RGB")
        if path not in self._videos:
            from ..data.video import VideoFrames

            self._videos[path] = VideoFrames(path)
        pixels = self._videos[path][frame]["image"]  # (3, H, W) float in [0, 1]
        return Image.fromarray(pixels.mul(255).round_().byte().permute(1, 2, 0).numpy())

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> Tensor:
        """Decode image ``index`` -> ``(3, size, size)`` uint8."""
        from PIL import Image

        path, crop, frame = self.items[index]
        image = self._decode(path, frame)
        box = _crop_box(crop, image.width, image.height, path)
        if box is not None:
            image = image.crop(box)
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        return {"image": self.load(index), "index": int(index)}


def cache_images(
    dataset: PretrainImages, *, num_workers: int = 0, batch_size: int = 64, progress: bool = False
) -> Tensor:
    """Decode every image of ``dataset`` once: ``(N, 3, size, size)`` uint8 (``N * 3 * size**2`` bytes)."""
    out = torch.empty(len(dataset), 3, dataset.size, dataset.size, dtype=torch.uint8)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="decoding images", unit="batch")
    for batch in loader:
        out[batch["index"]] = batch["image"]
    return out
