"""Reference formulas the library's fast paths are tested and benchmarked against (not part of the package).

Imported by the tests (``from tests.reference_impls import ...``) and by ``benchmarks/bench_evaluation.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastive_landmarks.check import size_pair
from contrastive_landmarks.coords import pixels_to_normalized
from contrastive_landmarks.tps import TPSPair, TPSParams, inside_image, random_tps
from contrastive_landmarks.tps.warp import TPSWarp, frame_points, frame_to_pixels, tps_kernel

__all__ = [
    "fit_tps_reference",
    "make_pair_reference",
    "sampling_grid_reference",
    "tps_point_reference",
    "warp_keypoints_reference",
]


def sampling_grid_reference(warp: TPSWarp, size: int | Sequence[int], *, dtype: torch.dtype = torch.float32) -> Tensor:
    """The original formula of :func:`contrastive_landmarks.tps.sampling_grid` (a ``(B, H·W, P, 2)`` broadcast
    per warp), kept as the definition the fast path is tested and benchmarked against."""
    height, width = size_pair(size)
    warp64 = warp.to(torch.float64)
    pts = frame_points((height, width), warp.affine.device).unsqueeze(0).expand(len(warp), -1, -1)
    _, sq = warp64.sq_dist(pts)
    out = tps_kernel(sq) @ warp64.kernel_weights + warp64.affine[:, :1] + pts @ warp64.affine[:, 1:]
    return out.to(dtype).reshape(len(warp), height, width, 2)


def _kernel_formula(sq_dist: Tensor) -> Tensor:
    """``U(r) = r² log r²`` of squared distances ``r²``, written out (``U(0) = 0``, its limit)."""
    return torch.where(sq_dist > 0, sq_dist * torch.log(torch.where(sq_dist > 0, sq_dist, 1.0)), 0.0)


def tps_point_reference(control_points: Tensor, weights: Tensor, affine: Tensor, point: Tensor) -> Tensor:
    """One TPS map at one point, from its formula: ``T(p) = Σ_i w_i U(‖p - c_i‖²) + a_0 + a_1 x + a_2 y``.

    Args:
        control_points: ``(P, 2)``; weights: ``(P, 2)``; affine: ``(3, 2)`` rows multiplying ``[1, x, y]``;
        point: ``(2,)``. All float64.
    """
    sq = ((point - control_points) ** 2).sum(-1)  # (P,)
    radial = (_kernel_formula(sq).unsqueeze(-1) * weights).sum(0)
    return radial + affine[0] + point[0] * affine[1] + point[1] * affine[2]


def fit_tps_reference(sources: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """The TPS through ``P`` correspondences: ``T(sources_i) = targets_i``, least bending (the textbook system).

    Solves ``[[K, Q], [Qᵀ, 0]] [w; a] = [targets; 0]`` with ``K_ij = U(‖s_i - s_j‖²)`` (built row by row)
    and ``Q_i = [1, x_i, y_i]``, with ``torch.linalg.solve`` in float64.

    Returns:
        ``(weights (P, 2), affine (3, 2))``.
    """
    sources, targets = sources.to(torch.float64), targets.to(torch.float64)
    p = sources.shape[0]
    system = torch.zeros(p + 3, p + 3, dtype=torch.float64)
    for i in range(p):  # row i: source i against every source
        system[i, :p] = _kernel_formula(((sources[i] - sources) ** 2).sum(-1))
        system[i, p:] = torch.tensor([1.0, float(sources[i, 0]), float(sources[i, 1])], dtype=torch.float64)
    system[p:, :p] = system[:p, p:].T
    rhs = torch.cat([targets, torch.zeros(3, 2, dtype=torch.float64)])
    solution = torch.linalg.solve(system, rhs)
    return solution[:p], solution[p:]


def _inverse_one(control: Tensor, weights: Tensor, affine: Tensor, q: Tensor, start: Tensor) -> tuple[Tensor, Tensor]:
    """``p`` with ``T(p) = q`` by Newton on a central-difference Jacobian of :func:`tps_point_reference`."""

    def residual(p: Tensor) -> Tensor:
        return tps_point_reference(control, weights, affine, p) - q

    p, r = start.clone(), residual(start)
    eye, h = torch.eye(2, dtype=torch.float64), 1e-6
    for _ in range(100):
        if float(r.norm()) < 1e-13:
            break
        jac = torch.stack([(residual(p + h * e) - residual(p - h * e)) / (2 * h) for e in eye], dim=1)
        if abs(float(torch.linalg.det(jac))) < 1e-12:
            break
        step, improved = torch.linalg.solve(jac, r), False
        for _ in range(30):  # halve the step until the residual decreases
            candidate = p - step
            new = residual(candidate)
            if float(new.norm()) < float(r.norm()):
                p, r, improved = candidate, new, True
                break
            step = step / 2
        if not improved:
            break
    return p, r


def warp_keypoints_reference(
    points: Tensor, warp: TPSWarp, image_size: int | Sequence[int], lattice: int = 12
) -> tuple[Tensor, Tensor]:
    """Where input pixels ``points`` ``(B, M, 2)`` land in the warped images, independently of the library's solver.

    The warp is a backward map (output pixel ``p`` samples input ``T(p)``), so a keypoint ``q`` lands at the
    ``p`` with ``T(p) = q``. Each ``T`` is evaluated from its formula (:func:`tps_point_reference`, point by
    point); the inverse is first approximated by the TPS through ``T(g_j) -> g_j`` on a ``lattice²`` grid of
    the frame (:func:`fit_tps_reference`), then refined by Newton's method on a finite-difference Jacobian.

    Returns:
        ``(B, M, 2)`` pixels and the residuals ``‖T(p) - q‖`` in input pixels ``(B, M)`` (large where a fold
        leaves a point without preimage).
    """
    height, width = size_pair(image_size)
    scale = torch.tensor([width - 1, height - 1], dtype=torch.float64)
    q_frame = 2 * points.to(torch.float64) / scale - 1  # the align_corners=True frame of the warp
    t = torch.linspace(-1.2, 1.2, lattice, dtype=torch.float64)
    nodes = torch.stack(torch.meshgrid(t, t, indexing="xy"), dim=-1).reshape(-1, 2)
    out, residuals = torch.empty_like(q_frame), torch.empty_like(q_frame)
    w64 = warp.to(torch.float64)
    for b in range(q_frame.shape[0]):
        control, weights, affine = w64.control_points, w64.kernel_weights[b], w64.affine[b]
        images = torch.stack([tps_point_reference(control, weights, affine, g) for g in nodes])
        inverse_weights, inverse_affine = fit_tps_reference(images, nodes)
        for m in range(q_frame.shape[1]):
            q = q_frame[b, m]
            start = tps_point_reference(images, inverse_weights, inverse_affine, q)
            out[b, m], residuals[b, m] = _inverse_one(control, weights, affine, q, start)
    dtype = points.dtype if points.is_floating_point() else torch.float32  # as the library returns them
    return ((out + 1) * scale / 2).to(dtype), (residuals * scale / 2).norm(dim=-1).to(dtype)


def make_pair_reference(
    images: Tensor,
    keypoints: Tensor | None = None,
    params: TPSParams | None = None,
    *,
    generator: torch.Generator | None = None,
    crop: int = 0,
    keypoint_solver: Callable[..., tuple[Tensor, Tensor]] | None = None,
) -> TPSPair:
    """:func:`contrastive_landmarks.tps.make_pair` as first written: three dense grids, each by
    :func:`sampling_grid_reference` (a per-warp ``(B, H·W, P, 2)`` broadcast), and keypoints by
    :func:`warp_keypoints_reference` (the TPS formula, not the library's solver). The definition the fast path is
    tested against. ``keypoint_solver``: ``f(points, warp, size) -> (points, residual px)`` instead (the
    speed benchmark passes the library's, to time the grids alone)."""
    solve = keypoint_solver or warp_keypoints_reference
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
        kp2, res2 = solve(keypoints, warp1, (height, width))
        kp1, res1 = solve(kp2, warp2, (height, width))
        kp1, kp2 = kp1 - crop, kp2 - crop
        vis2 = (res2 < 0.5) & inside_image(kp2, (out_h, out_w))
        vis1 = vis2 & (res1 < 0.5) & inside_image(kp1, (out_h, out_w))
    if crop:
        image1 = image1[..., crop : height - crop, crop : width - crop]
        image2 = image2[..., crop : height - crop, crop : width - crop]
    return TPSPair(image1, image2, grid.to(image1.dtype), kp1, kp2, warp1, warp2, vis1, vis2)
