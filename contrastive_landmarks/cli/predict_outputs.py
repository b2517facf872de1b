"""What ``predict`` writes, for images and videos alike: DeepLabCut's scorer name, the format an output is
written in, the check that it can be written (before any prediction), the rows as a
:class:`~contrastive_landmarks.data.dlc_output.Track` for :func:`~contrastive_landmarks.data.dlc_output.write_track`
(the one writer of every format), and the one warning line for inputs whose points are guesses.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..data.dlc_output import format_for
from .common import UserError

if TYPE_CHECKING:
    from ..data.dlc_output import Track

__all__ = ["SUFFIXES", "check_writable", "dlc_scorer", "is_folder_name", "output_format", "track_of", "warn_content"]

#: What a DeepLabCut-named output's extension is, per format.
SUFFIXES = {"csv": ".csv", "dlc": ".csv", "json": ".json", "h5": ".h5"}


def dlc_scorer(model: str) -> str:
    """DeepLabCut's scorer for a model directory or registry name: ``DLC_<its folder name>``."""
    return f"DLC_{Path(str(model).rstrip('/').rstrip(os.sep)).name}"


def track_of(rows: list[dict], names: list[str], scorer: str = "model", *, key: str = "image") -> Track:
    """``rows`` (``{key, "points": (N, 2), "scores": (N,)}`` each) as a
    :class:`~contrastive_landmarks.data.dlc_output.Track` of ``len(rows)`` rows and the N landmarks ``names``."""
    import numpy as np

    from ..data.dlc_output import Track

    count = len(names)
    points = np.asarray([r["points"] for r in rows], dtype=np.float64).reshape(len(rows), count, 2)
    scores = np.asarray([r["scores"] for r in rows], dtype=np.float64).reshape(len(rows), count)
    return Track(points, scores, names, [r[key] for r in rows], scorer=scorer, key=key)


def is_folder_name(name: str) -> bool:
    """Whether ``name`` (an ``--output`` or ``--labelled-video``) names a folder: an existing one, or ending in a
    path separator."""
    return Path(name).is_dir() or name.endswith(("/", os.sep))


def check_writable(path: Path, inputs: list[Path]) -> None:
    """A :class:`UserError` unless ``path`` can be written: its folder exists and is writable, it is not a folder,
    not a read-only file, and not one of the ``inputs``."""
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: the output folder {path.parent} does not exist")
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")
    if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"cannot write {path}: no permission to write there")
    if path.exists() and any(path.resolve() == i.resolve() for i in inputs):
        raise UserError(f"{path} is an input; write the output elsewhere")


def output_format(given: str | None, output: Path | None, default: str) -> str:
    """``--format``, else the one ``output``'s suffix asks for, else ``default``; a :class:`UserError` when
    ``--format`` and a known suffix disagree (an HDF5 file named ``.csv`` is read by nothing)."""
    implied = format_for(output, default) if output is not None else default
    if given is None:
        return implied
    suffix = output.suffix.lower() if output is not None else ""
    if suffix in (".csv", ".json", ".h5", ".hdf5") and SUFFIXES[given] != {".hdf5": ".h5"}.get(suffix, suffix):
        raise UserError(f"--format {given} writes a {SUFFIXES[given]} file, but --output {output} ends in {suffix}")
    return given


def warn_content(what: list[str]) -> None:
    """One line on stderr for the inputs :func:`~contrastive_landmarks.check.content_problem` rejects."""
    if what:
        listed = "; ".join(what[:5]) + (f"; and {len(what) - 5} more" if len(what) > 5 else "")
        print(f"warning: {listed}: their points are guesses, not landmarks", file=sys.stderr)
