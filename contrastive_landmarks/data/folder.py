"""Unlabelled images: a folder (searched recursively) or a list file of paths.

For pretraining and plots. Yields ``{"image": (3, H, W), "index": int}``. Images are decoded with
Pillow (``train``/``viz`` extras).
"""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import Dataset

from .base import Transform, load_image, require_file

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


class ImageFolder(Dataset):
    """Unlabelled images from a folder or a list file.

    Args:
        source: a directory (every image under it, sorted, recursively) or a text file with one
            image path per line (relative to the file's folder, or to ``root``; ``#`` comments and
            blank lines are skipped).
        root: folder list-file paths are relative to.
        transform: sample transform (e.g. ``Resize(96)``).
        extensions: image suffixes accepted when scanning a folder.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        *,
        root: str | os.PathLike | None = None,
        transform: Transform | None = None,
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    ) -> None:
        source = Path(source)
        if source.is_dir():
            self.root = source
            self.images = sorted(
                str(p.relative_to(source)) for p in source.rglob("*") if p.suffix.lower() in extensions and p.is_file()
            )
            if not self.images:
                raise FileNotFoundError(f"no images ({', '.join(extensions)}) under {source}")
        else:
            require_file(source, "image folder or list file", "a directory of images, or a text file of paths")
            self.root = Path(root) if root is not None else source.parent
            lines = [line.strip() for line in source.read_text().splitlines()]
            self.images = [line for line in lines if line and not line.startswith("#")]
            if not self.images:
                raise ValueError(f"{source} lists no images")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, index: int) -> Path:
        return self.root / self.images[index]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        sample = {"image": load_image(self.image_path(index)), "index": int(index)}
        return self.transform(sample) if self.transform is not None else sample
