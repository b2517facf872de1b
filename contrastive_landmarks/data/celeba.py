"""Aligned CelebA and MAFL (5 face landmarks), in the official CelebA layout plus the MAFL lists.

Layout (``root`` is the CelebA folder)::

    <root>/Img/img_align_celeba/000001.jpg ...        (or Img/img_align_celeba_hq/, DVE's mirror)
    <root>/Anno/list_landmarks_align_celeba.txt       count line, header line, then
                                                      "<name> lefteye_x lefteye_y righteye_x ... rightmouth_y"
    <root>/Eval/list_eval_partition.txt               "<name> <0|1|2>"  (train / val / test)
    <root>/MAFL/training.txt, MAFL/testing.txt        one image name per line (19,000 / 1,000)

Splits as in the paper: MAFL regression uses the 19,000 / 1,000 lists; unlabelled pretraining uses
CelebA partition 0 minus every MAFL image. Preprocessing (``transform``, default
:func:`~contrastive_landmarks.data.transforms.celeba_transform`): rows 30..208 (178²) -> 136 ->
border crop 20 -> 96². Landmarks are used as given (no -1 offset, as the authors). Images are decoded
with Pillow (``train``/``viz`` extras).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np
from torch.utils.data import Dataset

from .base import KeypointDataset, Transform, load_image, require_dir, require_file
from .transforms import celeba_transform

__all__ = ["MAFL", "CelebA", "read_celeba_landmarks"]

_LAYOUT = (
    "<root>/Img/img_align_celeba[_hq]/, <root>/Anno/list_landmarks_align_celeba.txt, "
    "<root>/Eval/list_eval_partition.txt, <root>/MAFL/{training,testing}.txt"
)
_DEFAULT = object()


def _image_dir(root: Path) -> Path:
    for name in ("img_align_celeba", "img_align_celeba_hq"):
        if (root / "Img" / name).is_dir():
            return root / "Img" / name
    raise FileNotFoundError(f"CelebA images not found under {root / 'Img'}; expected layout: {_LAYOUT}")


def _read_names(path: Path) -> list[str]:
    return [
        line.split()[0] for line in require_file(path, "image list", _LAYOUT).read_text().splitlines() if line.strip()
    ]


def read_celeba_landmarks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``list_landmarks_align_celeba.txt`` as ``{name: (5, 2) float32}``."""
    lines = require_file(path, "CelebA landmark file", _LAYOUT).read_text().splitlines()
    table = {}
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 11:
            raise ValueError(f"{path}:{number}: expected a name and 10 numbers, got {len(fields)} fields")
        table[fields[0]] = np.asarray(fields[1:], dtype=np.float32).reshape(5, 2)
    return table


class MAFL(KeypointDataset):
    """MAFL: aligned CelebA faces with 5 landmarks, 19,000 train / 1,000 test (eye indices ``(0, 1)``).

    Args:
        root: the CelebA folder (see the module docstring).
        split: ``"train"`` or ``"test"``.
        transform: sample transform; default the paper's 96² preprocessing, ``None`` for raw 178×218.
    """

    def __init__(
        self, root: str | os.PathLike, split: str = "train", *, transform: Transform | None = _DEFAULT
    ) -> None:  # type: ignore[assignment]
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        root = require_dir(root, "CelebA folder", _LAYOUT)
        images = _image_dir(root)
        names = _read_names(root / "MAFL" / ("training.txt" if split == "train" else "testing.txt"))
        table = read_celeba_landmarks(root / "Anno" / "list_landmarks_align_celeba.txt")
        missing = [n for n in names if n not in table]
        if missing:
            raise ValueError(f"{len(missing)} MAFL images have no CelebA landmarks, e.g. {missing[:3]}")
        keypoints = np.stack([table[n] for n in names])
        super().__init__(
            images,
            names,
            keypoints,
            transform=celeba_transform() if transform is _DEFAULT else transform,
            eye_indices=(0, 1),
            names=["left_eye", "right_eye", "nose", "left_mouth", "right_mouth"],
        )
        self.split = split


class CelebA(Dataset):
    """Unlabelled aligned CelebA for pretraining: partition 0 minus the MAFL images (``split="pretrain"``),
    or a whole partition (``"train"``, ``"val"``, ``"test"``). Yields ``{"image", "index"}``.

    Args:
        root: the CelebA folder (``Img/`` and ``Eval/``; ``MAFL/`` for ``pretrain``).
        transform: sample transform; default the paper's 96² preprocessing.
    """

    _PARTITIONS: ClassVar[dict[str, int]] = {"pretrain": 0, "train": 0, "val": 1, "test": 2}

    def __init__(
        self, root: str | os.PathLike, split: str = "pretrain", *, transform: Transform | None = _DEFAULT
    ) -> None:  # type: ignore[assignment]
        if split not in self._PARTITIONS:
            raise ValueError(f"split must be one of {sorted(self._PARTITIONS)}, got {split!r}")
        root = require_dir(root, "CelebA folder", _LAYOUT)
        self.image_dir = _image_dir(root)
        partition = require_file(root / "Eval" / "list_eval_partition.txt", "CelebA partition file", _LAYOUT)
        wanted = self._PARTITIONS[split]
        names = [
            f[0]
            for f in (line.split() for line in partition.read_text().splitlines())
            if len(f) == 2 and int(f[1]) == wanted
        ]
        if split == "pretrain":
            mafl = set(_read_names(root / "MAFL" / "training.txt")) | set(_read_names(root / "MAFL" / "testing.txt"))
            names = [n for n in names if n not in mafl]
        self.images = names
        self.transform = celeba_transform() if transform is _DEFAULT else transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        sample = {"image": load_image(self.image_dir / self.images[index]), "index": int(index)}
        return self.transform(sample) if self.transform is not None else sample
