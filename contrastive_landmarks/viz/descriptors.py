"""Descriptor maps made visible: PCA to RGB (:func:`pca_rgb`, :func:`plot_pca`) and NMF parts (:func:`nmf`,
:func:`nmf_parts`, :func:`plot_nmf_parts`; paper Fig. 5).

:func:`pca_rgb`, :func:`nmf` (non-negative matrix factorisation by Lee & Seung's multiplicative updates, in torch)
and :func:`nmf_parts` are plain tensor functions, usable without matplotlib.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor

from ._figure import COLORS, as_images, figure_class, grid, new_figure, save_png

__all__ = ["nmf", "nmf_parts", "pca_rgb", "plot_nmf_parts", "plot_pca"]


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
    plt = figure_class()
    images = as_images(images)
    rgb = pca_rgb(features)
    count = len(images)
    cols = max(1, min(ncols, count))
    blocks = math.ceil(count / cols)
    fig = new_figure(plt, (cols * panel, 2 * blocks * panel), dpi)
    for i in range(count):
        block, col = divmod(i, cols)
        for offset, picture in ((0, images[i]), (1, rgb[i])):
            ax = fig.add_subplot(2 * blocks, cols, (2 * block + offset) * cols + col + 1)
            ax.imshow(picture.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99, wspace=0.03, hspace=0.03)
    return save_png(fig, path, dpi)


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
    plt = figure_class()
    images = as_images(images)
    if parts is None:
        if features is None:
            raise ValueError("give features (B, C, h, w) or parts (B, k, h, w)")
        parts = nmf_parts(features, k, seed=seed)
    parts = parts.detach().float().cpu()
    size = images.shape[-2:]
    parts = F.interpolate(parts, size=size, mode="bilinear", align_corners=False).clamp_min(0)
    strength, label = parts.max(dim=1)
    palette = torch.tensor([[int(c[i : i + 2], 16) / 255 for i in (1, 3, 5)] for c in COLORS])
    colors = palette[label % len(palette)].permute(0, 3, 1, 2)  # (B, 3, H, W)
    weight = (alpha * strength / strength.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)).unsqueeze(1)
    overlay = images * (1 - weight) + colors * weight
    rows, cols = grid(len(images), ncols)
    fig = new_figure(plt, (cols * panel, rows * panel), dpi)
    for i in range(len(images)):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(overlay[i].permute(1, 2, 0).numpy())
        ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99, wspace=0.03, hspace=0.03)
    return save_png(fig, path, dpi)
