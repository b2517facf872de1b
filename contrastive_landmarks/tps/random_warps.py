"""Random thin-plate-spline (TPS) warps, DVE's parameterisation: image pairs and augmentation, with exact keypoints.

The warp itself (evaluation, resampling, exact keypoint inversion) is :mod:`.warp`; both modules' names are
importable from :mod:`contrastive_landmarks.tps`. Frame convention: see :mod:`.warp` (``align_corners=True`` normalised
coordinates inside, ``(x, y)`` pixels at the API edge).

Parameterisation (DVE's ``random_tps_weights``)
-----------------------------------------------
``T(p) = Σ_i w_i U(‖p - c_i‖²) + a_0 + a_1 x + a_2 y`` with a ``10 × 10`` grid of control points
``c_i`` in ``[-1, 1]²``, kernel ``U(r²) = r² log r²``, kernel weights ``w_i ~ N(0, warpsd_all²)``
of which a random ~half (each coordinate independently) is redrawn from ``N(0, warpsd_subset²)``,
and the affine rows ``[a_0; a_1; a_2] = [[tx, ty], [s cos θ, -s sin θ], [s sin θ, s cos θ]]`` with
``tx, ty ~ N(0, transsd²)``, ``s = 1 + N(0, scalesd²)``, ``θ ~ N(0, rotsd²)`` degrees.

Presets (:class:`TPSParams`): :meth:`~TPSParams.dve` (training pairs), :meth:`~TPSParams.matching`
(the halved parameters of the matching benchmark) and :meth:`~TPSParams.few_shot` (``WarperSingle``,
the augmentation of few-shot regressor training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..coords import pixels_to_normalized
from .warp import TPSWarp, control_grid, dense_map, frame_to_pixels, grid_kernel, resample, warp_images, warp_keypoints

__all__ = ["TPSPair", "TPSParams", "inside_image", "make_pair", "random_tps", "tps_augment"]


@dataclass(frozen=True)
class TPSParams:
    """Standard deviations of DVE's random TPS warps (defaults: DVE's ``Warper``).

    Attributes:
        warpsd_all: std of all kernel weights.
        warpsd_subset: std of the redrawn ~half of the kernel weights.
        transsd: std of the translation, normalised units.
        scalesd: std of the scale around 1.
        rotsd: std of the rotation, degrees.
        im1_multiplier: factor on the kernel-weight stds of the *first* warp of an image pair
            (:func:`make_pair`).
        im1_multiplier_aff: factor on the affine stds of the first warp of a pair.
        grid_points: control points per side.
    """

    warpsd_all: float = 0.001
    warpsd_subset: float = 0.01
    transsd: float = 0.1
    scalesd: float = 0.1
    rotsd: float = 5.0
    im1_multiplier: float = 0.5
    im1_multiplier_aff: float = 1.0
    grid_points: int = 10

    def __post_init__(self) -> None:
        for name in (
            "warpsd_all",
            "warpsd_subset",
            "transsd",
            "scalesd",
            "rotsd",
            "im1_multiplier",
            "im1_multiplier_aff",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"TPSParams.{name} must be a finite non-negative number, got {value}")
        if self.grid_points < 2:
            raise ValueError(f"TPSParams.grid_points must be at least 2, got {self.grid_points}")

    @classmethod
    def dve(cls) -> TPSParams:
        """DVE's training warps: 0.001 / 0.01 / 0.1 / 0.1 / 5°, first-view multipliers 0.5 and 1."""
        return cls()

    @classmethod
    def matching(cls) -> TPSParams:
        """The landmark-matching benchmark's halved warps (both multipliers 1)."""
        return cls(
            warpsd_all=0.0005,
            warpsd_subset=0.005,
            transsd=0.05,
            scalesd=0.05,
            rotsd=2.5,
            im1_multiplier=1.0,
            im1_multiplier_aff=1.0,
        )

    @classmethod
    def few_shot(cls) -> TPSParams:
        """``WarperSingle``'s defaults, the few-shot regressor augmentation (``warpsd_subset = 0``)."""
        return cls(
            warpsd_all=0.0005,
            warpsd_subset=0.0,
            transsd=0.02,
            scalesd=0.02,
            rotsd=2.0,
            im1_multiplier=1.0,
            im1_multiplier_aff=1.0,
        )

    def scaled(self, tps: float = 1.0, affine: float = 1.0) -> TPSParams:
        """These parameters with the kernel-weight stds times ``tps`` and the affine stds times ``affine``."""
        return replace(
            self,
            warpsd_all=self.warpsd_all * tps,
            warpsd_subset=self.warpsd_subset * tps,
            transsd=self.transsd * affine,
            scalesd=self.scalesd * affine,
            rotsd=self.rotsd * affine,
        )


def random_tps(
    batch: int,
    params: TPSParams | None = None,
    *,
    generator: torch.Generator | None = None,
    tps_multiplier: float = 1.0,
    affine_multiplier: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> TPSWarp:
    """Draw ``batch`` random warps with DVE's parameterisation (see the module docstring).

    Args:
        batch: number of warps.
        params: the distribution (default :meth:`TPSParams.dve`).
        generator: CPU generator for reproducible draws (the global RNG when ``None``).
        tps_multiplier, affine_multiplier: factors on the kernel-weight and affine stds.
        dtype, device: of the returned warp (drawn on the CPU in float64).
    """
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    p = (params or TPSParams()).scaled(tps_multiplier, affine_multiplier)
    n = p.grid_points * p.grid_points
    kw = {"generator": generator, "dtype": torch.float64}
    weights = torch.randn(batch, n, 2, **kw) * p.warpsd_all
    subset = torch.rand(batch, n, 2, **kw) > 0.5  # ~half of the weights, each coordinate independently
    weights = torch.where(subset, torch.randn(batch, n, 2, **kw) * p.warpsd_subset, weights)
    trans = torch.randn(batch, 2, **kw) * p.transsd
    scale = 1.0 + torch.randn(batch, **kw) * p.scalesd
    theta = torch.deg2rad(torch.randn(batch, **kw) * p.rotsd)
    cos, sin = scale * torch.cos(theta), scale * torch.sin(theta)
    affine = torch.stack([trans, torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], dim=1)
    warp = TPSWarp(control_grid(p.grid_points), weights, affine)
    return warp.to(device=device, dtype=dtype)


def inside_image(points: Tensor, size: tuple[int, int]) -> Tensor:
    height, width = size
    x, y = points[..., 0], points[..., 1]
    return (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)


@dataclass
class TPSPair:
    """Two warped views of the same images (DVE's ``Warper``).

    Attributes:
        image1: ``(B, C, h, w)`` the more-warped view (``image`` warped by ``warp1`` then ``warp2``).
        image2: ``(B, C, h, w)`` the less-warped view (``image`` warped by ``warp1``).
        grid: ``(B, h, w, 2)``: for each pixel of ``image1``, its location in ``image2`` in the
            ``align_corners=False`` normalised frame of :mod:`contrastive_landmarks.coords`, i.e.
            ``grid_sample(image2, grid, align_corners=False)`` reproduces ``image1``;
            ``coords.normalized_to_pixels(grid, (h, w))`` gives pixels.
        keypoints1, keypoints2: ``(B, M, 2)`` pixel keypoints in each view (``None`` without keypoints).
        visible1, visible2: ``(B, M)`` bool: the keypoint lies inside its (cropped) view and its content
            is there (the warp inversion was exact, not a fold); ``None`` without keypoints.
        warp1, warp2: the warps drawn (on the full, uncropped image frame).
    """

    image1: Tensor
    image2: Tensor
    grid: Tensor
    keypoints1: Tensor | None
    keypoints2: Tensor | None
    warp1: TPSWarp
    warp2: TPSWarp
    visible1: Tensor | None = None
    visible2: Tensor | None = None


def make_pair(
    images: Tensor,
    keypoints: Tensor | None = None,
    params: TPSParams | None = None,
    *,
    generator: torch.Generator | None = None,
    crop: int = 0,
    padding_mode: str = "zeros",
) -> TPSPair:
    """A pair of TPS-warped views per image and the dense correspondence between them.

    As DVE's ``Warper``: ``image2 = warp(image, T1)`` with ``T1`` drawn at the reduced strength
    ``params.im1_multiplier`` (kernel) / ``params.im1_multiplier_aff`` (affine), then
    ``image1 = warp(image2, T2)`` at full strength, then both are centre-cropped by ``crop`` pixels.

    Args:
        images: ``(B, C, H, W)``.
        keypoints: optional ``(B, M, 2)`` pixel keypoints of ``images``.
        params: warp distribution (default :meth:`TPSParams.dve`; :meth:`TPSParams.matching` for the benchmark).
        generator: CPU generator for reproducible warps.
        crop: pixels removed from every side after warping.

    Returns:
        :class:`TPSPair` (keypoints in the cropped frames).
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    params = params or TPSParams()
    batch, _, height, width = images.shape
    if crop < 0 or 2 * crop >= min(height, width):
        raise ValueError(f"crop={crop} leaves nothing of a {width}x{height} image")
    warp1 = random_tps(
        batch,
        params,
        generator=generator,
        tps_multiplier=params.im1_multiplier,
        affine_multiplier=params.im1_multiplier_aff,
        device=images.device,
    )
    warp2 = random_tps(batch, params, generator=generator, device=images.device)
    # one radial-basis matrix for both warps (same control points), and warp2's dense map used twice:
    # to resample image1 and as the returned correspondence grid
    kernel = grid_kernel(warp1.control_points, (height, width))
    same_ctrl = torch.equal(warp1.control_points, warp2.control_points)
    dense2 = dense_map(warp2, (height, width), kernel if same_ctrl else None)
    image2 = resample(images, dense_map(warp1, (height, width), kernel), padding_mode, "bilinear")
    image1 = resample(image2, dense2, padding_mode, "bilinear")
    out_h, out_w = height - 2 * crop, width - 2 * crop
    grid_px = frame_to_pixels(dense2, (height, width))
    grid_px = grid_px[:, crop : height - crop, crop : width - crop] - crop
    dtype = image1.dtype
    grid = pixels_to_normalized(grid_px, (out_h, out_w)).to(dtype)
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
    return TPSPair(image1, image2, grid, kp1, kp2, warp1, warp2, vis1, vis2)


def tps_augment(
    images: Tensor,
    keypoints: Tensor | None = None,
    params: TPSParams | None = None,
    *,
    generator: torch.Generator | None = None,
    padding_mode: str = "zeros",
) -> tuple[Tensor, Tensor | None]:
    """One random warp per image, with its keypoints (the reference's ``WarperSingle``).

    Args:
        images: ``(B, C, H, W)``.
        keypoints: optional ``(B, M, 2)`` pixels.
        params: default :meth:`TPSParams.few_shot`.

    Returns:
        ``(warped images, warped keypoints or None)``.
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    warp = random_tps(images.shape[0], params or TPSParams.few_shot(), generator=generator, device=images.device)
    warped = warp_images(images, warp, padding_mode=padding_mode)
    kp = None if keypoints is None else warp_keypoints(keypoints, warp, images.shape[-2:])
    return warped, kp
