"""CUB-200-2011 birds, 15 part locations, with the official annotations and the authors' split lists.

Layout (``root`` is the official ``CUB_200_2011`` folder)::

    <root>/images.txt              "<image_id> <class>/<file>.jpg"
    <root>/parts/part_locs.txt     "<image_id> <part_id> <x> <y> <visible>"  (15 parts per image)
    <root>/parts/parts.txt         "<part_id> <name>"   (optional; gives the keypoint names)
    <root>/images/<class>/<file>.jpg

Split lists (the authors' 35-species *Passeroidea* subset: ``train.txt`` 1,241, ``val.txt`` 382,
``test.txt`` 383, few-shot ``train_{10,50,100,250,500}.txt``) hold one image per line. The authors
ship them with absolute cluster paths; only the last two components (``<class>/<file>.jpg``) are
used, so any prefix works and nothing absolute is kept. Points with ``visible == 0`` are marked
invisible (they are excluded from PCK). Default preprocessing: squash to 96² (no crop). Images are
decoded with Pillow (``train``/``viz`` extras).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import KeypointDataset, Transform, require_dir, require_file
from .transforms import squash_transform

__all__ = ["CUB", "read_split_list"]

_DEFAULT = object()
_LAYOUT = "<root>/images.txt, <root>/parts/part_locs.txt and <root>/images/<class>/<file>.jpg"


def read_split_list(path: str | os.PathLike) -> list[str]:
    """A split list as ``<class>/<file>.jpg`` names (absolute or relative prefixes are dropped)."""
    path = require_file(path, "CUB split list", "one image path per line, ending in <class>/<file>.jpg")
    names = []
    for line in path.read_text().splitlines():
        line = line.strip().replace("\\", "/")
        if line:
            parts = line.split("/")
            if len(parts) < 2:
                raise ValueError(f"{path}: {line!r} does not end in <class>/<file>.jpg")
            names.append("/".join(parts[-2:]))
    return names


class CUB(KeypointDataset):
    """CUB-200-2011 with 15 keypoints and visibility.

    Args:
        root: the ``CUB_200_2011`` folder (see the module docstring).
        split: a split list file (e.g. ``splits/train_50.txt``), or ``None`` for every image.
        transform: default squash to 96²; ``None`` for the stored images.
    """

    def __init__(
        self, root: str | os.PathLike, split: str | os.PathLike | None = None, *, transform: Transform | None = _DEFAULT
    ) -> None:  # type: ignore[assignment]
        root = require_dir(root, "CUB_200_2011 folder", _LAYOUT)
        ids = {}
        for line in require_file(root / "images.txt", "CUB image list", _LAYOUT).read_text().splitlines():
            fields = line.split()
            if len(fields) == 2:
                ids[fields[1]] = int(fields[0])
        locs: dict[int, dict[int, tuple[float, float, bool]]] = {}
        parts_file = require_file(root / "parts" / "part_locs.txt", "CUB part locations", _LAYOUT)
        for number, line in enumerate(parts_file.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 5:
                raise ValueError(f"{parts_file}:{number}: expected '<image_id> <part_id> <x> <y> <visible>'")
            image_id, part = int(fields[0]), int(fields[1])
            locs.setdefault(image_id, {})[part] = (float(fields[2]), float(fields[3]), float(fields[4]) > 0)
        num_parts = max((max(p) for p in locs.values()), default=0)
        names = read_split_list(split) if split is not None else sorted(ids, key=ids.get)
        unknown = [n for n in names if n not in ids]
        if unknown:
            raise ValueError(f"{len(unknown)} images of {split} are not in {root / 'images.txt'}, e.g. {unknown[:3]}")
        keypoints = np.zeros((len(names), num_parts, 2), dtype=np.float32)
        visible = np.zeros((len(names), num_parts), dtype=bool)
        for row, name in enumerate(names):
            for part, (x, y, v) in locs.get(ids[name], {}).items():
                keypoints[row, part - 1] = (x, y)
                visible[row, part - 1] = v
        part_names = None
        if (root / "parts" / "parts.txt").is_file():
            entries = [line.split(maxsplit=1) for line in (root / "parts" / "parts.txt").read_text().splitlines()]
            part_names = [e[1].strip() for e in entries if len(e) == 2][:num_parts] or None
        super().__init__(
            root / "images",
            names,
            keypoints,
            visible,
            transform=squash_transform() if transform is _DEFAULT else transform,
            names=part_names,
        )
        self.split = None if split is None else Path(split).name
