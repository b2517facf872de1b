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
scale / shift jitter that spans their spread (:data:`AFLW_FRAMING_JITTER`), drawn
anew at every read. Both framing constants are measured by :func:`face_framing` on the AFLW faces of the in-domain
protocol's *training* split (:func:`aflw_split`), never on the faces any protocol tests on. Images are decoded
with Pillow (``train``/``viz`` extras).

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

__all__ = [
    "AFLW_FRAMING_JITTER",
    "AFLW_FRAMING_SCALE",
    "AFLW_SPLIT",
    "FLIP_PAIRS",
    "MTFL",
    "aflw_split",
    "face_framing",
]

#: Left/right landmark pairs swapped by a horizontal flip: the eyes and the mouth corners.
FLIP_PAIRS = ((0, 1), (3, 4))
#: Side of MTFL's 80×80 AFLW face crops in eye-to-mouth distances (median): ``face_framing`` of the
#: ``aflw_split("train")`` faces gives 3.143 (the other 1,195 faces are never measured).
AFLW_FRAMING_SCALE = 3.14
#: ``(scale, shift)`` crop jitter spanning the AFLW faces' framing: uniform log-scale ±0.14 and centre ±0.24
#: eye-to-mouth distances, whose standard deviations (0.081, 0.139) are the ones ``face_framing`` measures on the
#: ``aflw_split("train")`` faces (0.0817 and 0.138).
AFLW_FRAMING_JITTER = (0.14, 0.24)
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


def face_framing(keypoints: torch.Tensor, size: int = 80) -> tuple[float, tuple[float, float]]:
    """How 5-point faces are framed in their ``size``-pixel crops: ``(scale, (jitter_scale, jitter_shift))``.

    ``scale`` is the median crop side in eye-to-mouth distances (eye midpoint to mouth-corner midpoint), the
    jitter the half-widths of the uniform draws (``√3`` standard deviations) of :class:`~.transforms.BoxCrop`
    that match the spread of the log side and of the offset of the crop centre from the points' mean (both axes
    pooled, in eye-to-mouth distances).

    Args:
        keypoints: ``(N, 5, 2)`` pixel coordinates (eyes ``0, 1``, mouth corners ``3, 4``) in ``size``-pixel crops.
    """
    if keypoints.ndim != 3 or keypoints.shape[1:] != (5, 2):
        raise ValueError(f"keypoints must be (N, 5, 2) face points, got {tuple(keypoints.shape)}")
    if len(keypoints) < 2:
        raise ValueError(f"face_framing needs at least 2 faces to measure a spread, got {len(keypoints)}")
    points = keypoints.double()
    span = (points[:, [3, 4]].mean(1) - points[:, [0, 1]].mean(1)).norm(dim=-1)
    sides = size / span
    offsets = ((size - 1) / 2 - points.mean(1)) / span[:, None]
    root3 = 3**0.5
    return float(sides.median()), (float(sides.log().std() * root3), float(offsets.flatten().std() * root3))


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
            :class:`~contrastive_landmarks.data.transforms.BoxCrop`; :data:`AFLW_FRAMING_JITTER`
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
            scale = AFLW_FRAMING_SCALE * (1 if face_crop is True else size / paper_resize(size))
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
