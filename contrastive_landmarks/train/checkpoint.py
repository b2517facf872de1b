"""Atomic, pickle-free-on-read training checkpoints, the one layout the recipes write them in, and RNG state capture.

Checkpoints hold tensors and plain Python values only (no classes), are written to a temporary file
in the target folder and moved into place with :func:`os.replace` (a crash never leaves a truncated
checkpoint), and are read back with ``torch.load(weights_only=True)``. A process killed during a write
(SIGKILL, power loss) leaves its temporary file behind; :func:`load_checkpoint` removes such leftovers
of the checkpoint it reads, so resuming cleans up after the crash.

A recipe's checkpoint is :func:`training_state`: its ``format`` tag (recipe and layout version), the
``settings`` a resume must match, then the recipe's own parts (weights, optimiser, random state, position,
history). :func:`resume_checkpoint` reads one back for a resume, refusing another recipe's file or changed
settings (naming them, :func:`~._loop.check_resumable`). The learning rate is a function of the position
(:func:`~._loop.warmup_cosine`), so no schedule state is stored.
"""

from __future__ import annotations

import glob
import os
import random
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._loop import check_resumable

__all__ = [
    "get_rng_state",
    "load_checkpoint",
    "resume_checkpoint",
    "save_checkpoint",
    "set_rng_state",
    "training_state",
]


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=_TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


_TEMP_SUFFIX = ".tmp"


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files an interrupted :func:`save_checkpoint` of ``path`` left; returns them."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = sorted(path.parent.glob(f"{glob.escape(_temp_prefix(path))}*{_TEMP_SUFFIX}"))
    for leftover in stale:
        leftover.unlink(missing_ok=True)
    return stale


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    *,
    expected_format: str | Sequence[str | None] | None = None,
    kind: str = "training checkpoint",
) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code runs).

    Partial temporary files of ``path`` that a killed writer left are removed first, with a warning.

    Args:
        expected_format: the ``"format"`` entry the checkpoint must hold (a recipe's own tag), or the tags it
            may hold (a recipe's current layout and the older ones it still reads; ``None`` among them: a
            checkpoint without a tag); ``kind`` names that recipe's checkpoints in the error.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a dict, or (with ``expected_format``) ``{path} is not a {kind} of this library``.
    """
    path = Path(path)
    stale = remove_stale_temp_files(path)
    if stale:
        warnings.warn(
            f"removed {len(stale)} partial checkpoint file(s) left by an interrupted write: "
            + ", ".join(p.name for p in stale),
            stacklevel=2,
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a training checkpoint (a dict), got {type(state).__name__}")
    if expected_format is not None:
        accepted = (expected_format,) if isinstance(expected_format, str) else tuple(expected_format)
        if state.get("format") not in accepted:
            raise ValueError(f"{path} is not a {kind} of this library")
    return state


def training_state(format: str, settings: Mapping[str, Any], **parts: Any) -> dict:
    """A recipe's checkpoint: ``{"format": format, "settings": settings, **parts}``.

    Args:
        format: the recipe's tag and layout version (``"contrastive_landmarks.moco/2"``).
        settings: what a resume must match (plain values, under the names a refusal shows).
        parts: the recipe's own state (weights, optimiser, random state, position, history, best state).
    """
    return {"format": format, "settings": dict(settings), **parts}


def resume_checkpoint(
    path: str | os.PathLike,
    settings: Mapping[str, Any],
    *,
    formats: Sequence[str | None],
    kind: str,
    map_location: str | torch.device = "cpu",
    recorded: Callable[[dict], Mapping[str, Any]] | None = None,
    reason: str = "it was trained with other settings or data",
    remedy: str = "pass the same options, or use another output folder to start afresh",
) -> dict:
    """Read a recipe's checkpoint to continue from, refusing another recipe's and one of other settings.

    Args:
        settings: this run's, compared with the checkpoint's ``"settings"``.
        formats: the tags this recipe reads (:func:`load_checkpoint`'s ``expected_format``); ``kind`` names its
            checkpoints in the error.
        recorded: the settings of an older layout that did not store them under ``"settings"``, from the
            checkpoint (default: none recorded, so a resume with any setting is refused naming it).
        reason, remedy: the refusal's words (:func:`~._loop.check_resumable`).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not one of ``formats``, or settings that differ from this run's (every change named).
    """
    saved = load_checkpoint(path, map_location, expected_format=formats, kind=kind)
    if "settings" in saved:
        before = saved["settings"]
    else:
        before = recorded(saved) if recorded is not None else {}
    check_resumable(before, settings, path, reason=reason, remedy=remedy)
    return saved


def get_rng_state() -> dict:
    """The states of Python's, NumPy's, torch's (CPU) and every CUDA device's generators, as tensors/lists."""
    version, keys, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [version, list(keys), gauss],
        "numpy": [
            np_name,
            torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            int(np_pos),
            int(np_has_gauss),
            float(np_gauss),
        ],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` captured (CUDA states only when the device count matches)."""
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
