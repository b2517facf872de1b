"""Plots: landmarks on images, matches, PCA-to-RGB of descriptor maps, NMF parts, few-shot curves, trajectories.

Every plot is one function returning a :class:`matplotlib.figure.Figure` and, given ``path``,
saving it as a PNG (``dpi`` pixels per inch, so a figure of ``figsize = (w, h)`` inches is exactly
``(w·dpi) × (h·dpi)`` pixels). matplotlib is imported when a plot is made; it is in the ``viz``
extra (``pip install "contrastive-landmarks[viz]"``). Images are ``(B, 3, H, W)`` floats in
``[0, 1]``, points ``(x, y)`` pixels (pixel centres at integers).

:func:`pca_rgb` and :func:`nmf` (non-negative matrix factorisation by Lee & Seung's multiplicative
updates, in torch) are plain tensor functions, usable without matplotlib.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "nmf",
    "nmf_parts",
    "pca_rgb",
    "plot_fewshot",
    "plot_landmarks",
    "plot_matches",
    "plot_nmf_parts",
    "plot_pca",
    "plot_trajectories",
]


def _plt():
    """Import matplotlib (figures are built without pyplot: no global figure state, no GUI backend)."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            'plotting needs matplotlib, which is in the [viz] extra: pip install "contrastive-landmarks[viz]"'
        ) from error
    return Figure


def _figure(figure_class, figsize: tuple[float, float], dpi: int):
    return figure_class(figsize=figsize, dpi=dpi)


def _save(fig, path: str | os.PathLike | None, dpi: int):
    if path is not None:
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, format="png")
    return fig


def _as_images(images: Tensor) -> Tensor:
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a tensor (B, 3, H, W) or (3, H, W), got {type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W) or (3, H, W) in [0, 1], got {tuple(images.shape)}")
    return images.detach().float().cpu().clamp(0, 1)


def _grid(count: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, count))
    return math.ceil(count / ncols), ncols


# -- tensor functions ----------------------------------------------------------------------------------------
def pca_rgb(features: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """Project descriptor maps onto their first three principal components, scaled to ``[0, 1]`` RGB.

    The components are fitted jointly over every location of every map, so colours are comparable
    across images: the same colour means a similar descriptor.

    Args:
        features: ``(B, C, h, w)`` (or ``(C, h, w)``) descriptor maps.
        mask: optional ``(B, h, w)`` bool: fit the components on these locations only (e.g. the object).

    Returns:
        ``(B, 3, h, w)`` in ``[0, 1]``.
    """
    if features.ndim == 3:
        features = features[None]
    if features.ndim != 4:
        raise ValueError(f"features must be (B, C, h, w), got {tuple(features.shape)}")
    b, c, h, w = features.shape
    flat = features.detach().float().permute(0, 2, 3, 1).reshape(-1, c)
    fit = flat if mask is None else flat[mask.reshape(-1).bool()]
    mean = fit.mean(0, keepdim=True)
    q = min(3, c, fit.shape[0])
    _, _, v = torch.linalg.svd(fit - mean, full_matrices=False)
    proj = (flat - mean) @ v[:q].T
    if q < 3:
        proj = F.pad(proj, (0, 3 - q))
    ref = proj if mask is None else proj[mask.reshape(-1).bool()]
    lo, hi = ref.quantile(0.01, dim=0), ref.quantile(0.99, dim=0)
    rgb = ((proj - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)
    return rgb.reshape(b, h, w, 3).permute(0, 3, 1, 2)


def nmf(data: Tensor, k: int, *, iterations: int = 200, seed: int = 0, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """Non-negative matrix factorisation ``data ≈ W @ H`` by multiplicative updates (Lee & Seung, 2001).

    Minimises the Frobenius error; each update keeps ``W, H ≥ 0`` and does not increase the error.

    Args:
        data: ``(n, C)`` non-negative matrix (e.g. hypercolumn descriptors of all pixels, post-ReLU).
        k: number of components.
        iterations: update steps.
        seed: initialisation seed (uniform random, scaled to the data's mean).

    Returns:
        ``W`` ``(n, k)`` and ``H`` ``(k, C)``.
    """
    if data.ndim != 2:
        raise ValueError(f"data must be (n, C), got {tuple(data.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if bool((data < 0).any()):
        raise ValueError("NMF needs non-negative data (e.g. ReLU features); got negative values")
    data = data.detach().float()
    n, c = data.shape
    generator = torch.Generator(device="cpu").manual_seed(seed)
    scale = math.sqrt(float(data.mean()) / k) if float(data.mean()) > 0 else 1.0
    W = (torch.rand(n, k, generator=generator) * scale).to(data.device)
    H = (torch.rand(k, c, generator=generator) * scale).to(data.device)
    for _ in range(iterations):
        H = H * (W.T @ data) / (W.T @ W @ H + eps)
        W = W * (data @ H.T) / (W @ (H @ H.T) + eps)
    return W, H


def nmf_parts(features: Tensor, k: int = 8, *, iterations: int = 200, seed: int = 0) -> Tensor:
    """Part maps from a joint NMF of the descriptors of all locations of all images (paper Fig. 5).

    Args:
        features: ``(B, C, h, w)`` non-negative descriptor maps (a ResNet hypercolumn is post-ReLU).

    Returns:
        ``(B, k, h, w)`` non-negative part activations, each part scaled to a maximum of 1.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (B, C, h, w), got {tuple(features.shape)}")
    b, c, h, w = features.shape
    flat = features.detach().float().permute(0, 2, 3, 1).reshape(-1, c)
    W, _ = nmf(flat, k, iterations=iterations, seed=seed)
    W = W / W.amax(0, keepdim=True).clamp_min(1e-12)
    return W.reshape(b, h, w, k).permute(0, 3, 1, 2)


# -- plots -------------------------------------------------------------------------------------------------
_COLORS = [
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
    plt = _plt()
    images = _as_images(images)
    rows, cols = _grid(len(images), ncols)
    fig = _figure(plt, (cols * panel, rows * panel), dpi)
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
    return _save(fig, path, dpi)


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
    plt = _plt()
    from matplotlib.patches import ConnectionPatch

    a, b = _as_images(image_a)[0], _as_images(image_b)[0]
    fig = _figure(plt, (2 * panel, panel), dpi)
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
        color = _COLORS[k % len(_COLORS)] if good is None else ("#2ca02c" if bool(good[k]) else "#d62728")
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
    return _save(fig, path, dpi)


def plot_pca(
    images: Tensor,
    features: Tensor,
    *,
    ncols: int = 4,
    panel: float = 2.0,
    dpi: int = 100,
    path: str | os.PathLike | None = None,
):
    """Each image above the PCA-to-RGB rendering of its descriptor map (components fitted jointly).

    Args:
        images: ``(B, 3, H, W)`` in ``[0, 1]``.
        features: ``(B, C, h, w)`` descriptor maps (e.g. a hypercolumn or projected features).
    """
    plt = _plt()
    images = _as_images(images)
    rgb = pca_rgb(features)
    count = len(images)
    cols = max(1, min(ncols, count))
    blocks = math.ceil(count / cols)
    fig = _figure(plt, (cols * panel, 2 * blocks * panel), dpi)
    for i in range(count):
        block, col = divmod(i, cols)
        for offset, picture in ((0, images[i]), (1, rgb[i])):
            ax = fig.add_subplot(2 * blocks, cols, (2 * block + offset) * cols + col + 1)
            ax.imshow(picture.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99, wspace=0.03, hspace=0.03)
    return _save(fig, path, dpi)


def plot_nmf_parts(
    images: Tensor,
    features: Tensor | None = None,
    k: int = 8,
    *,
    parts: Tensor | None = None,
    ncols: int = 4,
    panel: float = 2.0,
    dpi: int = 100,
    alpha: float = 0.6,
    seed: int = 0,
    path: str | os.PathLike | None = None,
):
    """NMF parts overlaid on the images: each location coloured by its strongest part, opacity by its
    activation (paper Fig. 5).

    Args:
        images: ``(B, 3, H, W)`` in ``[0, 1]``.
        features: ``(B, C, h, w)`` non-negative descriptor maps (factorised jointly, :func:`nmf_parts`),
            or ``parts`` ``(B, k, h, w)`` computed already.
        k: number of parts.
    """
    plt = _plt()
    images = _as_images(images)
    if parts is None:
        if features is None:
            raise ValueError("give features (B, C, h, w) or parts (B, k, h, w)")
        parts = nmf_parts(features, k, seed=seed)
    parts = parts.detach().float().cpu()
    size = images.shape[-2:]
    parts = F.interpolate(parts, size=size, mode="bilinear", align_corners=False).clamp_min(0)
    strength, label = parts.max(dim=1)
    palette = torch.tensor([[int(c[i : i + 2], 16) / 255 for i in (1, 3, 5)] for c in _COLORS])
    colors = palette[label % len(palette)].permute(0, 3, 1, 2)  # (B, 3, H, W)
    weight = (alpha * strength / strength.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)).unsqueeze(1)
    overlay = images * (1 - weight) + colors * weight
    rows, cols = _grid(len(images), ncols)
    fig = _figure(plt, (cols * panel, rows * panel), dpi)
    for i in range(len(images)):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(overlay[i].permute(1, 2, 0).numpy())
        ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99, wspace=0.03, hspace=0.03)
    return _save(fig, path, dpi)


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
    plt = _plt()
    fig = _figure(plt, figsize, dpi)
    ax = fig.add_subplot(1, 1, 1)
    for index, (label, points) in enumerate(curves.items()):
        xs = sorted(points)
        values = [torch.as_tensor(points[x], dtype=torch.float64).reshape(-1) for x in xs]
        means = [float(v.mean()) for v in values]
        stds = [float(v.std(unbiased=True)) if v.numel() > 1 else 0.0 for v in values]
        color = _COLORS[index % len(_COLORS)]
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
    return _save(fig, path, dpi)


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
    plt = _plt()
    rows, cols = _grid(len(frames), ncols)
    fig = _figure(plt, (cols * panel, rows * panel + 0.4), dpi)
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
    return _save(fig, path, dpi)


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
    plt = _plt()
    fig = _figure(plt, (width, 3 * panel_height + 0.6), dpi)
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
    return _save(fig, path, dpi)
