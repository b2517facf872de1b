"""Filtering a predicted track over time: uncertain points filled in, swaps and jumps removed, jitter smoothed.

:func:`filter_track` works on arrays (NumPy only) and is what ``contrastive-landmarks filter`` and
``predict --filter`` run on a video's predictions. Per body part, in this order:

1. **Uncertain points.** A point whose likelihood is below the p-cutoff (DeepLabCut's ``pcutoff``, 0.6 by
   default) or whose coordinates are not finite is *missing*.
2. **Swaps and jumps.** Each body part's track is compared with its running median over ``outlier_window``
   frames (missing points interpolated first, as in 3), which ignores any run of up to ``outlier_window // 2``
   stray frames. A point further than ``max_jump`` pixels from it is an outlier. When two body parts are both
   outliers in a frame and each sits much nearer the *other's* running median than its own, they were swapped:
   they are exchanged back (with their likelihoods). The distances are then measured again against a running
   median without the outliers, and a point still further than ``max_jump`` becomes missing. ``max_jump`` defaults
   to 8 times the body part's median distance from its running median (at least 2 px): a jump far beyond the
   track's own jitter. A fast reversal of direction also leaves the running median (by up to
   ``outlier_window // 2`` frames of motion at the turn), so with fast movements set ``max_jump`` in pixels
   (``inf`` switches outlier removal off).
3. **Gaps.** Missing points are interpolated linearly in time between the nearest kept frames of the same body
   part; before the first and after the last kept frame the nearest kept point is held (no extrapolation). A
   body part with no kept frame at all is left as it was (:attr:`FilteredTrack.unfiltered`).
4. **Jitter.** Each coordinate is smoothed over ``window`` frames: a running median (``"median"``; frames past
   either end repeat the end value, where DeepLabCut's ``medfilt`` pads with zeros), or a Savitzky-Golay filter
   (``"savgol"``: the value at the centre of a least-squares polynomial of degree ``polyorder`` fitted to the
   window; the first and last ``window // 2`` frames take the polynomial fitted to the first / last window,
   SciPy's ``mode="interp"``).

The likelihood column keeps the model's own value (a filled point is no more certain for being filled), so a
filtered point whose likelihood is below the p-cutoff was interpolated; :attr:`FilteredTrack.filled` says so
too.

>>> import numpy as np
>>> t = np.arange(50.0)
>>> truth = np.stack([t, 2 * t], -1)[:, None, :]  # (T, N, 2): one body part moving at (1, 2) px a frame
>>> xy, likelihood = truth.copy(), np.ones((50, 1))
>>> xy[20:23], likelihood[20:23] = 999.0, 0.1  # three uncertain frames, far off
>>> result = filter_track(xy, likelihood)
>>> bool(np.allclose(result.xy, truth)), int(result.filled.sum())
(True, 3)
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "DEFAULT_PCUTOFF",
    "DEFAULT_WINDOWS",
    "METHODS",
    "FilteredTrack",
    "filter_track",
    "find_pcutoff",
    "median_filter",
    "savgol_coefficients",
    "savgol_filter",
]

#: DeepLabCut's default p-cutoff.
DEFAULT_PCUTOFF = 0.6
METHODS = ("median", "savgol")
#: Smoothing window (frames) of each method when none is given: DeepLabCut's 5 for the median; 9 for
#: Savitzky-Golay (degree 2), which removes about as much jitter while following curves more closely.
DEFAULT_WINDOWS = {"median": 5, "savgol": 9}


class FilteredTrack(NamedTuple):
    """What :func:`filter_track` returns.

    Attributes:
        xy: ``(T, N, 2)`` filtered ``(x, y)`` pixels.
        likelihood: ``(T, N)`` the model's likelihoods (exchanged along with swapped points).
        filled: ``(T, N)`` bool, points that were missing (below the p-cutoff, not finite, or an outlier) and
            are interpolated (or held at the ends).
        swapped: ``(T, N)`` bool, points exchanged back with another body part's.
        max_jump: ``(N,)`` the outlier threshold used per body part, in pixels.
        unfiltered: ``(N,)`` bool, body parts with no point to keep (none at or above the p-cutoff), returned as
            they were: neither interpolated nor smoothed.
    """

    xy: np.ndarray
    likelihood: np.ndarray
    filled: np.ndarray
    swapped: np.ndarray
    max_jump: np.ndarray
    unfiltered: np.ndarray


def _odd_window(window: int, what: str) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1 or window % 2 == 0:
        raise ValueError(f"{what} must be an odd number of frames (1, 3, 5, ...), got {window!r}")
    return int(window)


def _windows(values: np.ndarray, window: int) -> np.ndarray:
    """``(T, window)`` windows centred on each frame of ``values`` ``(T,)``, ends repeating the end values."""
    half = window // 2
    padded = np.pad(values, (half, half), mode="edge")
    return np.lib.stride_tricks.sliding_window_view(padded, window)


def median_filter(values: np.ndarray, window: int) -> np.ndarray:
    """Running median of ``values`` ``(T,)`` over ``window`` (odd) frames; frames past the ends repeat the ends.

    >>> median_filter(np.array([0.0, 1.0, 9.0, 3.0, 4.0]), 3).tolist()
    [0.0, 1.0, 3.0, 4.0, 4.0]
    """
    window = _odd_window(window, "window")
    values = np.asarray(values, dtype=np.float64)
    if window == 1 or len(values) == 0:
        return values.copy()
    return np.median(_windows(values, window), axis=-1)


def savgol_coefficients(window: int, polyorder: int) -> np.ndarray:
    """The ``(polyorder + 1, window)`` least-squares fit of a degree-``polyorder`` polynomial to ``window`` samples
    at offsets ``-window // 2 .. window // 2``: ``coefficients @ samples`` gives the polynomial's coefficients
    (constant first), so row 0 is the Savitzky-Golay smoothing kernel.

    >>> np.round(savgol_coefficients(5, 2)[0] * 35).tolist()  # the classic (-3, 12, 17, 12, -3) / 35
    [-3.0, 12.0, 17.0, 12.0, -3.0]
    """
    window = _odd_window(window, "window")
    if not 0 <= polyorder < window:
        raise ValueError(f"polyorder must be in [0, window), got {polyorder} for a window of {window}")
    offsets = np.arange(window, dtype=np.float64) - window // 2
    return np.linalg.pinv(np.vander(offsets, polyorder + 1, increasing=True))


def savgol_filter(values: np.ndarray, window: int, polyorder: int = 2) -> np.ndarray:
    """Savitzky-Golay smoothing of ``values`` ``(T,)`` (SciPy's ``savgol_filter(..., mode="interp")``).

    Each frame gets the centre value of the polynomial fitted to the ``window`` frames around it; the first and
    last ``window // 2`` frames get the polynomial fitted to the first / last window. A track shorter than
    ``window`` is fitted with the longest odd window it holds (returned as is if that is not above ``polyorder``).
    """
    window = _odd_window(window, "window")
    values = np.asarray(values, dtype=np.float64)
    if len(values) < window:
        window = len(values) - (1 - len(values) % 2)
    if window <= polyorder or window < 3:
        return values.copy()
    fit = savgol_coefficients(window, polyorder)
    half = window // 2
    out = np.empty_like(values)
    out[half : len(values) - half] = np.lib.stride_tricks.sliding_window_view(values, window) @ fit[0]
    powers = np.vander(np.arange(window, dtype=np.float64) - half, polyorder + 1, increasing=True)
    out[:half] = (powers @ (fit @ values[:window]))[:half]
    out[len(values) - half :] = (powers @ (fit @ values[-window:]))[half + 1 :]
    return out


def _interpolate(values: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """``values`` ``(T,)`` with the frames not ``kept`` interpolated linearly (ends held); unchanged if none kept."""
    if kept.all() or not kept.any():
        return values.copy()
    frames = np.arange(len(values))
    out = values.copy()
    out[~kept] = np.interp(frames[~kept], frames[kept], values[kept])
    return out


def _running_median(xy: np.ndarray, usable: np.ndarray, window: int) -> np.ndarray:
    """``(T, N, 2)``: each body part's running median over ``window`` frames of its ``usable`` ``(T, N)`` points of
    ``xy`` ``(T, N, 2)``, the others interpolated first (so that a gap does not make the window lopsided on a moving
    part); NaN for a body part with none."""
    ref = np.full_like(xy, np.nan)
    for n in np.flatnonzero(usable.any(0)):
        for c in range(2):
            ref[:, n, c] = median_filter(_interpolate(xy[:, n, c], usable[:, n]), window)
    return ref


def _jump_threshold(distance: np.ndarray, kept: np.ndarray, max_jump: float | None) -> np.ndarray:
    """``(N,)`` outlier threshold in pixels: ``max_jump``, or 8 times each body part's median ``distance`` ``(T, N)``
    from its running median over its ``kept`` points (at least 2 px)."""
    if max_jump is not None:
        return np.full(distance.shape[1], float(max_jump))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a body part with no kept point
        typical = np.nanmedian(np.where(kept, distance, np.nan), axis=0)
    return np.maximum(8 * np.nan_to_num(typical, nan=0.0), 2.0)


def _swap_back(
    xy: np.ndarray, likelihood: np.ndarray, outlier: np.ndarray, ref: np.ndarray, distance: np.ndarray
) -> np.ndarray:
    """In place: exchange back two outliers of one frame when each sits much nearer the other's running median
    ``ref`` than its own (points of ``xy`` with their ``likelihood``); returns ``(T, N)`` bool, the points swapped."""
    swapped = np.zeros_like(outlier)
    for t in np.flatnonzero(outlier.sum(1) >= 2):
        candidates = np.flatnonzero(outlier[t])
        for i, a in enumerate(candidates):
            for b in candidates[i + 1 :]:
                if swapped[t, a] or swapped[t, b]:
                    continue
                a_at_b = np.linalg.norm(xy[t, a] - ref[t, b])
                b_at_a = np.linalg.norm(xy[t, b] - ref[t, a])
                own = (distance[t, a], distance[t, b])
                if a_at_b + b_at_a < 0.5 * sum(own) and max(a_at_b, b_at_a) < min(own):
                    xy[t, [a, b]] = xy[t, [b, a]]
                    likelihood[t, [a, b]] = likelihood[t, [b, a]]
                    swapped[t, [a, b]] = True
    return swapped


def _fill_and_smooth(
    xy: np.ndarray, kept: np.ndarray, method: str, window: int, polyorder: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 3 and 4: the points not ``kept`` interpolated, then each coordinate smoothed. Returns the ``(T, N, 2)``
    track, ``filled`` ``(T, N)`` and ``unfiltered`` ``(N,)`` (body parts with nothing kept, returned as they were)."""
    frames, parts = kept.shape
    filled = ~kept
    out = np.empty_like(xy)
    unfiltered = ~kept.any(0)  # (N,)
    for n in range(parts):
        if unfiltered[n]:
            out[:, n] = xy[:, n]
            filled[:, n] = False
            continue
        for c in range(2):
            track = _interpolate(xy[:, n, c], kept[:, n])
            if window > 1 and frames > 1:
                track = median_filter(track, window) if method == "median" else savgol_filter(track, window, polyorder)
            out[:, n, c] = track
    return out, filled, unfiltered


def filter_track(
    xy: np.ndarray,
    likelihood: np.ndarray,
    *,
    method: str = "median",
    window: int | None = None,
    pcutoff: float = DEFAULT_PCUTOFF,
    max_jump: float | None = None,
    outlier_window: int = 9,
    polyorder: int = 2,
) -> FilteredTrack:
    """Filter one animal's track over time (the steps of this module's docstring).

    Args:
        xy: ``(T, N, 2)`` ``(x, y)`` pixels of N body parts in T consecutive frames (NaN allowed: missing).
        likelihood: ``(T, N)`` the model's likelihood of each point.
        method: ``"median"`` or ``"savgol"`` smoothing.
        window: smoothing window in frames, odd (default :data:`DEFAULT_WINDOWS` of the method; 1: no smoothing).
        pcutoff: points with a likelihood below it are missing.
        max_jump: outlier threshold in pixels (default: 8 times each body part's median distance from its
            running median, at least 2 px; ``math.inf``: no outlier removal).
        outlier_window: frames of the running median outliers are measured against (odd; runs of up to
            ``outlier_window // 2`` stray frames are caught).
        polyorder: polynomial degree of ``"savgol"``.

    Returns:
        a :class:`FilteredTrack`.

    Raises:
        ValueError: mismatched shapes, an unknown method, an even window.
    """
    xy = np.array(xy, dtype=np.float64)
    likelihood = np.array(likelihood, dtype=np.float64)
    if xy.ndim != 3 or xy.shape[-1] != 2:
        raise ValueError(f"xy must be (T, N, 2), got {xy.shape}")
    if likelihood.shape != xy.shape[:2]:
        raise ValueError(f"likelihood must be (T, N) = {xy.shape[:2]}, got {likelihood.shape}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    window = _odd_window(DEFAULT_WINDOWS[method] if window is None else window, "window")
    outlier_window = _odd_window(outlier_window, "outlier_window")
    if not 0 <= pcutoff <= 1:
        raise ValueError(f"pcutoff must be in [0, 1], got {pcutoff}")
    if max_jump is not None and not max_jump > 0:
        raise ValueError(f"max_jump must be a positive number of pixels, got {max_jump}")
    kept = np.isfinite(xy).all(-1) & (likelihood >= pcutoff)  # (T, N)
    ref = _running_median(xy, kept, outlier_window)
    distance = np.linalg.norm(xy - ref, axis=-1)  # (T, N)
    threshold = _jump_threshold(distance, kept, max_jump)
    outlier = kept & (distance > threshold)
    swapped = _swap_back(xy, likelihood, outlier, ref, distance)
    if outlier.any():  # measure again against a running median without the outliers (swapped points put back)
        ref = _running_median(xy, kept & (~outlier | swapped), outlier_window)
        distance = np.linalg.norm(xy - ref, axis=-1)
        outlier = kept & (distance > threshold)
    kept &= ~outlier
    out, filled, unfiltered = _fill_and_smooth(xy, kept, method, window, polyorder)
    return FilteredTrack(out, likelihood, filled, swapped, threshold, unfiltered)


_PCUTOFF_LINE = re.compile(r"^pcutoff\s*:\s*([0-9.eE+-]+)\s*(?:#.*)?$", re.MULTILINE)


def find_pcutoff(near: str | os.PathLike) -> tuple[float, Path | None]:
    """The ``pcutoff`` of the DeepLabCut project around ``near`` (a video or predictions file, or a folder):
    ``config.yaml`` in its folder or the folder above (``<project>/videos/<video>``), else
    :data:`DEFAULT_PCUTOFF`.

    Returns:
        ``(pcutoff, the config.yaml it came from or None)``.

    Raises:
        ValueError: a config.yaml whose ``pcutoff`` is not a number in [0, 1] (names the file).
    """
    path = Path(near)
    folder = path if path.is_dir() else path.parent
    for candidate in (folder / "config.yaml", folder.parent / "config.yaml"):
        if not candidate.is_file():
            continue
        try:
            text = candidate.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        match = _PCUTOFF_LINE.search(text)
        if match is None:
            continue
        try:
            value = float(match.group(1))
        except ValueError:
            value = math.nan
        if not 0 <= value <= 1:
            raise ValueError(f"{candidate}: pcutoff must be a number in [0, 1], got {match.group(1)!r}")
        return value, candidate
    return DEFAULT_PCUTOFF, None
