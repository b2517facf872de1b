"""Dataset readers and keypoint-exact transforms (one module per format family).

Every reader yields the sample contract of ``docs/design.md``: ``{"image": (3, H, W) float in [0, 1],
"keypoints": (N, 2) (x, y) pixels, "visible": (N,) bool, "index": int}`` (unlabelled readers:
``image`` and ``index``). Images are decoded with Pillow, part of the ``train``/``viz``/``dev``
extras; ``.mat`` files (AFLW_R, 300W boxes) need SciPy. Both are imported only when used.

| reader | format |
|---|---|
| :class:`MAFL`, :class:`CelebA` | aligned CelebA + MAFL lists (paper's 96² face preprocessing) |
| :class:`AFLWM`, :class:`AFLWR` | the authors' AFLW_M (MTFL) and AFLW_R (recrop, ``.mat``) layouts |
| :class:`ThreeHundredW`, :class:`PtsFolder` | 300W (``.pts`` + box ``.mat``), any folder of ``.pts`` |
| :class:`CUB` | CUB-200-2011 ``parts/part_locs.txt`` + split lists |
| :class:`MTFL` | ``train.csv`` / ``test.csv`` 80×80 faces (``shared/data/mtfl``) |
| :class:`KeypointCSV` | ``image,x1..xN,y1..yN[,v1..vN]`` or ``image,<name>_x,<name>_y,...`` |
| :class:`COCOKeypoints` | COCO-keypoints JSON (mmpose and most animal datasets) |
| :class:`DLCProject` | a DeepLabCut project (``config.yaml`` + ``labeled-data/*/CollectedData_*.csv``) |
| :class:`ImageFolder` | unlabelled folder or list file |
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:  # imported on first use otherwise (``import contrastive_landmarks.data`` is cheap)
    from .aflw import AFLWM, AFLWR
    from .base import KeypointDataset, KeypointSubset, load_image
    from .celeba import MAFL, CelebA
    from .coco import COCOKeypoints
    from .csv_table import KeypointCSV, flip_pairs_from_names, read_keypoint_csv
    from .cub import CUB
    from .dlc import DLCProject, dlc_split, read_dlc_config, read_dlc_labels
    from .folder import ImageFolder
    from .mtfl import MTFL
    from .registry import DATASETS, by_name
    from .threehundredw import PtsFolder, ThreeHundredW, read_pts
    from .transforms import (
        BorderCrop,
        BoxCrop,
        CenterCrop,
        Compose,
        Crop,
        LandmarkBox,
        Letterbox,
        Resize,
        aflw_transform,
        celeba_transform,
        face_box_crop,
        squash_transform,
        threehundredw_transform,
    )

#: public name -> the module that defines it
_EXPORTS = {
    "AFLWM": "aflw",
    "AFLWR": "aflw",
    "KeypointDataset": "base",
    "KeypointSubset": "base",
    "load_image": "base",
    "MAFL": "celeba",
    "CelebA": "celeba",
    "COCOKeypoints": "coco",
    "KeypointCSV": "csv_table",
    "flip_pairs_from_names": "csv_table",
    "read_keypoint_csv": "csv_table",
    "CUB": "cub",
    "DLCProject": "dlc",
    "dlc_split": "dlc",
    "read_dlc_config": "dlc",
    "read_dlc_labels": "dlc",
    "ImageFolder": "folder",
    "MTFL": "mtfl",
    "DATASETS": "registry",
    "by_name": "registry",
    "PtsFolder": "threehundredw",
    "ThreeHundredW": "threehundredw",
    "read_pts": "threehundredw",
    "BorderCrop": "transforms",
    "BoxCrop": "transforms",
    "CenterCrop": "transforms",
    "Compose": "transforms",
    "Crop": "transforms",
    "LandmarkBox": "transforms",
    "Letterbox": "transforms",
    "Resize": "transforms",
    "aflw_transform": "transforms",
    "celeba_transform": "transforms",
    "face_box_crop": "transforms",
    "squash_transform": "transforms",
    "threehundredw_transform": "transforms",
}

__all__ = [
    "AFLWM",
    "AFLWR",
    "CUB",
    "DATASETS",
    "MAFL",
    "MTFL",
    "BorderCrop",
    "BoxCrop",
    "COCOKeypoints",
    "CelebA",
    "CenterCrop",
    "Compose",
    "Crop",
    "DLCProject",
    "ImageFolder",
    "KeypointCSV",
    "KeypointDataset",
    "KeypointSubset",
    "LandmarkBox",
    "Letterbox",
    "PtsFolder",
    "Resize",
    "ThreeHundredW",
    "aflw_transform",
    "by_name",
    "celeba_transform",
    "dlc_split",
    "face_box_crop",
    "flip_pairs_from_names",
    "load_image",
    "read_dlc_config",
    "read_dlc_labels",
    "read_keypoint_csv",
    "read_pts",
    "squash_transform",
    "threehundredw_transform",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
