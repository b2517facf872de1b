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
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .base import KeypointDataset, Transform, require_dir, require_file
from .csv_table import flip_pairs_from_names
from .dlc_config import read_dlc_config

__all__ = ["DLCProject", "dlc_split", "read_dlc_config", "read_dlc_labels"]  # read_dlc_config from .dlc_config

_LAYOUT = (
    "<project>/config.yaml and <project>/labeled-data/<video>/CollectedData_<scorer>.csv (DeepLabCut's project layout)"
)


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
        raise NotImplementedError(
            f"{path}: a multi-animal DeepLabCut file (header scorer / individuals / bodyparts "
            "/ coords) is not supported; this reader reads single-animal projects"
        )
    if first[:3] != ["scorer", "bodyparts", "coords"]:
        raise ValueError(
            f"{path}: expected DeepLabCut's 3-row header scorer / bodyparts / coords, got rows starting {first[:3]}"
        )
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
        raise ImportError(
            f"{path}: reading DeepLabCut's .h5 labels needs pandas and PyTables (pip install pandas "
            "tables); or save the labels as CSV too (DeepLabCut writes both)"
        ) from error
    frame = pandas.read_hdf(path)
    names = list(frame.columns.names)
    if "individuals" in names:
        raise NotImplementedError(f"{path}: a multi-animal DeepLabCut file is not supported")
    if names[-2:] != ["bodyparts", "coords"]:
        raise ValueError(f"{path}: expected columns (scorer, bodyparts, coords), got levels {names}")
    parts = list(dict.fromkeys(frame.columns.get_level_values("bodyparts")))
    xy = np.stack(
        [
            np.stack(
                [
                    frame.xs((p, c), level=("bodyparts", "coords"), axis=1).iloc[:, 0].to_numpy(float)
                    for c in ("x", "y")
                ],
                -1,
            )
            for p in parts
        ],
        1,
    )
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
        project_dir: the folder holding ``config.yaml`` and ``labeled-data/``, or one labels file in
            DeepLabCut's layout without a project around it (Lightning Pose's ``CollectedData.csv``: body
            parts from its header, frame paths relative to its folder).
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

    def __init__(
        self,
        project_dir: str | os.PathLike,
        *,
        transform: Transform | None = None,
        scorer: str | None = None,
        video: str | Sequence[str] | None = None,
    ) -> None:
        if Path(project_dir).is_file():
            self._init_from_labels(Path(project_dir), transform)
            return
        project = require_dir(project_dir, "DeepLabCut project", _LAYOUT)
        config_path = require_file(project / "config.yaml", "DeepLabCut config.yaml", _LAYOUT)
        self.config = config = read_dlc_config(config_path)
        if config.get("multianimalproject") is True:
            raise NotImplementedError(
                f"{config_path}: multi-animal DeepLabCut projects (multianimalproject: true) "
                "are not supported; this reader reads single-animal projects"
            )
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
                raise FileNotFoundError(
                    f"no labeled-data folder {unknown} in {labelled} (there are {[p.name for p in folders]})"
                )
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
                raise ValueError(
                    f"{path}: body parts {parts} do not match config.yaml's {names} (missing "
                    f"{missing}, not in config.yaml {extra})"
                )
            images += frames
            points.append(xy[:, [parts.index(n) for n in names]])
            self.videos += [folder.name] * len(frames)
            self.files.append(path)
        if not images:
            raise FileNotFoundError(
                f"no labels CollectedData_{self.scorer}.csv in any folder of {labelled}; expected {_LAYOUT}"
            )
        if len(set(images)) != len(images):
            repeated = sorted({i for i in images if images.count(i) > 1})[:3]
            raise ValueError(f"frames labelled twice in {[str(f) for f in self.files]}: {repeated}")
        keypoints = np.concatenate(points)
        super().__init__(
            project,
            images,
            keypoints,
            np.isfinite(keypoints).all(-1),
            transform=transform,
            names=names,
            flip_pairs=flip_pairs_from_names(names),
        )
        self.skeleton = self._skeleton(config_path, config.get("skeleton"), names)
        self.project_dir = project

    def _init_from_labels(self, path: Path, transform: Transform | None) -> None:
        """A bare labels file (Lightning Pose's ``CollectedData.csv``): body parts from its header, frames
        relative to its folder, no config.yaml."""
        frames, parts, xy = read_dlc_labels(path)
        self.config, self.scorer, self.files, self.skeleton = {}, None, [path], []
        self.videos = [Path(f).parent.name for f in frames]
        self.project_dir = path.parent
        super().__init__(
            path.parent,
            frames,
            xy,
            np.isfinite(xy).all(-1),
            transform=transform,
            names=parts,
            flip_pairs=flip_pairs_from_names(parts),
        )

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
