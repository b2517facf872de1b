"""Keypoints in a CSV table: ``image,x1..xN,y1..yN[,v1..vN]`` (the generic format for your own data).

The first row is a header. ``image`` is a path relative to the CSV's folder (or to ``root``);
``x<i>``/``y<i>`` are pixel coordinates in the stored image (pixel centres at integers); optional
``v<i>`` columns are visibility flags (non-zero = visible). Columns may come in any order; points are
numbered from 1. MTFL as distributed in ``shared/data/mtfl`` uses exactly this layout (without ``v``).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .base import KeypointDataset, Transform, require_file

__all__ = ["KeypointCSV", "read_keypoint_csv"]

_LAYOUT = "a CSV with header image,x1..xN,y1..yN[,v1..vN] and one row per image"
_COLUMN = re.compile(r"^([xyv])(\d+)$")


def read_keypoint_csv(path: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Parse a keypoint CSV.

    Returns:
        ``(images, keypoints (M, N, 2), visible (M, N) bool)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed header or row (names the line).
    """
    path = require_file(path, "keypoint CSV", _LAYOUT)
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise ValueError(f"{path} is empty; expected {_LAYOUT}")
    header = [h.strip() for h in rows[0]]
    if "image" not in header:
        raise ValueError(f"{path}: header has no 'image' column (got {header}); expected {_LAYOUT}")
    columns: dict[str, dict[int, int]] = {"x": {}, "y": {}, "v": {}}
    for position, name in enumerate(header):
        found = _COLUMN.match(name)
        if found:
            columns[found.group(1)][int(found.group(2))] = position
    numbers = sorted(columns["x"])
    if not numbers or sorted(columns["y"]) != numbers or numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"{path}: need columns x1..xN and y1..yN numbered from 1, got {header}")
    if columns["v"] and sorted(columns["v"]) != numbers:
        raise ValueError(f"{path}: v columns {sorted(columns['v'])} do not match the points {numbers}")
    image_column = header.index("image")
    images, points, visible = [], [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"{path}:{line}: {len(row)} fields but the header has {len(header)}")
        try:
            xs = [float(row[columns["x"][i]]) for i in numbers]
            ys = [float(row[columns["y"][i]]) for i in numbers]
            vs = [float(row[columns["v"][i]]) != 0 for i in numbers] if columns["v"] else [True] * len(numbers)
        except ValueError as error:
            raise ValueError(f"{path}:{line}: not a number ({error})") from error
        images.append(row[image_column].strip())
        points.append(np.stack([xs, ys], axis=-1))
        visible.append(vs)
    if not images:
        raise ValueError(f"{path} has a header but no rows")
    return images, np.asarray(points, dtype=np.float32), np.asarray(visible, dtype=bool)


class KeypointCSV(KeypointDataset):
    """Images listed in a keypoint CSV (see the module docstring for the layout).

    Args:
        path: the CSV file.
        root: folder the image paths are relative to (default: the CSV's folder).
        transform: sample transform (e.g. :class:`~contrastive_landmarks.data.transforms.Resize`).
        eye_indices: 0-based indices of the two points normalising the inter-ocular error, if any.
        flip_pairs: left/right point pairs a horizontal flip swaps, if any.

    Images are decoded with Pillow (``train``/``viz`` extras).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        root: str | os.PathLike | None = None,
        *,
        transform: Transform | None = None,
        eye_indices: tuple[int, int] | None = None,
        flip_pairs: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        images, keypoints, visible = read_keypoint_csv(path)
        super().__init__(root if root is not None else Path(path).parent, images, keypoints, visible,
                         transform=transform, eye_indices=eye_indices, flip_pairs=flip_pairs)
        self.path = Path(path)
