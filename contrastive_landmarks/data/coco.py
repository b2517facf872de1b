"""COCO-keypoints JSON (the format of mmpose, COCO, AP-10K, Animal-Pose, MacaquePose, ...).

One sample per annotation (an object instance), with its ``bbox`` as ``sample["box"]``
(``[x, y, w, h]`` converted to ``[x0, y0, x1, y1]``), so ``BoxCrop`` can crop the instance. The
keypoints ``[x1, y1, v1, ...]`` are used as pixel coordinates with COCO's visibility flags: ``v = 0``
not labelled (coordinates set to NaN, never visible), ``v = 1`` labelled but occluded, ``v = 2``
labelled and visible. ``v >= min_visibility`` makes a point ``visible`` (default 1: every labelled
point; ``min_visibility=2`` keeps only the points marked visible, and the occluded ones keep their
coordinates); the raw flags stay in ``dataset.visibility``. The category's ``keypoints`` names become
``dataset.names`` (left/right pairs among them ``dataset.flip_pairs``, see
:func:`~contrastive_landmarks.data.csv_table.flip_pairs_from_names`) and its ``skeleton`` (1-based in
COCO; 0-based files, which name point 0, are read as such) ``dataset.skeleton`` as 0-based index
pairs. Images are decoded with Pillow (``train``/``viz`` extras).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .base import KeypointDataset, Transform, require_file
from .csv_table import flip_pairs_from_names

__all__ = ["COCOKeypoints"]

_LAYOUT = "a COCO JSON with 'images' (id, file_name) and 'annotations' (image_id, keypoints [x, y, v]*N, bbox)"


class COCOKeypoints(KeypointDataset):
    """Keypoint annotations of a COCO-style JSON file.

    Args:
        path: the JSON file.
        image_root: folder ``file_name`` is relative to (default: the JSON's folder).
        transform: sample transform (e.g. ``Compose([BoxCrop(96, scale=1.25)])``).
        min_keypoints: skip annotations with fewer labelled points (``v > 0``).
        min_visibility: smallest ``v`` counted as visible (1: labelled; 2: labelled and visible).
        category_id: keep only this category (default: all; they must share one keypoint layout).
        eye_indices: indices normalising the inter-ocular error, if the layout has eyes (none by default).
        flip_pairs: left/right pairs a horizontal flip swaps; by default found from the category's
            keypoint names; ``()`` for none.

    Attributes:
        names, skeleton, flip_pairs: the category's keypoint names, 0-based skeleton edges (``None``
            without names / a skeleton) and left/right pairs.
        visibility: ``(M, N)`` int8, the raw ``v`` flags.
        annotation_ids, category_ids: per sample.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        image_root: str | os.PathLike | None = None,
        *,
        transform: Transform | None = None,
        min_keypoints: int = 1,
        min_visibility: int = 1,
        category_id: int | None = None,
        eye_indices: tuple[int, int] | None = None,
        flip_pairs: list[tuple[int, int]] | None = None,
    ) -> None:
        if min_visibility not in (1, 2):
            raise ValueError(f"min_visibility must be 1 (labelled) or 2 (labelled and visible), got {min_visibility}")
        path = require_file(path, "COCO keypoint JSON", _LAYOUT)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
        if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
            raise ValueError(f"{path}: missing 'images' or 'annotations'; expected {_LAYOUT}")
        files = {image["id"]: image["file_name"] for image in data["images"]}
        images, keypoints, flags, boxes, self.annotation_ids, self.category_ids = [], [], [], [], [], []
        for annotation in data["annotations"]:
            if category_id is not None and annotation.get("category_id") != category_id:
                continue
            values = annotation.get("keypoints") or []
            if len(values) % 3:
                raise ValueError(
                    f"{path}: annotation {annotation.get('id')} has {len(values)} keypoint values, "
                    "not a multiple of 3 ([x, y, v] per point)"
                )
            raw = np.asarray(values, dtype=np.float32).reshape(-1, 3)
            labelled = raw[:, 2] > 0
            if int(labelled.sum()) < min_keypoints or not len(raw):
                continue
            if annotation["image_id"] not in files:
                raise ValueError(
                    f"{path}: annotation {annotation.get('id')} refers to unknown image {annotation['image_id']}"
                )
            images.append(files[annotation["image_id"]])
            points = raw[:, :2].copy()
            points[~labelled] = np.nan  # v = 0: COCO stores (0, 0), which is no position
            keypoints.append(points)
            flags.append(raw[:, 2].astype(np.int8))
            x, y, w, h = annotation.get("bbox") or self._points_box(raw[labelled, :2])
            boxes.append([x, y, x + w, y + h])
            self.annotation_ids.append(annotation.get("id"))
            self.category_ids.append(annotation.get("category_id"))
        if not images:
            raise ValueError(f"{path}: no annotation with at least {min_keypoints} labelled keypoints")
        counts = sorted({len(k) for k in keypoints})
        if len(counts) != 1:
            raise ValueError(f"{path}: annotations have different keypoint counts {counts}; pick one category_id")
        names, skeleton = self._layout(path, data.get("categories") or [], set(self.category_ids), counts[0])
        self.visibility = np.stack(flags)
        if flip_pairs is None:
            flip_pairs = flip_pairs_from_names(names)
        super().__init__(
            image_root if image_root is not None else path.parent,
            images,
            np.stack(keypoints),
            self.visibility >= min_visibility,
            boxes=np.asarray(boxes, dtype=np.float32),
            transform=transform,
            eye_indices=eye_indices,
            names=names,
            flip_pairs=flip_pairs,
        )
        self.skeleton = skeleton
        self.path = Path(path)

    @staticmethod
    def _layout(path: Path, categories: list, used: set, count: int) -> tuple[list[str] | None, list | None]:
        """Names and 0-based skeleton of the categories the kept annotations use (they must agree)."""
        layouts = set()
        for category in categories:
            if category.get("id") in used or (len(categories) == 1 and None in used):
                names = tuple(category.get("keypoints") or ())
                edges = tuple(tuple(int(i) for i in edge) for edge in category.get("skeleton") or ())
                layouts.add((names, edges))
        if len(layouts) > 1:
            raise ValueError(
                f"{path}: the categories used ({sorted(used, key=str)}) name their keypoints or "
                "skeleton differently; pick one category_id"
            )
        if not layouts:
            return None, None
        names, edges = layouts.pop()
        if names and len(names) != count:
            raise ValueError(f"{path}: the category names {len(names)} keypoints but annotations have {count}")
        if not edges:
            return (list(names) or None), None
        flat = [i for edge in edges for i in edge]
        if any(len(edge) != 2 for edge in edges) or min(flat) < 0 or max(flat) > count:
            raise ValueError(f"{path}: skeleton {list(edges)} is not pairs of keypoint numbers 1..{count}")
        one_based = min(flat) >= 1  # COCO's convention; a file naming point 0 is 0-based
        if not one_based and max(flat) >= count:
            raise ValueError(f"{path}: skeleton {list(edges)} names both point 0 and point {count}")
        skeleton = [(a - one_based, b - one_based) for a, b in edges]
        return (list(names) or None), skeleton

    @staticmethod
    def _points_box(points: np.ndarray) -> list[float]:
        x0, y0 = points.min(0)
        x1, y1 = points.max(0)
        return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
