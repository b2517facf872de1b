"""MTFL faces as distributed in ``shared/data/mtfl``: 80×80 crops, 5 landmarks, ``train.csv`` / ``test.csv``.

Layout::

    <root>/train.csv          image,x1..x5,y1..y5   (10,000 LFW + web faces)
    <root>/test.csv           image,x1..x5,y1..y5   (the 2,995 AFLW test faces of the MTFL benchmark)
    <root>/images/...         80×80 RGB JPEGs, paths in the CSVs are relative to <root>

Points: 0 = eye on the image's left, 1 = eye on the image's right, 2 = nose, 3/4 = mouth corners.
The training faces are looser crops than the test faces (median inter-ocular distance 15.0 px vs
23.9 px): ``face_crop=True`` crops each training face around its landmarks to the test framing
(:func:`~contrastive_landmarks.data.transforms.face_box_crop`), which matters a lot for
train-on-train / test-on-test regression. Images are decoded with Pillow (``train``/``viz`` extras).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .base import Transform, require_dir
from .csv_table import KeypointCSV
from .transforms import Compose, face_box_crop

__all__ = ["MTFL"]

_LAYOUT = "<root>/train.csv and <root>/test.csv (image,x1..x5,y1..y5) with the images they list under <root>"


class MTFL(KeypointCSV):
    """MTFL faces (80×80, 5 landmarks, eye indices ``(0, 1)``).

    Args:
        root: the folder holding ``train.csv``, ``test.csv`` and ``images/``.
        split: ``"train"`` or ``"test"``.
        transform: sample transform applied after the optional face crop.
        face_crop: crop each face around its landmarks to the test framing (meant for ``train``).
        face_crop_jitter: ``(scale, shift)`` jitter of that crop (augmentation; see
            :class:`~contrastive_landmarks.data.transforms.BoxCrop`); ``(0, 0)`` is deterministic.
        generator: RNG for the jitter.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        transform: Transform | None = None,
        face_crop: bool = False,
        face_crop_jitter: tuple[float, float] = (0.0, 0.0),
        generator: torch.Generator | None = None,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        root = require_dir(root, "MTFL folder", _LAYOUT)
        if face_crop:
            crop = face_box_crop(80, jitter_scale=face_crop_jitter[0], jitter_shift=face_crop_jitter[1],
                                 generator=generator)
            transform = crop if transform is None else Compose([crop, transform])
        super().__init__(Path(root) / f"{split}.csv", root, transform=transform, eye_indices=(0, 1))
        self.split = split
