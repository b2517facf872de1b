"""AFLW in the two versions of the paper: AFLW_M (the MTFL crops) and AFLW_R (the recrop of Zhang et al.).

**AFLW_M** (:class:`AFLWM`), the authors' ``aflw-mtfl`` layout::

    <root>/aflw_cropped/facedata_cropped.csv   header row; columns image_file, set, crop_file, and the
                                               5 landmarks as interleaved 1-based (x, y) in columns 4..13;
                                               training rows have set == 1 (10,122)
    <root>/aflw_cropped/<crop_file>            150×150 training crops
    <root>/MTFL/testing.txt                    "<path> x1..x5 y1..y5 <attributes...>", 1-based, whitespace
                                               separated (2,995 AFLW faces); '\\' in paths is read as '/'
    <root>/MTFL/<path>                         150×150 test crops

Coordinates are converted from 1-based to 0-based pixels.

**AFLW_R** (:class:`AFLWR`), ``aflw_release-2``::

    <root>/aflw_{train,test}_images.txt        one image path per line, relative to <root>/output/
    <root>/aflw_{train,test}_keypoints.mat     'gt' (M, 5, 2) in (y, x) order, 'hw' (M, 2) image sizes
    <root>/output/<path>

Reading the ``.mat`` files needs SciPy (the ``dev`` extra, or ``pip install scipy``); it is imported
only by :class:`AFLWR`. Default preprocessing (both): resize to 136², border crop 20 -> 96². Images are
decoded with Pillow (``train``/``viz`` extras).
"""

from __future__ import annotations

import csv
import os

import numpy as np
import torch

from .base import KeypointDataset, Transform, require_dir, require_file
from .transforms import aflw_transform, resize_points

__all__ = ["AFLWM", "AFLWR", "load_mat"]

_DEFAULT = object()
_M_LAYOUT = (
    "<root>/aflw_cropped/facedata_cropped.csv (+ the crops it lists) and <root>/MTFL/testing.txt (+ the MTFL images)"
)
_R_LAYOUT = "<root>/aflw_{train,test}_images.txt, <root>/aflw_{train,test}_keypoints.mat ('gt', 'hw'), <root>/output/"
_NAMES = ["left_eye", "right_eye", "nose", "left_mouth", "right_mouth"]


def load_mat(path: str | os.PathLike) -> dict:
    """Read a MATLAB ``.mat`` file with SciPy (imported here; an ImportError names the extra)."""
    try:
        from scipy.io import loadmat
    except ImportError as error:  # pragma: no cover
        raise ImportError("reading .mat files needs SciPy: pip install scipy (or the [dev] extra)") from error
    return loadmat(str(path), squeeze_me=True, struct_as_record=False)


class AFLWM(KeypointDataset):
    """AFLW_M: 10,122 training / 2,995 test faces with 5 landmarks (eye indices ``(0, 1)``).

    Args:
        root: the ``aflw-mtfl`` folder (see the module docstring).
        split: ``"train"`` or ``"test"``.
        transform: default resize 136 + border 20 (96²); ``None`` for the raw 150² crops.
    """

    def __init__(
        self, root: str | os.PathLike, split: str = "train", *, transform: Transform | None = _DEFAULT
    ) -> None:  # type: ignore[assignment]
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        root = require_dir(root, "AFLW_M folder", _M_LAYOUT)
        if split == "train":
            table = require_file(root / "aflw_cropped" / "facedata_cropped.csv", "AFLW_M training table", _M_LAYOUT)
            with open(table, newline="") as handle:
                rows = list(csv.reader(handle))
            header = rows[0]
            for column in ("set", "crop_file"):
                if column not in header:
                    raise ValueError(f"{table}: no {column!r} column in the header {header}; expected {_M_LAYOUT}")
            set_col, file_col = header.index("set"), header.index("crop_file")
            rows = [r for r in rows[1:] if r and int(float(r[set_col])) == 1]
            images = [r[file_col] for r in rows]
            keypoints = np.asarray([[float(v) for v in r[4:14]] for r in rows], dtype=np.float32).reshape(-1, 5, 2)
            image_root = root / "aflw_cropped"
        else:
            listing = require_file(root / "MTFL" / "testing.txt", "MTFL test list", _M_LAYOUT)
            images, keypoints = [], []
            for number, line in enumerate(listing.read_text().splitlines(), start=1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) < 11:
                    raise ValueError(f"{listing}:{number}: expected '<path> x1..x5 y1..y5 ...', got {line!r}")
                images.append(fields[0].replace("\\", "/"))
                values = np.asarray(fields[1:11], dtype=np.float32)
                keypoints.append(np.stack([values[:5], values[5:]], axis=-1))
            keypoints = np.asarray(keypoints, dtype=np.float32)
            image_root = root / "MTFL"
        super().__init__(
            image_root,
            images,
            keypoints - 1.0,
            transform=aflw_transform() if transform is _DEFAULT else transform,
            eye_indices=(0, 1),
            names=_NAMES,
        )
        self.split = split


class AFLWR(KeypointDataset):
    """AFLW_R: Zhang et al.'s recrop, 10,122 training / 2,991 test faces, 5 landmarks (eye indices ``(0, 1)``).

    Args:
        root: the ``aflw_release-2`` folder (see the module docstring).
        split: ``"train"`` or ``"test"``.
        transform: default resize to 136² (squash) + border 20 (96²); ``None`` for the stored images.
        minival: with ``split="train"``, ``"train"`` keeps the first 90 %, ``"val"`` the last 10 %
            (the authors' ``use_minival``); ``None`` keeps all.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        transform: Transform | None = _DEFAULT,
        minival: str | None = None,
    ) -> None:  # type: ignore[assignment]
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        root = require_dir(root, "AFLW_R folder", _R_LAYOUT)
        listing = require_file(root / f"aflw_{split}_images.txt", "AFLW_R image list", _R_LAYOUT)
        images = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        mat = load_mat(require_file(root / f"aflw_{split}_keypoints.mat", "AFLW_R keypoint file", _R_LAYOUT))
        if "gt" not in mat:
            raise ValueError(f"{root / f'aflw_{split}_keypoints.mat'} has no 'gt' array; expected {_R_LAYOUT}")
        gt = np.asarray(mat["gt"], dtype=np.float32).reshape(-1, 5, 2)[..., ::-1]  # (y, x) -> (x, y)
        if len(gt) != len(images):
            raise ValueError(f"{len(images)} AFLW_R images listed but {len(gt)} keypoint rows")
        if minival is not None:
            if split != "train" or minival not in ("train", "val"):
                raise ValueError("minival must be None, or 'train'/'val' with split='train'")
            cut = round(0.9 * len(images))
            keep = slice(0, cut) if minival == "train" else slice(cut, None)
            images, gt = images[keep], gt[keep]
        hw = np.asarray(mat["hw"], dtype=np.float32).reshape(-1, 2) if "hw" in mat else None
        if minival is not None:
            hw = None if hw is None else hw[keep]
        super().__init__(
            root / "output", images, np.ascontiguousarray(gt), transform=None, eye_indices=(0, 1), names=_NAMES
        )
        self.sizes = None if hw is None else torch.as_tensor(hw)
        self.split = split
        self.transform = aflw_transform() if transform is _DEFAULT else transform

    def _check_points_inside(self, index: int, path, size) -> None:
        # 'gt' is given in an image of size 'hw' (when known), not in the stored image
        super()._check_points_inside(index, path, size if self.sizes is None else self.sizes[index].tolist())

    def __getitem__(self, index: int) -> dict:
        transform, self.transform = self.transform, None
        try:
            sample = super().__getitem__(index)
        finally:
            self.transform = transform
        if self.sizes is not None:  # 'gt' is given in an image of size 'hw'; map it to the stored image
            h, w = (float(v) for v in self.sizes[sample["index"]])
            actual = tuple(sample["image"].shape[-2:])
            if (h, w) != (float(actual[0]), float(actual[1])):
                sample["keypoints"] = resize_points(sample["keypoints"], (h, w), actual)
        return transform(sample) if transform is not None else sample
