"""What every plot of :mod:`contrastive_landmarks.viz` shares: matplotlib imported on first use (the ``viz`` extra),
a figure built without pyplot, saved as a PNG, images checked and brought to the CPU, a grid of panels, the palette.
"""

from __future__ import annotations

import math
import os

from torch import Tensor

__all__ = ["COLORS", "as_images", "figure_class", "grid", "new_figure", "save_png"]


def figure_class():
    """Import matplotlib (figures are built without pyplot: no global figure state, no GUI backend)."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            'plotting needs matplotlib, which is in the [viz] extra: pip install "contrastive-landmarks[viz]"'
        ) from error
    return Figure


def new_figure(figure_class, figsize: tuple[float, float], dpi: int):
    return figure_class(figsize=figsize, dpi=dpi)


def save_png(fig, path: str | os.PathLike | None, dpi: int):
    if path is not None:
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, format="png")
    return fig


def as_images(images: Tensor) -> Tensor:
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a tensor (B, 3, H, W) or (3, H, W), got {type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W) or (3, H, W) in [0, 1], got {tuple(images.shape)}")
    return images.detach().float().cpu().clamp(0, 1)


def grid(count: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, count))
    return math.ceil(count / ncols), ncols


#: One colour per landmark, match or curve, in order (cycled).
COLORS = [
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#fabed4",
    "#469990",
    "#dcbeff",
    "#9a6324",
    "#fffac8",
    "#800000",
    "#aaffc3",
    "#808000",
    "#ffd8b1",
    "#000075",
]
