"""MTFL faces as distributed in ``shared/data/mtfl``: 80×80 crops, 5 landmarks, ``train.csv`` / ``test.csv``.

Layout::

    <root>/train.csv          image,x1..x5,y1..y5   (7,650 LFW + web faces; see below)
    <root>/test.csv           image,x1..x5,y1..y5   (the 2,995 AFLW test faces of the MTFL benchmark)
    <root>/images/...         80×80 RGB JPEGs, paths in the CSVs are relative to <root>

Points: 0 = eye on the image's left, 1 = eye on the image's right, 2 = nose, 3/4 = mouth corners.
The training faces are looser crops than the test faces (median inter-ocular distance 15.0 px vs
23.9 px): ``face_crop=S`` cuts each training face around its landmarks, from the source pixels in one
resize, to an ``S × S`` image framed as the test faces are after
:func:`~contrastive_landmarks.data.transforms.aflw_transform` ``(S)``; ``face_crop_jitter`` adds
scale / shift jitter that spans the test faces' own spread (:data:`TEST_FRAMING_JITTER`), drawn
anew at every read. Images are decoded with Pillow (``train``/``viz`` extras).

The 2,350 ``net_7876/_*.jpg`` rows with landmarks 25-30 px too high were removed from ``train.csv``
upstream on 2026-12-02 (kept aside as ``train_misaligned.csv``, which this reader never opens); a
``train.csv`` that still lists them is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .base import Transform, require_dir
from .csv_table import KeypointCSV
from .transforms import Compose, face_box_crop, paper_resize

__all__ = ["AFLW_SPLIT", "FLIP_PAIRS", "MTFL", "TEST_FRAMING_JITTER", "aflw_split"]

#: Left/right landmark pairs swapped by a horizontal flip: the eyes and the mouth corners.
FLIP_PAIRS = ((0, 1), (3, 4))
#: ``(scale, shift)`` crop jitter spanning the AFLW test faces' framing: uniform log-scale ±0.15 and
#: centre ±0.23 eye-to-mouth distances (std 0.087 and 0.13, measured on ``test.csv``: 0.083 and 0.136).
TEST_FRAMING_JITTER = (0.15, 0.23)
#: The in-domain AFLW protocol: ``test.csv``'s 2,995 AFLW faces split once into train / validation / test.
AFLW_SPLIT = {"train": 1800, "val": 200, "test": 995}


def aflw_split(split: str, seed: int = 0) -> list[int]:
    """Rows of ``test.csv`` in the in-domain AFLW protocol's ``split`` (``"train"``, ``"val"`` or ``"test"``).

    The nearest this data has to the paper's AFLW_M (trained and tested on AFLW): a permutation of the
    2,995 rows by ``torch.Generator().manual_seed(seed)`` (seed 0 for every reported number), cut into
    1,800 / 200 / 995 rows in that order.
    """
    if split not in AFLW_SPLIT:
        raise ValueError(f"split must be one of {list(AFLW_SPLIT)}, got {split!r}")
    order = torch.randperm(sum(AFLW_SPLIT.values()), generator=torch.Generator().manual_seed(seed)).tolist()
    start = 0
    for name, count in AFLW_SPLIT.items():
        if name == split:
            return sorted(order[start : start + count])
        start += count
    raise AssertionError  # pragma: no cover


_LAYOUT = "<root>/train.csv and <root>/test.csv (image,x1..x5,y1..y5) with the images they list under <root>"


class MTFL(KeypointCSV):
    """MTFL faces (80×80, 5 landmarks, eye indices ``(0, 1)``).

    Args:
        root: the folder holding ``train.csv``, ``test.csv`` and ``images/``.
        split: ``"train"`` or ``"test"``.
        transform: sample transform applied after the optional face crop.
        face_crop: ``S`` (pixels) to cut each face around its landmarks at the test framing of an
            ``S``-pixel model input (meant for ``train``; ``True`` is the 80-px framing of the stored
            test crops); ``False`` keeps the stored crops.
        face_crop_jitter: ``(scale, shift)`` jitter of that crop (augmentation; see
            :class:`~contrastive_landmarks.data.transforms.BoxCrop`; :data:`TEST_FRAMING_JITTER`
            spans the test framing); ``(0, 0)`` is deterministic.
        generator: RNG for the jitter.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        transform: Transform | None = None,
        face_crop: bool | int = False,
        face_crop_jitter: tuple[float, float] = (0.0, 0.0),
        generator: torch.Generator | None = None,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        root = require_dir(root, "MTFL folder", _LAYOUT)
        if face_crop:
            size = 80 if face_crop is True else int(face_crop)
            scale = 3.14 if face_crop is True else 3.14 * size / paper_resize(size)
            crop = face_box_crop(
                size,
                scale=scale,
                jitter_scale=face_crop_jitter[0],
                jitter_shift=face_crop_jitter[1],
                generator=generator,
            )
            transform = crop if transform is None else Compose([crop, transform])
        super().__init__(
            Path(root) / f"{split}.csv", root, transform=transform, eye_indices=(0, 1), flip_pairs=FLIP_PAIRS
        )
        if any("_misaligned" in p or "/net_7876/_" in "/" + p for p in self.images):
            raise ValueError(
                f"{root}/{split}.csv lists the misaligned net_7876/_*.jpg rows (landmarks 25-30 px "
                "too high, removed upstream on 2026-12-02); use the current train.csv"
            )
        self.split = split
