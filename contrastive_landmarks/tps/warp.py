"""One thin-plate-spline (TPS) map: evaluating it, resampling images with it, and warping keypoints exactly.

A :class:`TPSWarp` is ``T(p) = Σ_i w_i U(‖p - c_i‖²) + a_0 + a_1 x + a_2 y`` with kernel ``U(r²) = r² log r²``
(random ones: :func:`contrastive_landmarks.tps.random_tps`, in :mod:`.random_warps`).

Convention
----------
- **Internal frame**: ``align_corners=True`` normalised coordinates, as the reference code: pixel
  ``x`` of a ``W``-wide image is ``x_ac = 2x / (W - 1) - 1`` (``-1``/``+1`` are the *centres* of the
  first and last pixels). A warp is a map ``T: R² -> R²`` in this frame, used as a **backward map**:
  output pixel ``u`` takes its value from input location ``T(u)`` (``grid_sample(image, T(grid),
  align_corners=True)``).
- **API edge**: points go in and come out as ``(x, y)`` pixels (pixel centres at integers, see
  :mod:`contrastive_landmarks.coords`). Input and output images have the same size.
- **Keypoints are warped exactly**: the warped position of an input point ``q`` is the ``p`` with
  ``T(p) = q``, found by Newton's method on the analytic Jacobian (float64, residual far below
  1e-4 px), not by the reference's nearest-pixel search (which quantises to whole pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..check import size_pair

__all__ = [
    "TPSWarp",
    "control_grid",
    "dense_map",
    "frame_points",
    "frame_to_pixels",
    "grid_kernel",
    "pixels_to_frame",
    "resample",
    "sampling_grid",
    "source_points",
    "tps_kernel",
    "warp_images",
    "warp_keypoints",
]


def control_grid(
    points_per_side: int = 10, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> Tensor:
    """``(n², 2)`` control points ``(x, y)`` on a regular grid over ``[-1, 1]²`` (row-major)."""
    t = torch.linspace(-1.0, 1.0, points_per_side, dtype=dtype, device=device)
    return torch.stack(torch.meshgrid(t, t, indexing="xy"), dim=-1).reshape(-1, 2)


def tps_kernel(sq_dist: Tensor) -> Tensor:
    """The TPS radial basis ``U = r² log r²`` of squared distances (``0`` at ``r = 0``)."""
    return torch.xlogy(sq_dist, sq_dist)


@dataclass
class TPSWarp:
    """A batch of TPS maps in the ``align_corners=True`` frame (backward maps, output -> input).

    Attributes:
        control_points: ``(P, 2)`` control points ``c_i``.
        kernel_weights: ``(B, P, 2)`` weights ``w_i``.
        affine: ``(B, 3, 2)`` rows multiplying ``[1, x, y]``.
    """

    control_points: Tensor
    kernel_weights: Tensor
    affine: Tensor

    def __post_init__(self) -> None:
        p = self.control_points.shape[0]
        if self.control_points.shape != (p, 2):
            raise ValueError(f"control_points must be (P, 2), got {tuple(self.control_points.shape)}")
        if self.kernel_weights.ndim != 3 or self.kernel_weights.shape[1:] != (p, 2):
            raise ValueError(f"kernel_weights must be (B, {p}, 2), got {tuple(self.kernel_weights.shape)}")
        if self.affine.shape != (self.kernel_weights.shape[0], 3, 2):
            raise ValueError(f"affine must be (B, 3, 2), got {tuple(self.affine.shape)}")

    def __len__(self) -> int:
        return self.kernel_weights.shape[0]

    @classmethod
    def identity(
        cls,
        batch: int,
        points_per_side: int = 10,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> TPSWarp:
        """``batch`` identity warps."""
        ctrl = control_grid(points_per_side, dtype=dtype, device=device)
        affine = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=dtype, device=device)
        return cls(
            ctrl, torch.zeros(batch, ctrl.shape[0], 2, dtype=dtype, device=device), affine.expand(batch, 3, 2).clone()
        )

    def to(self, *args, **kwargs) -> TPSWarp:
        """``Tensor.to`` on every field."""
        return TPSWarp(
            self.control_points.to(*args, **kwargs),
            self.kernel_weights.to(*args, **kwargs),
            self.affine.to(*args, **kwargs),
        )

    def sq_dist(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """``(points - c_i, ‖points - c_i‖²)`` against every control point: ``(..., M, P, 2)`` and ``(..., M, P)``."""
        diff = points.unsqueeze(-2) - self.control_points.to(points.dtype)  # (..., M, P, 2)
        return diff, diff.pow(2).sum(-1)

    def __call__(self, points: Tensor) -> Tensor:
        """Evaluate ``T`` at ``(B, M, 2)`` (or ``(M, 2)``, shared) frame points; returns ``(B, M, 2)``.

        Shared ``(M, 2)`` points build the ``(M, P)`` radial-basis matrix once for the whole batch
        (:meth:`apply_kernel`) instead of once per warp.
        """
        if points.ndim == 2 and points.shape[-1] == 2:
            return self.apply_kernel(tps_kernel(self.sq_dist(points)[1]), points)
        points = self._batched(points)
        _, sq = self.sq_dist(points)
        return (
            tps_kernel(sq) @ self.kernel_weights.to(points.dtype)
            + self.affine[:, :1].to(points.dtype)
            + points @ self.affine[:, 1:].to(points.dtype)
        )

    def apply_kernel(self, kernel: Tensor, points: Tensor) -> Tensor:
        """``T`` at shared points from their precomputed radial basis.

        Args:
            kernel: ``(M, P)`` ``U(‖p_m - c_i‖²)`` of these warps' control points (e.g. :func:`grid_kernel`).
            points: ``(M, 2)`` the frame points ``p_m``.

        Returns:
            ``(B, M, 2)``, in ``kernel``'s dtype. One ``(M, P) × (P, 2B)`` matrix product for all warps.
        """
        m, p = kernel.shape[-2], self.control_points.shape[0]
        if kernel.shape != (m, p) or points.shape != (m, 2):
            raise ValueError(
                f"kernel must be (M, {p}) and points (M, 2) with the same M, got "
                f"{tuple(kernel.shape)} and {tuple(points.shape)}"
            )
        dtype = kernel.dtype
        weights = self.kernel_weights.to(dtype).permute(1, 0, 2).reshape(p, 2 * len(self))  # (P, 2B)
        radial = (kernel @ weights).view(m, len(self), 2).transpose(0, 1)  # (B, M, 2)
        return radial + self.affine[:, :1].to(dtype) + points.to(dtype) @ self.affine[:, 1:].to(dtype)

    def jacobian(self, points: Tensor) -> Tensor:
        """``dT/dp`` at ``(B, M, 2)`` frame points; returns ``(B, M, 2, 2)`` with ``J[..., k, l] = dT_k/dp_l``."""
        points = self._batched(points)
        diff, sq = self.sq_dist(points)
        du = 2.0 * (torch.log(sq.clamp_min(1e-300)) + 1.0).unsqueeze(-1) * diff  # (B, M, P, 2): dU_i/dp_l
        w = self.kernel_weights.to(points.dtype)
        jac = torch.einsum("bmpl,bpk->bmkl", du, w)
        return jac + self.affine[:, 1:].to(points.dtype).transpose(1, 2).unsqueeze(1)

    def _batched(self, points: Tensor) -> Tensor:
        if points.ndim == 2:
            points = points.unsqueeze(0).expand(len(self), -1, -1)
        if points.ndim != 3 or points.shape[-1] != 2 or points.shape[0] != len(self):
            raise ValueError(f"points must be (B={len(self)}, M, 2) or (M, 2), got {tuple(points.shape)}")
        return points


def _frame_scale(size: tuple[int, int], like: Tensor) -> Tensor:
    height, width = size
    if height < 2 or width < 2:
        raise ValueError(f"TPS warps need images of at least 2x2 pixels, got {width}x{height}")
    return torch.tensor([width - 1, height - 1], dtype=like.dtype, device=like.device)


def pixels_to_frame(points: Tensor, size: tuple[int, int]) -> Tensor:
    return 2 * points / _frame_scale(size, points) - 1


def frame_to_pixels(points: Tensor, size: tuple[int, int]) -> Tensor:
    return (points + 1) * _frame_scale(size, points) / 2


def _frame_axes(size: tuple[int, int], device: torch.device | None) -> tuple[Tensor, Tensor]:
    height, width = size
    xs = torch.linspace(-1.0, 1.0, width, dtype=torch.float64, device=device)
    ys = torch.linspace(-1.0, 1.0, height, dtype=torch.float64, device=device)
    return xs, ys


def frame_points(size: tuple[int, int], device: torch.device | None) -> Tensor:
    xs, ys = _frame_axes(size, device)
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)


def grid_kernel(control_points: Tensor, size: int | Sequence[int]) -> Tensor:
    """The TPS radial basis of every pixel of an ``(H, W)`` image, in float64.

    The pixel grid is separable, so ``‖g_hw - c_i‖² = (x_w - cx_i)² + (y_h - cy_i)²`` is summed from an
    ``(W, P)`` and an ``(H, P)`` table (the same floating-point operations as the direct difference, so the
    squared distances are bitwise those of ``TPSWarp.sq_dist``), then ``U`` is applied once. Shared by every
    warp with these control points (:meth:`TPSWarp.apply_kernel`).

    Args:
        control_points: ``(P, 2)`` control points ``c_i`` in the ``align_corners=True`` frame.
        size: ``(H, W)``.

    Returns:
        ``(H·W, P)`` float64, rows in row-major pixel order.
    """
    height, width = size_pair(size)
    ctrl = control_points.to(torch.float64)
    xs, ys = _frame_axes((height, width), ctrl.device)
    dx2 = (xs.unsqueeze(-1) - ctrl[:, 0]).pow(2)  # (W, P)
    dy2 = (ys.unsqueeze(-1) - ctrl[:, 1]).pow(2)  # (H, P)
    return tps_kernel(dx2.unsqueeze(0) + dy2.unsqueeze(1)).reshape(height * width, -1)


def dense_map(warp: TPSWarp, size: tuple[int, int], kernel: Tensor | None = None) -> Tensor:
    """``(B, H, W, 2)`` float64 ``T`` at every pixel (``kernel`` from :func:`grid_kernel`, built if ``None``)."""
    height, width = size
    warp64 = warp.to(torch.float64)
    if kernel is None:
        kernel = grid_kernel(warp64.control_points, size)
    pts = frame_points(size, kernel.device)
    return warp64.apply_kernel(kernel, pts).reshape(len(warp), height, width, 2)


def sampling_grid(warp: TPSWarp, size: int | Sequence[int], *, dtype: torch.dtype = torch.float32) -> Tensor:
    """The dense backward grid for ``grid_sample(..., align_corners=True)``.

    Computed in float64 with the radial basis built once for the batch (:func:`grid_kernel`): memory and
    time ``O(H·W·P)``, not ``O(B·H·W·P)``.

    Args:
        warp: ``B`` warps.
        size: output ``(H, W)``.
        dtype: of the returned grid.

    Returns:
        ``(B, H, W, 2)``: for each output pixel, the ``(x, y)`` input location it samples, in the
        ``align_corners=True`` frame.
    """
    return dense_map(warp, size_pair(size)).to(dtype)


def _check_warp_images(images: Tensor, warp: TPSWarp) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if images.shape[0] != len(warp):
        raise ValueError(f"{images.shape[0]} images but {len(warp)} warps")


def resample(images: Tensor, grid64: Tensor, padding_mode: str, mode: str) -> Tensor:
    """``grid_sample`` of ``images`` at a float64 frame grid cast to the images' (float) dtype."""
    dtype = images.dtype if images.is_floating_point() else torch.float32
    grid = grid64.to(device=images.device, dtype=dtype)
    return F.grid_sample(images.to(dtype), grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def warp_images(images: Tensor, warp: TPSWarp, *, padding_mode: str = "zeros", mode: str = "bilinear") -> Tensor:
    """Warp ``(B, C, H, W)`` images with ``B`` warps (``grid_sample``, ``align_corners=True``).

    ``padding_mode`` ``"zeros"`` (the reference), ``"border"`` or ``"reflection"``.
    """
    _check_warp_images(images, warp)
    return resample(images, dense_map(warp, tuple(images.shape[-2:])), padding_mode, mode)


def source_points(points: Tensor, warp: TPSWarp, image_size: int | Sequence[int]) -> Tensor:
    """Where output pixels ``points`` ``(B, M, 2)`` sample the input from (``T`` in pixels)."""
    size = size_pair(image_size)
    pts = points.to(torch.float64)
    out = frame_to_pixels(warp.to(torch.float64)(pixels_to_frame(pts, size)), size)
    return out.to(points.dtype if points.is_floating_point() else torch.float32)


def _initial_inverse(warp: TPSWarp, q: Tensor, lattice: int = 33, extent: float = 1.5) -> Tensor:
    """Starting points for ``T(p) = q``: the better of ``2q - T(q)`` and the nearest node of a coarse lattice."""
    first = 2 * q - warp(q)
    t = torch.linspace(-extent, extent, lattice, dtype=q.dtype, device=q.device)
    nodes = torch.stack(torch.meshgrid(t, t, indexing="xy"), dim=-1).reshape(-1, 2)  # (L, 2)
    images = warp(nodes)  # (B, L, 2)
    nearest = torch.cdist(q, images).argmin(-1)  # (B, M)
    coarse = nodes[nearest]
    better = (warp(coarse) - q).norm(dim=-1) < (warp(first) - q).norm(dim=-1)
    return torch.where(better.unsqueeze(-1), coarse, first)


def warp_keypoints(
    points: Tensor,
    warp: TPSWarp,
    image_size: int | Sequence[int],
    *,
    iterations: int = 30,
    tolerance: float = 1e-10,
    return_residual: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Exact positions of input-image points in the warped image: solve ``T(p) = q``.

    Damped Newton on the analytic Jacobian in float64, started from the better of the first-order
    inverse ``2q - T(q)`` and the nearest node of a coarse lattice; stops when every residual is
    below ``tolerance`` (normalised units; 1e-10 is ~1e-8 px at 100 px).

    Args:
        points: ``(B, M, 2)`` ``(x, y)`` pixels in the input images (non-finite points stay NaN).
        warp: ``B`` warps.
        image_size: ``(H, W)`` of the images.

        return_residual: also return ``‖T(p) - q‖`` in input pixels, ``(B, M)``.

    Returns:
        ``(B, M, 2)`` pixels in the warped images (may lie outside the image), and the residuals
        if asked. Strong warps can fold (DVE's training distribution folds somewhere in ~15 % of
        warps), leaving some input points with no preimage: their content is not visible in the
        warped image. Such points get the location of least residual found (what the reference's
        nearest-sample search returns too) and a residual well above zero; use ``return_residual``
        to mark them invisible (e.g. residual > 0.5 px).
    """
    size = size_pair(image_size)
    if points.ndim != 3 or points.shape[-1] != 2 or points.shape[0] != len(warp):
        raise ValueError(f"points must be (B={len(warp)}, M, 2) pixels, got {tuple(points.shape)}")
    w = warp.to(device=points.device, dtype=torch.float64)
    q = pixels_to_frame(points.to(torch.float64), size)
    finite = torch.isfinite(q).all(-1, keepdim=True)
    q = torch.where(finite, q, torch.zeros_like(q))
    p = _initial_inverse(w, q)
    residual = w(p) - q
    # Newton on the flattened points still above tolerance (per-point weights gathered).
    batch, m = q.shape[:2]
    p, residual, q_flat = p.reshape(-1, 2), residual.reshape(-1, 2), q.reshape(-1, 2)
    owner = torch.arange(batch, device=q.device).repeat_interleave(m)
    norm = residual.norm(dim=-1)
    active = norm > tolerance
    for _ in range(iterations):
        idx = active.nonzero().squeeze(-1)
        if idx.numel() == 0:
            break
        sub = TPSWarp(w.control_points, w.kernel_weights[owner[idx]], w.affine[owner[idx]])
        pa, ra, na, qa = p[idx].unsqueeze(1), residual[idx], norm[idx], q_flat[idx].unsqueeze(1)
        jac = sub.jacobian(pa)[:, 0]
        ok = torch.linalg.det(jac).abs() > 1e-12
        eye = torch.eye(2, dtype=jac.dtype, device=jac.device).expand_as(jac)
        step = torch.linalg.solve(torch.where(ok[:, None, None], jac, eye), ra.unsqueeze(-1)).squeeze(-1)
        alpha = torch.ones_like(na)
        accepted = torch.zeros_like(na, dtype=torch.bool)
        for _ in range(12):  # backtracking: halve the step until the residual decreases
            cand = pa[:, 0] - alpha.unsqueeze(-1) * step
            cand_res = (sub(cand.unsqueeze(1)) - qa)[:, 0]
            cand_norm = cand_res.norm(dim=-1)
            take = ~accepted & (cand_norm < na)
            pa = torch.where(take[:, None, None], cand.unsqueeze(1), pa)
            ra = torch.where(take.unsqueeze(-1), cand_res, ra)
            na = torch.where(take, cand_norm, na)
            accepted |= take
            if bool(accepted.all()):
                break
            alpha = torch.where(accepted, alpha, alpha / 2)
        p[idx], residual[idx], norm[idx] = pa[:, 0], ra, na
        # converged points, and points where no step helps (no preimage: a fold), leave the active set
        active[idx] = accepted & (na > tolerance)
    p, residual, norm = p.reshape(batch, m, 2), residual.reshape(batch, m, 2), norm.reshape(batch, m)
    out = torch.where(finite, frame_to_pixels(p, size), torch.full_like(p, float("nan")))
    out = out.to(points.dtype if points.is_floating_point() else torch.float32)
    if return_residual:
        scale = _frame_scale(size, residual) / 2
        res_px = torch.where(finite.squeeze(-1), (residual * scale).norm(dim=-1), torch.full_like(norm, float("nan")))
        return out, res_px.to(out.dtype)
    return out
