"""Curves: error against the number of labelled images (:func:`plot_fewshot`, paper Fig. 4) and each body part's
x, y and likelihood over time (:func:`plot_trajectories`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from ._figure import COLORS, figure_class, new_figure, save_png

__all__ = ["plot_fewshot", "plot_trajectories"]


def plot_fewshot(
    curves: Mapping[str, Mapping[int, float | Sequence[float]]],
    *,
    metric: str = "inter-ocular error (%)",
    title: str | None = None,
    log_x: bool = True,
    figsize: tuple[float, float] = (5.0, 3.5),
    dpi: int = 100,
    path: str | os.PathLike | None = None,
):
    """Error (or PCK) against the number of labelled images, one line per method (paper Fig. 4).

    Args:
        curves: ``{label: {num_labelled: value or [values over seeds]}}``; several values are drawn
            as mean ± std.
        metric: the y-axis label.
    """
    plt = figure_class()
    fig = new_figure(plt, figsize, dpi)
    ax = fig.add_subplot(1, 1, 1)
    for index, (label, points) in enumerate(curves.items()):
        xs = sorted(points)
        values = [torch.as_tensor(points[x], dtype=torch.float64).reshape(-1) for x in xs]
        means = [float(v.mean()) for v in values]
        stds = [float(v.std(unbiased=True)) if v.numel() > 1 else 0.0 for v in values]
        color = COLORS[index % len(COLORS)]
        ax.errorbar(xs, means, yerr=stds, marker="o", markersize=4, capsize=3, color=color, label=label)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("number of labelled images")
    ax.set_ylabel(metric)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path, dpi)


def plot_trajectories(
    xy,
    likelihood,
    names: Sequence[str],
    *,
    pcutoff: float = 0.6,
    frames: Sequence[int] | None = None,
    fps: float | None = None,
    hide_below_pcutoff: bool = False,
    title: str | None = None,
    width: float = 10.0,
    panel_height: float = 2.2,
    dpi: int = 100,
    path: str | os.PathLike | None = None,
):
    """x, y and likelihood of each body part over time: three stacked panels sharing the time axis, one line per
    body part in each (colours as ``predict --labelled-video`` draws them: matplotlib's tab10, in order) and a
    dashed line at the p-cutoff on the likelihood panel.

    Args:
        xy: ``(T, N, 2)`` ``(x, y)`` pixels (array or tensor).
        likelihood: ``(T, N)``.
        names: the N body part names (the legend).
        pcutoff: the likelihood line; with ``hide_below_pcutoff``, points below it are left out of the x and y
            panels (as DeepLabCut's ``plot_trajectories`` does).
        frames: the T frame numbers (default ``0 .. T-1``); with ``fps``, the axis is in seconds.
        title: the figure title.
        width, panel_height: inches; the PNG is ``width * dpi`` by ``(3 * panel_height + 0.6) * dpi`` pixels.
        path: save a PNG here.

    Returns:
        the Figure; ``fig.axes[:3]`` are the x, y and likelihood panels.
    """
    import numpy as np

    points = np.asarray(xy.detach().cpu() if isinstance(xy, Tensor) else xy, dtype=np.float64)
    scores = np.asarray(likelihood.detach().cpu() if isinstance(likelihood, Tensor) else likelihood, dtype=np.float64)
    if points.ndim != 3 or points.shape[-1] != 2 or scores.shape != points.shape[:2]:
        raise ValueError(f"xy must be (T, N, 2) and likelihood (T, N), got {points.shape} and {scores.shape}")
    if len(names) != points.shape[1]:
        raise ValueError(f"{len(names)} names for {points.shape[1]} body parts")
    time = np.arange(len(points), dtype=np.float64) if frames is None else np.asarray(frames, dtype=np.float64)
    if fps:
        time = time / fps
    if hide_below_pcutoff:
        points = np.where((scores >= pcutoff)[..., None], points, np.nan)
    plt = figure_class()
    fig = new_figure(plt, (width, 3 * panel_height + 0.6), dpi)
    from matplotlib import colormaps

    colours = colormaps["tab20" if points.shape[1] > 10 else "tab10"]
    axes = fig.subplots(3, 1, sharex=True)
    for j, name in enumerate(names):
        colour = colours(j % colours.N)
        axes[0].plot(time, points[:, j, 0], color=colour, linewidth=0.9, label=name)
        axes[1].plot(time, points[:, j, 1], color=colour, linewidth=0.9)
        axes[2].plot(time, scores[:, j], color=colour, linewidth=0.9)
    axes[2].axhline(pcutoff, color="black", linestyle="--", linewidth=0.9, label=f"p-cutoff {pcutoff:g}")
    axes[0].set_ylabel("x (px)")
    axes[1].set_ylabel("y (px, down)")
    axes[1].invert_yaxis()  # up in the plot is up in the image
    axes[2].set_ylabel("likelihood")
    axes[2].set_ylim(-0.02, 1.02)
    axes[2].set_xlabel("time (s)" if fps else "frame")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.margins(x=0)
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    axes[2].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_png(fig, path, dpi)
