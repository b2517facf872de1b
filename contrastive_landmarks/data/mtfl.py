"""MTFL faces as distributed in ``shared/data/mtfl``: 80×80 crops, 5 landmarks, ``train.csv`` / ``test.csv``.

Layout::

    <root>/train.csv          image,x1..x5,y1..y5   (7,650 LFW + web faces; see below)
    <root>/test.csv           image,x1..x5,y1..y5   (the 2,995 AFLW test faces of the MTFL benchmark)
    <root>/images/...         80×80 RGB JPEGs, paths in the CSVs are relative to <root>

Points: 0 = eye on the image's left, 1 = eye on the image's right, 2 = nose, 3/4 = mouth corners.
The training faces are looser crops than the test faces (median inter-ocular distance 15.0 px vs
23.9 px). ``face_crop=S`` cuts each face around its landmarks, from the source pixels in one resize, to
an ``S × S`` image at a fixed framing measured on the *training* faces only (:data:`TRAIN_FRAMING_SCALE`:
the median training face's side / eye-to-mouth distance), as
:func:`~contrastive_landmarks.data.transforms.aflw_transform` ``(S)`` would show such an 80-px crop;
``face_crop_jitter`` adds scale / shift jitter spanning the training faces' own spread of framing
(:data:`FRAMING_JITTER`), drawn anew at every read. No test label enters either constant
(:func:`training_framing` recomputes them; issue 23: they used to be the test faces' 3.14 and
(0.15, 0.23)). Images are decoded with Pillow (``train``/``viz`` extras).

The 2,350 ``net_7876/_*.jpg`` rows with landmarks 25-30 px too high were removed from ``train.csv``
upstream on 2026-12-02 (kept aside as ``train_misaligned.csv``, which this reader never opens); a
``train.csv`` that still lists them is refused.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from .base import Transform, require_dir
from .csv_table import KeypointCSV, read_keypoint_csv
from .transforms import Compose, face_box_crop, paper_resize

__all__ = [
    "AFLW_SPLIT",
    "FLIP_PAIRS",
    "FRAMING_JITTER",
    "MTFL",
    "TEST_FRAMING_JITTER",
    "TRAIN_FRAMING_SCALE",
    "aflw_split",
    "training_framing",
]

#: Left/right landmark pairs swapped by a horizontal flip: the eyes and the mouth corners.
FLIP_PAIRS = ((0, 1), (3, 4))
#: Side of an MTFL face crop in eye-to-mouth distances: the median over ``train.csv``'s 7,650 training faces
#: of 80 px / their eye-to-mouth distance (4.92: median distance 16.26 px), :func:`training_framing`. No
#: test label enters it (issue 23; it was 3.14, the *test* faces' framing: test median 25.5 px).
TRAIN_FRAMING_SCALE = 4.92
#: ``(scale, shift)`` crop jitter spanning the training faces' own spread of framing: uniform log-scale
#: ±0.34 and centre ±0.20 eye-to-mouth distances, i.e. √3 × the std over ``train.csv`` of log(side /
#: eye-to-mouth) (0.198) and of the image centre's offset from the landmarks' mean (0.118, RMS of x and
#: y), :func:`training_framing`. It was (0.15, 0.23), measured on ``test.csv`` (issue 23).
FRAMING_JITTER = (0.34, 0.20)
#: The old name of :data:`FRAMING_JITTER`, kept for callers; no longer measured on the test faces.
TEST_FRAMING_JITTER = FRAMING_JITTER
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


def training_framing(root: str | os.PathLike) -> dict[str, float]:
    """Measure the face-crop framing on MTFL's *training* faces (``<root>/train.csv`` only; no test label).

    Each training image is itself a square face crop (80 px). Per face: its side over the eye-to-mouth
    distance (midpoint of points 0, 1 to midpoint of points 3, 4) and the image centre's offset from the
    mean of its 5 landmarks in those distances. Returns ``scale`` (median side / distance: the source of
    :data:`TRAIN_FRAMING_SCALE`), ``jitter_scale`` (√3 × std of log(side / distance)) and ``jitter_shift``
    (√3 × the RMS over x and y of the offset's std): the bounds of uniform jitter with the training faces'
    spread (:data:`FRAMING_JITTER`), with the raw ``log_scale_std`` and ``shift_std``.
    """
    import numpy as np

    _, points, _ = read_keypoint_csv(Path(root) / "train.csv")
    points, side = points.astype(np.float64), 80.0
    eyes, mouth = points[:, [0, 1]].mean(1), points[:, [3, 4]].mean(1)
    dist = np.linalg.norm(eyes - mouth, axis=-1)
    offset = ((side - 1) / 2 - points.mean(1)) / dist[:, None]  # pixel centres 0 .. 79
    log_scale_std = float(np.log(side / dist).std())
    shift_std = float(math.sqrt(float((offset.std(0) ** 2).mean())))
    return {
        "scale": float(np.median(side / dist)),
        "jitter_scale": math.sqrt(3) * log_scale_std,
        "jitter_shift": math.sqrt(3) * shift_std,
        "log_scale_std": log_scale_std,
        "shift_std": shift_std,
        "faces": len(dist),
    }


_LAYOUT = "<root>/train.csv and <root>/test.csv (image,x1..x5,y1..y5) with the images they list under <root>"


class MTFL(KeypointCSV):
    """MTFL faces (80×80, 5 landmarks, eye indices ``(0, 1)``).

    Args:
        root: the folder holding ``train.csv``, ``test.csv`` and ``images/``.
        split: ``"train"`` or ``"test"``.
        transform: sample transform applied after the optional face crop.
        face_crop: ``S`` (pixels) to cut each face around its landmarks at the training faces' framing
            (:data:`TRAIN_FRAMING_SCALE`) of an ``S``-pixel model input, i.e. the central ``S`` of
            :func:`~contrastive_landmarks.data.transforms.paper_resize` ``(S)`` (meant for ``train``;
            ``True`` is the 80-px framing itself); ``False`` keeps the stored crops.
        face_crop_jitter: ``(scale, shift)`` jitter of that crop (augmentation; see
            :class:`~contrastive_landmarks.data.transforms.BoxCrop`; :data:`FRAMING_JITTER` spans the
            training faces' framing); ``(0, 0)`` is deterministic.
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
            scale = TRAIN_FRAMING_SCALE * (1 if face_crop is True else size / paper_resize(size))
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
