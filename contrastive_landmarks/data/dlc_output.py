"""Prediction files: what ``predict`` writes and ``filter`` / ``plot-trajectories`` read, in four formats.

A :class:`Track` is a model's points over frames (or images): ``xy`` ``(T, N, 2)`` ``(x, y)`` pixels and
``likelihood`` ``(T, N)`` for N body parts, with a row index of frame numbers (a video) or image paths.

- ``h5``: DeepLabCut's ``.h5``, a pandas DataFrame stored with ``to_hdf(key="df_with_missing",
  format="table")``, columns a MultiIndex ``(scorer, bodyparts, coords)`` with coords ``x, y, likelihood``, one
  row per frame (index = frame number). Needs pandas + PyTables: the ``[h5]`` extra.
- ``dlc``: DeepLabCut's CSV (what ``DataFrame.to_csv`` makes of the above): rows ``scorer`` / ``bodyparts`` /
  ``coords``, then one row per frame, the frame number first.
- ``csv``: ``frame,<name>_x,<name>_y,<name>_score,...`` (``image`` instead of ``frame`` for images).
- ``json``: a list of ``{"frame": i, "landmarks": {name: {"x", "y", "score"}}}``.

CSV values are written with 3 decimals; the ``.h5`` holds float64 as computed. Reading takes any of them
(``.h5`` by suffix, DeepLabCut's CSV by its first cell ``scorer``), so a DeepLabCut ``analyze_videos``
output is read too (single-animal; multi-animal files, with an ``individuals`` level, raise).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

__all__ = [
    "FORMATS",
    "H5_EXTRA_MESSAGE",
    "Track",
    "file_format",
    "format_for",
    "read_track",
    "require_h5",
    "write_track",
]

FORMATS = ("csv", "json", "dlc", "h5")
#: The one line a missing pandas / PyTables gives.
H5_EXTRA_MESSAGE = (
    "DeepLabCut's .h5 needs pandas and PyTables, which are the [h5] extra: "
    'pip install "contrastive-landmarks[h5]" (or write DeepLabCut\'s CSV with --format dlc)'
)


@dataclass
class Track:
    """Predicted points of N body parts over T frames or images.

    Attributes:
        xy: ``(T, N, 2)`` float ``(x, y)`` pixels (pixel centres at integers).
        likelihood: ``(T, N)`` float.
        names: the N body part names.
        index: T frame numbers (``key == "frame"``) or image paths (``key == "image"``).
        scorer: DeepLabCut's ``scorer`` column level.
        key: ``"frame"`` or ``"image"``.
    """

    xy: np.ndarray
    likelihood: np.ndarray
    names: list[str]
    index: list
    scorer: str = "model"
    key: str = "frame"

    def __post_init__(self) -> None:
        self.xy = np.asarray(self.xy, dtype=np.float64)
        self.likelihood = np.asarray(self.likelihood, dtype=np.float64)
        self.names = [str(n) for n in self.names]
        self.index = list(self.index)
        frames, parts = len(self.index), len(self.names)
        if self.xy.shape != (frames, parts, 2) or self.likelihood.shape != (frames, parts):
            raise ValueError(
                f"a track of {frames} rows and {parts} body parts needs xy ({frames}, {parts}, 2) and likelihood "
                f"({frames}, {parts}), got {self.xy.shape} and {self.likelihood.shape}"
            )

    def replace(self, **changes) -> Track:
        """A copy with ``changes`` (e.g. filtered ``xy``)."""
        return replace(self, **changes)


def require_h5():
    """``pandas``, or an :class:`ImportError` whose message is :data:`H5_EXTRA_MESSAGE` (PyTables checked too)."""
    try:
        import pandas
        import tables  # noqa: F401  (pandas writes HDF5 through PyTables)
    except ImportError as error:
        raise ImportError(H5_EXTRA_MESSAGE) from error
    return pandas


def format_for(path: str | os.PathLike, default: str) -> str:
    """The format a file's suffix asks for: ``.h5`` (``.hdf5``) -> ``h5``, ``.json`` -> ``json``, else ``default``."""
    suffix = Path(path).suffix.lower()
    return {".h5": "h5", ".hdf5": "h5", ".json": "json"}.get(suffix, default)


def file_format(path: str | os.PathLike) -> str:
    """The format an existing predictions file is in: by suffix (:func:`format_for`), and a CSV by its first cell
    (``scorer``: DeepLabCut's, ``dlc``; else ``csv``), so that a filtered copy can be written the way it was read."""
    fmt = format_for(path, "csv")
    if fmt != "csv":
        return fmt
    with Path(path).open(newline="", encoding="utf-8", errors="replace") as handle:
        first = next(csv.reader(handle), [""])
    return "dlc" if first and first[0].strip() == "scorer" else "csv"


# -- writing ----------------------------------------------------------------------------------------------------
def _dataframe(track: Track):
    pandas = require_h5()
    columns = pandas.MultiIndex.from_product(
        [[track.scorer], track.names, ["x", "y", "likelihood"]], names=["scorer", "bodyparts", "coords"]
    )
    values = np.concatenate([track.xy, track.likelihood[..., None]], -1).reshape(len(track.index), -1)
    index = pandas.Index([int(i) for i in track.index] if track.key == "frame" else [str(i) for i in track.index])
    return pandas.DataFrame(values, columns=columns, index=index)


def write_track(path: str | os.PathLike, track: Track, fmt: str) -> None:
    """Write ``track`` to ``path`` as ``fmt`` (one of :data:`FORMATS`; the module docstring describes each).

    Raises:
        ImportError: ``h5`` without pandas / PyTables (:data:`H5_EXTRA_MESSAGE`).
        ValueError: an unknown format.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "h5":
        frame = _dataframe(track)
        frame.to_hdf(path, key="df_with_missing", format="table", mode="w")
        return
    if fmt == "json":
        payload = [
            {
                track.key: index,
                "landmarks": {
                    n: {"x": float(p[0]), "y": float(p[1]), "score": float(s)} for n, p, s in zip(track.names, xy, lk)
                },
            }
            for index, xy, lk in zip(track.index, track.xy.tolist(), track.likelihood.tolist())
        ]
        path.write_text(json.dumps(payload, indent=2) + "\n")
        return
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        if fmt == "dlc":
            writer.writerow(["scorer", *[track.scorer] * (3 * len(track.names))])
            writer.writerow(["bodyparts", *[n for n in track.names for _ in range(3)]])
            writer.writerow(["coords", *["x", "y", "likelihood"] * len(track.names)])
        else:
            writer.writerow([track.key, *[f"{n}_{c}" for n in track.names for c in ("x", "y", "score")]])
        values = np.concatenate([track.xy, track.likelihood[..., None]], -1).reshape(len(track.index), -1)
        for index, row in zip(track.index, values.tolist()):
            writer.writerow([index, *[f"{v:.3f}" for v in row]])


# -- reading ----------------------------------------------------------------------------------------------------
def _float(text: str, path: Path, line: int) -> float:
    text = text.strip()
    if not text or text.lower() == "nan":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{path}:{line}: not a number: {text!r}") from None


def _index_value(text: str, key: str):
    return int(text) if key == "frame" and text.strip().lstrip("-").isdigit() else text


def _read_dlc_csv(path: Path, rows: list[list[str]]) -> Track:
    if len(rows) < 3 or [r[0].strip() if r else "" for r in rows[:3]] != ["scorer", "bodyparts", "coords"]:
        second = rows[1][0].strip() if len(rows) > 1 and rows[1] else ""
        if second == "individuals":
            raise ValueError(f"{path}: a multi-animal DeepLabCut file (individuals) is not supported")
        raise ValueError(f"{path}: expected DeepLabCut's header rows scorer / bodyparts / coords")
    scorers, parts, coords = rows[0][1:], rows[1][1:], [c.strip() for c in rows[2][1:]]
    names = list(dict.fromkeys(p.strip() for p in parts))
    if len(coords) != 3 * len(names) or coords != ["x", "y", "likelihood"] * len(names):
        raise ValueError(f"{path}: expected x, y, likelihood columns per body part (DeepLabCut's predictions)")
    index, values = [], []
    for line, row in enumerate(rows[3:], start=4):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != 1 + len(coords):
            raise ValueError(f"{path}:{line}: {len(row)} cells but the header has {1 + len(coords)}")
        index.append(_index_value(row[0], "frame"))
        values.append([_float(cell, path, line) for cell in row[1:]])
    table = np.asarray(values, dtype=np.float64).reshape(len(index), len(names), 3)
    key = "frame" if all(isinstance(i, int) for i in index) else "image"
    return Track(table[..., :2], table[..., 2], names, index, scorer=scorers[0].strip() if scorers else "", key=key)


def _read_plain_csv(path: Path, rows: list[list[str]]) -> Track:
    header = [c.strip() for c in rows[0]]
    key = header[0]
    if key not in ("frame", "image") or (len(header) - 1) % 3:
        raise ValueError(
            f"{path}: expected DeepLabCut's CSV (first cell 'scorer') or frame,<name>_x,<name>_y,<name>_score,... "
            f"(first cell 'frame' or 'image'), got {header[:4]}"
        )
    names = []
    for i in range(1, len(header), 3):
        name = header[i][:-2]
        if header[i : i + 3] != [f"{name}_x", f"{name}_y", f"{name}_score"]:
            raise ValueError(f"{path}: columns {header[i : i + 3]} are not <name>_x, <name>_y, <name>_score")
        names.append(name)
    index, values = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"{path}:{line}: {len(row)} cells but the header has {len(header)}")
        index.append(_index_value(row[0], key))
        values.append([_float(cell, path, line) for cell in row[1:]])
    table = np.asarray(values, dtype=np.float64).reshape(len(index), len(names), 3)
    return Track(table[..., :2], table[..., 2], names, index, key=key)


def _read_json(path: Path) -> Track:
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON ({error})") from None
    if not isinstance(payload, list) or not payload or not isinstance(payload[0], dict):
        raise ValueError(f"{path}: expected a list of {{'frame': i, 'landmarks': {{...}}}} (predict's JSON)")
    key = "frame" if "frame" in payload[0] else "image"
    names = list(payload[0].get("landmarks", {}))
    try:
        table = np.array(
            [[[r["landmarks"][n][c] for c in ("x", "y", "score")] for n in names] for r in payload], dtype=np.float64
        )
        index = [r[key] for r in payload]
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: an entry lacks {error} (predict's JSON layout expected)") from None
    return Track(table[..., :2], table[..., 2], names, index, key=key)


def _read_h5(path: Path) -> Track:
    pandas = require_h5()
    try:
        frame = pandas.read_hdf(path)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"cannot read {path} as DeepLabCut's .h5: {error}") from None
    levels = list(frame.columns.names)
    if "individuals" in levels:
        raise ValueError(f"{path}: a multi-animal DeepLabCut file (individuals) is not supported")
    if levels != ["scorer", "bodyparts", "coords"]:
        raise ValueError(f"{path}: expected columns (scorer, bodyparts, coords), got levels {levels}")
    names = list(dict.fromkeys(frame.columns.get_level_values("bodyparts")))
    scorer = str(frame.columns.get_level_values("scorer")[0])
    try:
        table = np.stack(
            [
                np.stack([frame[(scorer, n, c)].to_numpy(np.float64) for c in ("x", "y", "likelihood")], -1)
                for n in names
            ],
            1,
        )
    except KeyError as error:
        raise ValueError(f"{path}: no column {error} (x, y, likelihood per body part expected)") from None
    index = [int(i) if isinstance(i, (int, np.integer)) else str(i) for i in frame.index]
    key = "frame" if all(isinstance(i, int) for i in index) else "image"
    return Track(table[..., :2], table[..., 2], names, index, scorer=scorer, key=key)


def read_track(path: str | os.PathLike) -> Track:
    """A prediction file in any of :data:`FORMATS` (chosen by suffix, and for CSV by the first cell).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a prediction file of these layouts (names the file).
        ImportError: a ``.h5`` without pandas / PyTables.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions not found: {path}")
    fmt = file_format(path)
    if fmt == "h5":
        return _read_h5(path)
    if fmt == "json":
        return _read_json(path)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise ValueError(f"{path} is empty")
    track = _read_dlc_csv(path, rows) if fmt == "dlc" else _read_plain_csv(path, rows)
    if not track.index:
        raise ValueError(f"{path} has a header but no rows")
    return track
