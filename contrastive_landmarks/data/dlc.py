"""DeepLabCut projects: the labelled frames of ``labeled-data/`` with the body parts of ``config.yaml``.

Layout (what DeepLabCut's labelling GUI writes)::

    <project>/config.yaml                                    scorer, bodyparts, skeleton, ...
    <project>/labeled-data/<video>/CollectedData_<scorer>.csv  the labels (also stored as .h5)
    <project>/labeled-data/<video>/img0042.png               the frames

``CollectedData_<scorer>.csv`` has DeepLabCut's 3-row header ``scorer`` / ``bodyparts`` / ``coords``
(``x``, ``y`` per body part) and one row per frame: the frame's path relative to the project, either
in one cell (``labeled-data/<video>/img0042.png``, older projects; ``\\`` separators from Windows are
accepted) or in three (``labeled-data``, ``<video>``, ``img0042.png``, DeepLabCut >= 2.2). An empty
cell is an unlabelled point: ``visible`` False and the coordinates NaN. Multi-animal projects (a
4-row header with ``individuals``; ``multianimalproject: true``) raise :class:`NotImplementedError`.
When a video folder has only the ``.h5`` file it is read with pandas + PyTables if both are
installed (neither is a dependency of this library); the CSV is always preferred.

Frames keep their stored sizes (a project may mix them); a transform such as
:class:`~contrastive_landmarks.data.transforms.Letterbox` brings them to one size. ``config.yaml`` is
read with a small parser of the few keys used (``scorer``, ``bodyparts``, ``skeleton``,
``multianimalproject``), so no YAML library is needed.

:func:`dlc_split` is the fixed train / test split by frame used for ``dlc`` in
:func:`~contrastive_landmarks.data.registry.by_name`.
"""

from __future__ import annotations

import csv
import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .base import KeypointDataset, Transform, require_dir, require_file
from .csv_table import flip_pairs_from_names

__all__ = ["DLCProject", "dlc_split", "read_dlc_config", "read_dlc_labels"]

_LAYOUT = ("<project>/config.yaml and <project>/labeled-data/<video>/CollectedData_<scorer>.csv "
           "(DeepLabCut's project layout)")
_CONFIG_KEYS = ("Task", "scorer", "bodyparts", "skeleton", "multianimalproject", "individuals",
                "uniquebodyparts", "multianimalbodyparts")


# -- config.yaml: the few keys used, without a YAML library ----------------------------------------------------
def _strip_comment(text: str) -> str:
    quote = None
    for position, char in enumerate(text):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (position == 0 or text[position - 1].isspace()):
            return text[:position].rstrip()
    return text.rstrip()


def _scalar(text: str):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        inner = text[1:-1]
        return inner.replace("''", "'") if text[0] == "'" else inner.replace('\\"', '"')
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered in ("", "~", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _flow(text: str, path: Path):
    """Parse a YAML flow sequence such as ``[['Hand', 'Finger1'], [a, b]]``."""
    position = 0

    def value():
        nonlocal position
        while position < len(text) and text[position].isspace():
            position += 1
        if position < len(text) and text[position] == "[":
            position += 1
            items = []
            while True:
                while position < len(text) and text[position].isspace():
                    position += 1
                if position >= len(text):
                    raise ValueError(f"{path}: unclosed '[' in {text!r}")
                if text[position] == "]":
                    position += 1
                    return items
                items.append(value())
                while position < len(text) and text[position].isspace():
                    position += 1
                if position < len(text) and text[position] == ",":
                    position += 1
        if position < len(text) and text[position] in "'\"":
            quote, start = text[position], position
            position += 1
            while position < len(text) and not (text[position] == quote and text[position + 1:position + 2] != quote):
                position += 2 if text[position] == quote else 1
            position += 1
            return _scalar(text[start:position])
        start = position
        while position < len(text) and text[position] not in ",]":
            position += 1
        return _scalar(text[start:position])

    result = value()
    if text[position:].strip():
        raise ValueError(f"{path}: cannot read {text!r} (left over: {text[position:]!r})")
    return result


def _block(lines: list[tuple[int, str]], path: Path):
    """Parse a block sequence (``- item`` lines, nested as ``- - a`` / ``  - b``) from ``(indent, text)`` lines."""
    expanded: list[tuple[int, str]] = []
    for indent, text in lines:  # "- - a" is "-" then "- a" two columns further in
        while text.startswith("- ") and text[2:].lstrip().startswith("-"):
            rest = text[2:].lstrip()
            expanded.append((indent, "-"))
            indent, text = indent + len(text) - len(rest), rest
        expanded.append((indent, text))
    position = 0

    def sequence(indent: int) -> list:
        nonlocal position
        items = []
        while position < len(expanded) and expanded[position][0] == indent:
            text = expanded[position][1]
            if not (text == "-" or text.startswith("- ")):
                raise ValueError(f"{path}: expected a '- item' line, got {text!r}")
            position += 1
            rest = text[1:].strip()
            if rest:
                items.append(_flow(rest, path) if rest.startswith("[") else _scalar(rest))
            elif position < len(expanded) and expanded[position][0] > indent:
                items.append(sequence(expanded[position][0]))
            else:
                items.append(None)
        return items

    if not expanded:
        return None
    result = sequence(expanded[0][0])
    if position != len(expanded):
        raise ValueError(f"{path}: cannot read the lines from {expanded[position][1]!r} on (mappings are not read)")
    return result


def read_dlc_config(path: str | os.PathLike) -> dict:
    """The keys of a DeepLabCut ``config.yaml`` this reader uses (``scorer``, ``bodyparts``, ``skeleton``,
    ``multianimalproject``, ``individuals``, ``uniquebodyparts``, ``multianimalbodyparts``, ``Task``),
    parsed without a YAML library: scalars, flow sequences (``[a, [b, c]]``) and block sequences
    (``- a``, ``- - a``). Other keys are skipped unread.

    Raises:
        FileNotFoundError: no such file.
        ValueError: one of those keys cannot be read (names the file).
    """
    path = require_file(path, "DeepLabCut config.yaml", _LAYOUT)
    entries: dict[str, tuple[str, list[tuple[int, str]]]] = {}
    current = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        text = _strip_comment(raw.replace("\t", "    "))
        if not text.strip():
            continue
        indent = len(text) - len(text.lstrip())
        top = re.match(r"^([A-Za-z_][\w ]*?)\s*:(?:\s+(.*)|$)", text) if indent == 0 else None
        if top and not text.startswith("-"):
            current = top.group(1)
            entries[current] = ((top.group(2) or "").strip(), [])
        elif current is not None:
            entries[current][1].append((indent, text.strip()))
    config = {}
    for key in _CONFIG_KEYS:
        if key not in entries:
            continue
        inline, lines = entries[key]
        if inline and lines:
            raise ValueError(f"{path}: {key} has both an inline value and lines below it")
        if inline.startswith("["):
            config[key] = _flow(inline, path)
        elif inline:
            config[key] = _scalar(inline)
        else:
            config[key] = _block(lines, path)
    return config


# -- CollectedData_<scorer>.csv / .h5 ---------------------------------------------------------------------------
def _number(text: str, path: Path, line: int, column: str) -> float:
    text = text.strip()
    if not text:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{path}:{line}: {column}: not a number: {text!r}") from None


def _read_csv(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    first = [row[0].strip() if row else "" for row in rows[:4]]
    if len(first) >= 2 and first[1] == "individuals":
        raise NotImplementedError(f"{path}: a multi-animal DeepLabCut file (header scorer / individuals / bodyparts "
                                  "/ coords) is not supported; this reader reads single-animal projects")
    if first[:3] != ["scorer", "bodyparts", "coords"]:
        raise ValueError(f"{path}: expected DeepLabCut's 3-row header scorer / bodyparts / coords, got rows "
                         f"starting {first[:3]}")
    parts_row, coords_row = rows[1], rows[2]
    width = len(coords_row)
    if len(parts_row) != width:
        raise ValueError(f"{path}: the bodyparts row has {len(parts_row)} cells, the coords row {width}")
    data_start = next((i for i, c in enumerate(coords_row) if i and c.strip() in ("x", "y", "likelihood")), width)
    columns: dict[str, dict[str, int]] = {}
    for column in range(data_start, width):
        part, coord = parts_row[column].strip(), coords_row[column].strip()
        if coord in ("x", "y"):
            if coord in columns.setdefault(part, {}):
                raise ValueError(f"{path}: body part {part!r} has two {coord} columns")
            columns[part][coord] = column
        elif coord != "likelihood":
            raise ValueError(f"{path}: column {column + 1} has coords {coord!r}, expected x or y")
    parts = list(columns)
    if not parts:
        raise ValueError(f"{path}: no x/y columns in the header")
    incomplete = [p for p in parts if set(columns[p]) != {"x", "y"}]
    if incomplete:
        raise ValueError(f"{path}: body parts {incomplete} lack an x or a y column")
    images, points = [], []
    for line, row in enumerate(rows[3:], start=4):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != width:
            raise ValueError(f"{path}:{line}: {len(row)} cells but the header has {width}")
        image = "/".join(cell.strip() for cell in row[:data_start] if cell.strip()).replace("\\", "/")
        if not image:
            raise ValueError(f"{path}:{line}: no frame path")
        xy = []
        for part in parts:
            x = _number(row[columns[part]["x"]], path, line, f"{part} x")
            y = _number(row[columns[part]["y"]], path, line, f"{part} y")
            if math.isfinite(x) != math.isfinite(y):
                raise ValueError(f"{path}:{line}: {part} has an x or a y but not both")
            xy.append((x, y) if math.isfinite(x) and math.isfinite(y) else (math.nan, math.nan))
        images.append(image)
        points.append(xy)
    if not images:
        raise ValueError(f"{path} has a header but no labelled frames")
    return images, parts, np.asarray(points, dtype=np.float32).reshape(len(images), len(parts), 2)


def _read_h5(path: Path) -> tuple[list[str], list[str], np.ndarray]:  # pragma: no cover - needs pandas + tables
    try:
        import pandas
        import tables  # noqa: F401  (pandas reads HDF5 through PyTables)
    except ImportError as error:
        raise ImportError(f"{path}: reading DeepLabCut's .h5 labels needs pandas and PyTables (pip install pandas "
                          "tables); or save the labels as CSV too (DeepLabCut writes both)") from error
    frame = pandas.read_hdf(path)
    names = list(frame.columns.names)
    if "individuals" in names:
        raise NotImplementedError(f"{path}: a multi-animal DeepLabCut file is not supported")
    if names[-2:] != ["bodyparts", "coords"]:
        raise ValueError(f"{path}: expected columns (scorer, bodyparts, coords), got levels {names}")
    parts = list(dict.fromkeys(frame.columns.get_level_values("bodyparts")))
    xy = np.stack([np.stack([frame.xs((p, c), level=("bodyparts", "coords"), axis=1).iloc[:, 0].to_numpy(float)
                             for c in ("x", "y")], -1) for p in parts], 1)
    images = ["/".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in frame.index]
    return [i.replace("\\", "/") for i in images], parts, xy.astype(np.float32)


def read_dlc_labels(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """One ``CollectedData_<scorer>.csv`` (or ``.h5``, with pandas + PyTables).

    Returns:
        ``(frame paths relative to the project, body parts in file order, (M, P, 2) x/y with NaN where
        unlabelled)``.

    Raises:
        FileNotFoundError: no such file.
        NotImplementedError: a multi-animal file.
        ValueError: a malformed header or row (names the file and line).
    """
    path = require_file(path, "DeepLabCut labels", _LAYOUT)
    return _read_h5(path) if path.suffix == ".h5" else _read_csv(path)


# -- the dataset ------------------------------------------------------------------------------------------------
class DLCProject(KeypointDataset):
    """The labelled frames of a (single-animal) DeepLabCut project.

    Args:
        project_dir: the folder holding ``config.yaml`` and ``labeled-data/``.
        transform: sample transform (e.g. :class:`~contrastive_landmarks.data.transforms.Letterbox`).
        scorer: whose ``CollectedData_<scorer>`` files to read (default: ``scorer`` of config.yaml).
        video: read only these ``labeled-data/`` folders (a name or a list; default: all with labels).

    Attributes:
        names: the body parts of config.yaml, in its order (the keypoint order).
        skeleton: config.yaml's skeleton as 0-based ``(i, j)`` index pairs (edges naming unknown body
            parts are dropped with a warning).
        flip_pairs: left/right body-part pairs from their names, else ``None``.
        videos: the ``labeled-data/`` folder of each frame; ``files``: the label files read;
            ``config``: the config.yaml keys read.

    No ``eye_indices``: errors are in pixels of the stored frames.

    Raises:
        FileNotFoundError: no project, config.yaml, labels, or the named video.
        NotImplementedError: a multi-animal project.
        ValueError: malformed config or labels (names the file).
    """

    def __init__(self, project_dir: str | os.PathLike, *, transform: Transform | None = None,
                 scorer: str | None = None, video: str | Sequence[str] | None = None) -> None:
        project = require_dir(project_dir, "DeepLabCut project", _LAYOUT)
        config_path = require_file(project / "config.yaml", "DeepLabCut config.yaml", _LAYOUT)
        self.config = config = read_dlc_config(config_path)
        if config.get("multianimalproject") is True:
            raise NotImplementedError(f"{config_path}: multi-animal DeepLabCut projects (multianimalproject: true) "
                                      "are not supported; this reader reads single-animal projects")
        scorer = scorer if scorer is not None else config.get("scorer")
        if not scorer:
            raise ValueError(f"{config_path}: no scorer (pass scorer=...)")
        self.scorer = str(scorer)
        names = config.get("bodyparts")
        if not isinstance(names, list) or not names or not all(isinstance(n, str | int) for n in names):
            raise ValueError(f"{config_path}: bodyparts must be a list of names, got {names!r}")
        names = [str(n) for n in names]
        if len(set(names)) != len(names):
            raise ValueError(f"{config_path}: bodyparts repeat a name: {names}")
        labelled = require_dir(project / "labeled-data", "DeepLabCut labeled-data folder", _LAYOUT)
        folders = sorted(p for p in labelled.iterdir() if p.is_dir())
        if video is not None:
            wanted = [video] if isinstance(video, str) else list(video)
            unknown = [v for v in wanted if not (labelled / v).is_dir()]
            if unknown:
                raise FileNotFoundError(f"no labeled-data folder {unknown} in {labelled} (there are "
                                        f"{[p.name for p in folders]})")
            folders = [labelled / v for v in wanted]
        images, points, self.videos, self.files = [], [], [], []
        for folder in folders:
            stem = folder / f"CollectedData_{self.scorer}"
            path = stem.with_suffix(".csv") if stem.with_suffix(".csv").is_file() else stem.with_suffix(".h5")
            if not path.is_file():
                if video is not None:
                    raise FileNotFoundError(f"no labels {stem}.csv (or .h5) in {folder}")
                continue  # frames extracted but not labelled yet, or check_labels' <video>_labeled folder
            frames, parts, xy = read_dlc_labels(path)
            missing = [n for n in names if n not in parts]
            extra = [p for p in parts if p not in names]
            if missing or extra:
                raise ValueError(f"{path}: body parts {parts} do not match config.yaml's {names} (missing "
                                 f"{missing}, not in config.yaml {extra})")
            images += frames
            points.append(xy[:, [parts.index(n) for n in names]])
            self.videos += [folder.name] * len(frames)
            self.files.append(path)
        if not images:
            raise FileNotFoundError(f"no labels CollectedData_{self.scorer}.csv in any folder of {labelled}; "
                                    f"expected {_LAYOUT}")
        if len(set(images)) != len(images):
            repeated = sorted({i for i in images if images.count(i) > 1})[:3]
            raise ValueError(f"frames labelled twice in {[str(f) for f in self.files]}: {repeated}")
        keypoints = np.concatenate(points)
        super().__init__(project, images, keypoints, np.isfinite(keypoints).all(-1), transform=transform,
                         names=names, flip_pairs=flip_pairs_from_names(names))
        self.skeleton = self._skeleton(config_path, config.get("skeleton"), names)
        self.project_dir = project

    @staticmethod
    def _skeleton(path: Path, edges, names: list[str]) -> list[tuple[int, int]]:
        if edges is None:
            return []
        if not isinstance(edges, list) or not all(isinstance(e, list) and len(e) == 2 for e in edges):
            raise ValueError(f"{path}: skeleton must be a list of body-part pairs, got {edges!r}")
        pairs, unknown = [], []
        for a, b in edges:
            if str(a) in names and str(b) in names:
                pairs.append((names.index(str(a)), names.index(str(b))))
            else:
                unknown.append([a, b])
        if unknown:
            warnings.warn(f"{path}: skeleton edges {unknown} name body parts not in bodyparts; dropped", stacklevel=3)
        return pairs


def dlc_split(dataset, split: str, seed: int = 0, test_fraction: float = 0.2) -> list[int]:
    """The fixed train / test split by frame of a DeepLabCut project (``dlc`` in ``by_name``).

    The frames are sorted by path (so the split does not depend on folder listing order), permuted by
    ``torch.randperm`` with ``torch.Generator().manual_seed(seed)`` (seed 0 for every reported number),
    and the first ``round(test_fraction · M)`` (at least 1, at most ``M - 1``) are the test frames.
    For the 55 frames of ``shared/data/dlc-reaching``: 44 train and 11 test frames. Frames of one video
    are near-duplicates in time, so this measures fitting the labelled videos, not new ones.

    Args:
        dataset: a :class:`DLCProject` (anything with ``images``).
        split: ``"train"`` or ``"test"``.

    Returns:
        the sorted dataset indices of the split.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    images = list(dataset.images)
    if len(images) < 2:
        raise ValueError(f"cannot split {len(images)} frame(s) into train and test")
    by_path = sorted(range(len(images)), key=lambda i: images[i])
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed)).tolist()
    count = min(max(round(test_fraction * len(images)), 1), len(images) - 1)
    test = {by_path[i] for i in order[:count]}
    return sorted(test) if split == "test" else sorted(set(range(len(images))) - test)
