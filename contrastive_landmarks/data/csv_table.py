"""Keypoints in a CSV table (the generic format for your own data).

The first row is a header with an ``image`` column (a path relative to the CSV's folder, or to
``root``) and the keypoint columns, in one of two layouts (columns in any order; other columns are
ignored):

- numbered: ``x1..xN`` and ``y1..yN`` (or ``x0..x(N-1)``, ``y0..``), interleaved (``x1,y1,x2,y2``) or
  not (``x1..xN,y1..yN``, the layout of MTFL in ``shared/data/mtfl``), optional ``v<i>`` visibility;
- named: ``<name>_x``, ``<name>_y`` (optional ``<name>_v``) per point, e.g.
  ``image,left_eye_x,left_eye_y,nose_x,nose_y``; the names are kept (``dataset.names``, in the order
  of their ``_x`` columns) and left/right pairs among them become ``flip_pairs``
  (:func:`flip_pairs_from_names`).

Coordinates are pixels in the stored image (pixel centres at integers). An empty (or ``nan``) cell
is a missing point: ``visible`` False and the coordinates NaN. A ``v`` cell that is ``0`` marks a
point with coordinates as not visible; an empty ``v`` cell follows the coordinates. No
``eye_indices`` are assumed: pass them when the table's points include the two eyes.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .base import KeypointDataset, Transform, require_file

__all__ = ["KeypointCSV", "flip_pairs_from_names", "read_keypoint_csv"]

_LAYOUT = (
    "a CSV with header image,x1..xN,y1..yN[,v1..vN] (or x0,y0,x1,y1,..., or <name>_x,<name>_y,...) "
    "and one row per image"
)
_NUMBERED = re.compile(r"^([xyv])(\d+)$", re.IGNORECASE)
_NAMED = re.compile(r"^(.+?)[_.]([xyv])$", re.IGNORECASE)

# -- left/right pairs from names ---------------------------------------------------------------------------
_TOKEN = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
#: side words: (side, family); a pair must agree on the family (left/right and L/R, or a horse's near/off)
_SIDES = {
    "left": ("L", "lr"),
    "l": ("L", "lr"),
    "right": ("R", "lr"),
    "r": ("R", "lr"),
    "near": ("L", "no"),
    "off": ("R", "no"),
}


def _side_key(name: str) -> tuple[str, str] | None:
    """``(side, key)`` of a keypoint name with one side word, the key the name less its side; else ``None``."""
    found = []
    tokens = [t.lower() for t in _TOKEN.findall(name)]
    for position, token in enumerate(tokens):
        before, after = tokens[:position], tokens[position + 1 :]
        for word, (side, family) in _SIDES.items():
            marker = f"<{family}>"
            if token == word:
                found.append((side, [*before, marker, *after]))
            elif len(word) > 1 and token.startswith(word):  # "lefteye", "Nearknee"
                found.append((side, [*before, marker, token[len(word) :], *after]))
            elif len(word) > 1 and token.endswith(word):  # "eyeleft"
                found.append((side, [*before, token[: -len(word)], marker, *after]))
    if len(found) != 1:
        return None
    side, key = found[0]
    return side, " ".join(key)


def flip_pairs_from_names(names: Sequence[str] | None) -> tuple[tuple[int, int], ...] | None:
    """Left/right index pairs that a horizontal flip swaps, found from keypoint names.

    A name pairs with another that differs only in its side word: ``left``/``right`` (``left_eye``,
    ``LeftEar``, ``eye_left``, ``lefteye``), ``L``/``R`` as a separate part (``L_Eye``, ``eyeL``,
    ``forelegR1``, ``eye_r``) or a horse's ``Near``/``Off`` (``Nearknee``/``Offknee``). Names without a
    counterpart, and ambiguous ones (two names for the same side), are left unpaired. Returns
    ``(left, right)`` pairs in the order of the left names, or ``None`` when nothing pairs.
    """
    if not names:
        return None
    sides: dict[tuple[str, str], list[int]] = {}
    for index, name in enumerate(names):
        found = _side_key(str(name))
        if found is not None:
            sides.setdefault((found[1], found[0]), []).append(index)
    pairs = []
    for (key, side), lefts in sides.items():
        rights = sides.get((key, "R"), [])
        if side == "L" and len(lefts) == 1 and len(rights) == 1:
            pairs.append((lefts[0], rights[0]))
    return tuple(sorted(pairs)) or None


# -- the table -----------------------------------------------------------------------------------------------
def _columns(path: Path, header: list[str]) -> tuple[list[str] | None, list[tuple[int, int, int | None]]]:
    """``(names or None, [(x column, y column, v column or None) per point])`` from the header."""
    numbered: dict[str, dict[int, int]] = {"x": {}, "y": {}, "v": {}}
    named: dict[str, dict[str, int]] = {"x": {}, "y": {}, "v": {}}
    for position, column in enumerate(header):
        if column == "image":
            continue
        found = _NUMBERED.match(column)
        if found:
            numbered[found.group(1).lower()][int(found.group(2))] = position
            continue
        found = _NAMED.match(column)
        if found:
            named[found.group(2).lower()][found.group(1)] = position
    if numbered["x"] and named["x"]:
        raise ValueError(f"{path}: header mixes numbered (x1, y1) and named (<name>_x) point columns: {header}")
    if numbered["x"] or numbered["y"]:
        numbers = sorted(numbered["x"])
        first = numbers[0] if numbers else 1
        if (
            first not in (0, 1)
            or sorted(numbered["y"]) != numbers
            or numbers != list(range(first, first + len(numbers)))
        ):
            raise ValueError(f"{path}: need columns x1..xN and y1..yN numbered from 1 (or from 0), got {header}")
        if numbered["v"] and sorted(numbered["v"]) != numbers:
            raise ValueError(f"{path}: v columns {sorted(numbered['v'])} do not match the points {numbers}")
        return None, [(numbered["x"][i], numbered["y"][i], numbered["v"].get(i)) for i in numbers]
    if named["x"] or named["y"]:
        names = sorted(named["x"], key=named["x"].get)
        if sorted(named["y"]) != sorted(names):
            raise ValueError(
                f"{path}: every <name>_x column needs a <name>_y column and back; x: {sorted(names)}, "
                f"y: {sorted(named['y'])}"
            )
        extra = sorted(set(named["v"]) - set(names))
        if extra:
            raise ValueError(f"{path}: visibility columns {[f'{n}_v' for n in extra]} have no coordinates")
        return names, [(named["x"][n], named["y"][n], named["v"].get(n)) for n in names]
    raise ValueError(
        f"{path}: need columns x1..xN and y1..yN (or <name>_x, <name>_y), got {header}; expected {_LAYOUT}"
    )


def _number(text: str) -> float:
    text = text.strip()
    return math.nan if not text else float(text)


def _is_deeplabcut(rows: list[list[str]]) -> bool:
    """Whether ``rows`` start with DeepLabCut's header: ``scorer``, then ``bodyparts`` (after ``individuals`` for
    multi-animal projects) and ``coords`` in the first column."""
    first = [row[0].strip().lower() if row else "" for row in rows[:4]]
    return bool(first) and first[0] == "scorer" and "bodyparts" in first and "coords" in first


def read_keypoint_csv(path: str | os.PathLike, *, with_names: bool = False):
    """Parse a keypoint CSV (see the module docstring for the layouts).

    Returns:
        ``(images, keypoints (M, N, 2), visible (M, N) bool)``, plus the point names (``None`` for
        numbered columns) when ``with_names``. Missing points have NaN coordinates.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed header or row (names the file and line).
    """
    path = require_file(path, "keypoint CSV", _LAYOUT)
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise ValueError(f"{path} is empty; expected {_LAYOUT}")
    header = [h.strip() for h in rows[0]]
    if _is_deeplabcut(rows):
        raise ValueError(
            f"{path} is a DeepLabCut labels file (header rows scorer / bodyparts / coords), not a keypoint table: "
            "read it with --dataset dlc (DLCProject in Python)"
        )
    if "image" not in header:
        raise ValueError(f"{path}: header has no 'image' column (got {header}); expected {_LAYOUT}")
    names, columns = _columns(path, header)
    image_column = header.index("image")
    images, points, visible = [], [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"{path}:{line}: {len(row)} fields but the header has {len(header)}")
        xy, seen = [], []
        for x_column, y_column, v_column in columns:
            try:
                x, y = _number(row[x_column]), _number(row[y_column])
                v = _number(row[v_column]) if v_column is not None else math.nan
            except ValueError as error:
                raise ValueError(f"{path}:{line}: not a number ({error})") from error
            if math.isfinite(x) != math.isfinite(y):
                raise ValueError(
                    f"{path}:{line}: column {header[x_column]!r} or {header[y_column]!r} is empty but "
                    "not both (a missing point leaves both empty)"
                )
            present = math.isfinite(x) and math.isfinite(y)
            xy.append((x, y) if present else (math.nan, math.nan))
            seen.append(present and (math.isnan(v) or v != 0))
        images.append(row[image_column].strip())
        points.append(xy)
        visible.append(seen)
    if not images:
        raise ValueError(f"{path} has a header but no rows")
    result = (images, np.asarray(points, dtype=np.float32), np.asarray(visible, dtype=bool))
    return (*result, names) if with_names else result


class KeypointCSV(KeypointDataset):
    """Images listed in a keypoint CSV (see the module docstring for the layouts).

    Args:
        path: the CSV file.
        root: folder the image paths are relative to (default: the CSV's folder).
        transform: sample transform (e.g. :class:`~contrastive_landmarks.data.transforms.Resize`).
        eye_indices: 0-based indices of the two points normalising the inter-ocular error; none by
            default (pass them only when two of the points are the eyes).
        flip_pairs: left/right point pairs a horizontal flip swaps; by default found from the column
            names (:func:`flip_pairs_from_names`; none for numbered columns); ``()`` for none.

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
        images, keypoints, visible, names = read_keypoint_csv(path, with_names=True)
        if flip_pairs is None:
            flip_pairs = flip_pairs_from_names(names)
        super().__init__(
            root if root is not None else Path(path).parent,
            images,
            keypoints,
            visible,
            transform=transform,
            eye_indices=eye_indices,
            names=names,
            flip_pairs=flip_pairs,
        )
        self.path = Path(path)
