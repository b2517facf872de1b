"""One coordinate convention for the whole library.

Points are ``(x, y)`` in **pixels** of the image they refer to, with pixel centres at integers:
the top-left pixel's centre is ``(0, 0)`` and a ``W``-pixel-wide image spans ``[-0.5, W - 0.5]``.

Internally, sampling uses PyTorch's ``align_corners=False`` normalised frame, in which ``-1`` and
``+1`` are the outer *edges* of the image::

    x_n = (2 x + 1) / W - 1        x = ((x_n + 1) W - 1) / 2

This is the frame in which bilinear upsampling with ``align_corners=False`` (the authors'
hypercolumn convention) is exact, so a feature map of any size ``(h, w)`` covering an image of
size ``(H, W)`` has its cell ``(i, j)`` centred at image pixel ``((j + 0.5) W / w - 0.5,
(i + 0.5) H / h - 0.5)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cell_centers", "normalized_to_pixels", "pixels_to_normalized"]


def _size_tensor(size: tuple[int, int], like: Tensor) -> Tensor:
    height, width = size
    return torch.tensor([width, height], dtype=like.dtype, device=like.device)


def pixels_to_normalized(points: Tensor, size: tuple[int, int]) -> Tensor:
    """Pixel ``(x, y)`` points of an image of ``size = (H, W)`` to the ``[-1, 1]`` frame.

    Args:
        points: ``(..., 2)`` pixel coordinates, ``(x, y)`` order.
        size: ``(H, W)`` of the image the points live in.

    Returns:
        ``(..., 2)`` coordinates in the ``align_corners=False`` normalised frame.
    """
    wh = _size_tensor(size, points)
    return (2 * points + 1) / wh - 1


def normalized_to_pixels(points: Tensor, size: tuple[int, int]) -> Tensor:
    """Inverse of :func:`pixels_to_normalized`.

    Args:
        points: ``(..., 2)`` normalised ``(x, y)`` coordinates.
        size: ``(H, W)`` of the target image.

    Returns:
        ``(..., 2)`` pixel coordinates.
    """
    wh = _size_tensor(size, points)
    return ((points + 1) * wh - 1) / 2


def cell_centers(
    map_size: tuple[int, int],
    image_size: tuple[int, int] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Image-pixel coordinates of the cell centres of an ``(h, w)`` map.

    Args:
        map_size: ``(h, w)`` of the feature or heatmap grid.
        image_size: ``(H, W)`` of the image it covers; ``None`` gives the ``[-1, 1]`` frame.

    Returns:
        ``(h * w, 2)`` tensor of ``(x, y)`` in row-major order (index ``i * w + j``).
    """
    h, w = map_size
    ys = (2 * torch.arange(h, dtype=dtype, device=device) + 1) / h - 1
    xs = (2 * torch.arange(w, dtype=dtype, device=device) + 1) / w - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)
    if image_size is None:
        return grid
    return normalized_to_pixels(grid, image_size)
