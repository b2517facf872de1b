"""Reference formulas the library's fast paths are tested and benchmarked against (not part of the package).

Imported by the tests (``from tests.reference_impls import ...``) and by ``benchmarks/bench_evaluation.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastive_landmarks.check import size_pair
from contrastive_landmarks.coords import pixels_to_normalized
from contrastive_landmarks.tps import TPSPair, TPSParams, inside_image, random_tps, warp_keypoints
from contrastive_landmarks.tps_warp import TPSWarp, frame_points, frame_to_pixels, tps_kernel

__all__ = ["make_pair_reference", "sampling_grid_reference"]


def sampling_grid_reference(warp: TPSWarp, size: int | Sequence[int], *, dtype: torch.dtype = torch.float32) -> Tensor:
    """The original formula of :func:`contrastive_landmarks.tps.sampling_grid` (a ``(B, H·W, P, 2)`` broadcast
    per warp), kept as the definition the fast path is tested and benchmarked against."""
    height, width = size_pair(size)
    warp64 = warp.to(torch.float64)
    pts = frame_points((height, width), warp.affine.device).unsqueeze(0).expand(len(warp), -1, -1)
    _, sq = warp64.sq_dist(pts)
    out = tps_kernel(sq) @ warp64.kernel_weights + warp64.affine[:, :1] + pts @ warp64.affine[:, 1:]
    return out.to(dtype).reshape(len(warp), height, width, 2)


def make_pair_reference(
    images: Tensor,
    keypoints: Tensor | None = None,
    params: TPSParams | None = None,
    *,
    generator: torch.Generator | None = None,
    crop: int = 0,
) -> TPSPair:
    """:func:`contrastive_landmarks.tps.make_pair` as first written: three dense grids, each by
    :func:`sampling_grid_reference` (a per-warp ``(B, H·W, P, 2)`` broadcast). The definition the fast path is
    tested and benchmarked against."""
    params = params or TPSParams()
    batch, _, height, width = images.shape
    warp1 = random_tps(
        batch,
        params,
        generator=generator,
        tps_multiplier=params.im1_multiplier,
        affine_multiplier=params.im1_multiplier_aff,
        device=images.device,
    )
    warp2 = random_tps(batch, params, generator=generator, device=images.device)

    def warp_reference(image: Tensor, warp: TPSWarp) -> Tensor:
        grid = sampling_grid_reference(warp, image.shape[-2:], dtype=image.dtype)
        return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    image2 = warp_reference(images, warp1)
    image1 = warp_reference(image2, warp2)
    out_h, out_w = height - 2 * crop, width - 2 * crop
    grid_px = frame_to_pixels(sampling_grid_reference(warp2, (height, width), dtype=torch.float64), (height, width))
    grid = pixels_to_normalized(grid_px[:, crop : height - crop, crop : width - crop] - crop, (out_h, out_w))
    kp1 = kp2 = vis1 = vis2 = None
    if keypoints is not None:
        kp2, res2 = warp_keypoints(keypoints, warp1, (height, width), return_residual=True)
        kp1, res1 = warp_keypoints(kp2, warp2, (height, width), return_residual=True)
        kp1, kp2 = kp1 - crop, kp2 - crop
        vis2 = (res2 < 0.5) & inside_image(kp2, (out_h, out_w))
        vis1 = vis2 & (res1 < 0.5) & inside_image(kp1, (out_h, out_w))
    if crop:
        image1 = image1[..., crop : height - crop, crop : width - crop]
        image2 = image2[..., crop : height - crop, crop : width - crop]
    return TPSPair(image1, image2, grid.to(image1.dtype), kp1, kp2, warp1, warp2, vis1, vis2)
