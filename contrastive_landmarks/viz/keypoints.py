"""Points drawn on images: predicted and true landmarks on a grid of same-size images (:func:`plot_landmarks`,
paper Fig. 3) and keypoints on frames of any sizes, one colour per body part (:func:`plot_keypoints`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor

from ._figure import as_images, figure_class, grid, new_figure, save_png

__all__ = ["plot_keypoints", "plot_landmarks"]


def plot_landmarks(
    images: Tensor,
    pred: Tensor | None = None,
    target: Tensor | None = None,
    visible: Tensor | None = None,
    *,
    ncols: int = 4,
    panel: float = 2.0,
    dpi: int = 100,
    titles: Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
):
    """Predicted (blue crosses) and true (green dots) landmarks on a grid of images (paper Fig. 3).

    Args:
        images: ``(B, 3, H, W)`` in ``[0, 1]``.
        pred, target: ``(B, N, 2)`` ``(x, y)`` pixels; either may be ``None``.
        visible: ``(B, N)`` bool; invisible target points are not drawn.
        ncols: images per row; ``panel``: inches per image.
        titles: one per image (e.g. the per-image error).
        path: save a PNG here.
    """
    plt = figure_class()
    images = as_images(images)
    rows, cols = grid(len(images), ncols)
    fig = new_figure(plt, (cols * panel, rows * panel), dpi)
    for i, image in enumerate(images):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(image.permute(1, 2, 0).numpy(), extent=(-0.5, image.shape[-1] - 0.5, image.shape[-2] - 0.5, -0.5))
        if target is not None:
            t = target[i].detach().cpu()
            keep = visible[i].cpu().bool() if visible is not None else torch.ones(len(t), dtype=torch.bool)
            ax.scatter(t[keep, 0], t[keep, 1], s=14, c="#2ca02c", edgecolors="white", linewidths=0.5, label="true")
        if pred is not None:
            p = pred[i].detach().cpu()
            ax.scatter(p[:, 0], p[:, 1], s=22, c="#1f77b4", marker="x", linewidths=1.2, label="predicted")
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
        ax.set_xlim(-0.5, image.shape[-1] - 0.5)
        ax.set_ylim(image.shape[-2] - 0.5, -0.5)
        ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93 if titles else 0.99, wspace=0.03, hspace=0.1)
    return save_png(fig, path, dpi)


def plot_keypoints(
    frames: Sequence[Tensor],
    pred: Tensor,
    truth: Tensor | None = None,
    visible: Tensor | None = None,
    *,
    names: Sequence[str] | None = None,
    ncols: int = 4,
    panel: float = 3.0,
    dpi: int = 100,
    path: str | os.PathLike | None = None,
):
    """Predicted (crosses) and true (dots) keypoints on frames of any sizes, one colour per body part.

    Args:
        frames: ``(3, H_i, W_i)`` images in ``[0, 1]``.
        pred, truth: ``(M, N, 2)`` pixels of each frame; ``visible``: ``(M, N)``, unlabelled truth not drawn.
        names: body-part names for the legend.
        path: save a PNG here.
    """
    plt = figure_class()
    rows, cols = grid(len(frames), ncols)
    fig = new_figure(plt, (cols * panel, rows * panel + 0.4), dpi)
    from matplotlib import colormaps

    colours = colormaps["tab20" if pred.shape[1] > 10 else "tab10"]
    for i, frame in enumerate(frames):
        ax = fig.add_subplot(rows, cols, i + 1)
        image = frame.detach().cpu().clamp(0, 1)
        ax.imshow(image.permute(1, 2, 0).numpy(), extent=(-0.5, image.shape[-1] - 0.5, image.shape[-2] - 0.5, -0.5))
        for j in range(pred.shape[1]):
            colour = colours(j % colours.N)
            label = names[j] if names and i == 0 else None
            if truth is not None and (visible is None or bool(visible[i, j])):
                t = truth[i, j].detach().cpu()
                ax.scatter([t[0]], [t[1]], s=16, color=colour, edgecolors="white", linewidths=0.6)
                p = pred[i, j].detach().cpu()
                ax.plot([t[0], p[0]], [t[1], p[1]], color=colour, linewidth=0.8)
            p = pred[i, j].detach().cpu()
            ax.scatter([p[0]], [p[1]], s=26, color=colour, marker="x", linewidths=1.3, label=label)
        ax.set_xlim(-0.5, image.shape[-1] - 0.5)
        ax.set_ylim(image.shape[-2] - 0.5, -0.5)
        ax.axis("off")
    if names:
        fig.legend(loc="lower center", ncol=min(len(names), 6), fontsize=7, frameon=False)
    fig.suptitle("dots: labels, crosses: predictions, lines join them", fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.08 if names else 0.01, top=0.94, wspace=0.03, hspace=0.05)
    return save_png(fig, path, dpi)
