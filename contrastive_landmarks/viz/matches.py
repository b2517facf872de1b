"""Matches between two images: reference points in one joined to their matches in the other (:func:`plot_matches`,
paper Fig. 2), coloured by correctness when the truth is known.
"""

from __future__ import annotations

import os

from torch import Tensor

from ._figure import COLORS, as_images, figure_class, new_figure, save_png

__all__ = ["plot_matches"]


def plot_matches(
    image_a: Tensor,
    points_a: Tensor,
    image_b: Tensor,
    points_b: Tensor,
    *,
    target_b: Tensor | None = None,
    panel: float = 3.0,
    dpi: int = 100,
    path: str | os.PathLike | None = None,
):
    """Reference points in image A joined to their matches in image B (paper Fig. 2).

    Args:
        image_a, image_b: ``(3, H, W)`` in ``[0, 1]``.
        points_a: ``(K, 2)`` reference points in A; ``points_b``: ``(K, 2)`` their matches in B.
        target_b: ``(K, 2)`` true positions in B; if given, matches are drawn green when within 5 %
            of B's width of the truth and red otherwise, and the truth is shown as circles.
    """
    plt = figure_class()
    from matplotlib.patches import ConnectionPatch

    a, b = as_images(image_a)[0], as_images(image_b)[0]
    fig = new_figure(plt, (2 * panel, panel), dpi)
    ax_a, ax_b = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for ax, image in ((ax_a, a), (ax_b, b)):
        ax.imshow(image.permute(1, 2, 0).numpy(), extent=(-0.5, image.shape[-1] - 0.5, image.shape[-2] - 0.5, -0.5))
        ax.axis("off")
    pa, pb = points_a.detach().cpu(), points_b.detach().cpu()
    good = None
    if target_b is not None:
        tb = target_b.detach().cpu()
        good = (pb - tb).norm(dim=-1) <= 0.05 * b.shape[-1]
        ax_b.scatter(tb[:, 0], tb[:, 1], s=40, facecolors="none", edgecolors="white", linewidths=1.0)
    for k in range(len(pa)):
        color = COLORS[k % len(COLORS)] if good is None else ("#2ca02c" if bool(good[k]) else "#d62728")
        ax_a.scatter([pa[k, 0]], [pa[k, 1]], s=20, c=color)
        ax_b.scatter([pb[k, 0]], [pb[k, 1]], s=20, c=color)
        fig.add_artist(
            ConnectionPatch(
                xyA=(float(pa[k, 0]), float(pa[k, 1])),
                coordsA=ax_a.transData,
                xyB=(float(pb[k, 0]), float(pb[k, 1])),
                coordsB=ax_b.transData,
                color=color,
                linewidth=0.8,
                alpha=0.8,
            )
        )
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99, wspace=0.04)
    return save_png(fig, path, dpi)
