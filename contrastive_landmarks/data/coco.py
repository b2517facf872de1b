"""COCO-keypoints JSON (the format of mmpose, COCO, AP-10K, Animal-Pose, MacaquePose, ...).

One sample per annotation (an object instance), with its ``bbox`` as ``sample["box"]``
(``[x, y, w, h]`` converted to ``[x0, y0, x1, y1]``), so ``BoxCrop`` can crop the instance. The
keypoints ``[x1, y1, v1, ...]`` are used as pixel coordinates; ``v > 0`` (labelled, visible or not)
marks a point as usable by default (``min_visibility=2`` keeps only points marked visible).
Images are decoded with Pillow (``train``/``viz`` extras).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .base import KeypointDataset, Transform, require_file

__all__ = ["COCOKeypoints"]

_LAYOUT = "a COCO JSON with 'images' (id, file_name) and 'annotations' (image_id, keypoints [x, y, v]*N, bbox)"


class COCOKeypoints(KeypointDataset):
    """Keypoint annotations of a COCO-style JSON file.

    Args:
        path: the JSON file.
        image_root: folder ``file_name`` is relative to (default: the JSON's folder).
        transform: sample transform (e.g. ``Compose([BoxCrop(96, scale=1.25)])``).
        min_keypoints: skip annotations with fewer labelled points (``num_keypoints`` or counted).
        min_visibility: smallest ``v`` counted as visible (1: labelled; 2: labelled and visible).
        category_id: keep only this category (default: all; they must share one keypoint count).
        eye_indices: indices normalising the inter-ocular error, if the layout has eyes.
    """

    def __init__(self, path: str | os.PathLike, image_root: str | os.PathLike | None = None, *,
                 transform: Transform | None = None, min_keypoints: int = 1, min_visibility: int = 1,
                 category_id: int | None = None, eye_indices: tuple[int, int] | None = None) -> None:
        path = require_file(path, "COCO keypoint JSON", _LAYOUT)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
        if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
            raise ValueError(f"{path}: missing 'images' or 'annotations'; expected {_LAYOUT}")
        files = {image["id"]: image["file_name"] for image in data["images"]}
        images, keypoints, visible, boxes, self.annotation_ids = [], [], [], [], []
        for annotation in data["annotations"]:
            if category_id is not None and annotation.get("category_id") != category_id:
                continue
            raw = np.asarray(annotation.get("keypoints", []), dtype=np.float32).reshape(-1, 3)
            labelled = raw[:, 2] >= min_visibility
            if int(labelled.sum()) < min_keypoints or not len(raw):
                continue
            if annotation["image_id"] not in files:
                raise ValueError(f"{path}: annotation {annotation.get('id')} refers to unknown image "
                                 f"{annotation['image_id']}")
            images.append(files[annotation["image_id"]])
            keypoints.append(raw[:, :2])
            visible.append(labelled)
            x, y, w, h = (annotation.get("bbox") or self._points_box(raw[labelled, :2]))
            boxes.append([x, y, x + w, y + h])
            self.annotation_ids.append(annotation.get("id"))
        if not images:
            raise ValueError(f"{path}: no annotation with at least {min_keypoints} labelled keypoints")
        counts = sorted({len(k) for k in keypoints})
        if len(counts) != 1:
            raise ValueError(f"{path}: annotations have different keypoint counts {counts}; pick one category_id")
        names = None
        categories = data.get("categories") or []
        if categories and len(categories[0].get("keypoints") or []) == counts[0]:
            names = categories[0]["keypoints"]
        super().__init__(image_root if image_root is not None else path.parent, images, np.stack(keypoints),
                         np.stack(visible), boxes=np.asarray(boxes, dtype=np.float32), transform=transform,
                         eye_indices=eye_indices, names=names)
        self.path = Path(path)

    @staticmethod
    def _points_box(points: np.ndarray) -> list[float]:
        x0, y0 = points.min(0)
        x1, y1 = points.max(0)
        return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
