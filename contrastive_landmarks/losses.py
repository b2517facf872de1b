"""The spatially contrastive (equivariance) loss of the paper, Eq. 3 with Eq. 4.

For descriptors ``Φ_u(x)`` of an image ``x``, ``Φ_v(x')`` of a warped view ``x' = g x`` and the warp's
correspondence ``g``::

    p(v|u) = softmax_v(<Φ_u(x), Φ_v(x')> / τ)                         (Eq. 4)
    L      = mean_{b, u} Σ_v ||g(u) - v||^γ p(v|u)                    (Eq. 3)

with distances in pixels of the input image. ``x' = x`` (``feats2=None``, ``g`` the identity) is the
projector objective of §3.2: each location must be most similar to itself and its neighbours.

Defaults are the authors' projector loss: ``τ = 1/7`` on cosine similarities (their ``--temperature 7``
is a multiplier), ``γ = 0.5`` (a square root of the pixel distance, as DVE), distances in input pixels.

**Normalisation.** The paper writes ``1/|Ω|²`` in front of the double sum; the authors' code (and DVE)
divide by ``|Ω|`` (and the batch), i.e. take the mean over ``u`` of ``Σ_v d(u, v) p(v|u)``, which reads
as "the expected distance of a location's match". ``reduction="mean"`` (default) is that;
``reduction="paper"`` is ``1/|Ω|²`` (``= mean / |Ω|``, only a rescaling by ``|Ω| = h·w``, i.e. of the
learning rate); ``reduction="none"`` returns the per-location expected distances ``(B, h, w)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .coords import normalized_to_pixels
from .ops.softmax_matching import Implementation, key_coordinates, softmax_expected_distance

__all__ = ["spatial_contrastive_loss"]

Reduction = Literal["mean", "paper", "none"]


def _image_size(image_size: int | Sequence[int] | None, default: tuple[int, int]) -> tuple[int, int]:
    if image_size is None:
        return default
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    size = tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"image_size must be a positive int or (H, W) of positive ints, got {image_size!r}")
    return size  # type: ignore[return-value]


def _grid_at_cells(grid: Tensor, map_size: tuple[int, int]) -> Tensor:
    """Resample a ``(B, h', w', 2)`` correspondence grid at the centres of the ``(h, w)`` feature cells.

    Bilinear with ``align_corners=False``: exactly the value of ``g`` at each cell centre when ``g`` is
    bilinear between pixel centres (and the cell-centre average for integer downsampling factors).
    """
    if tuple(grid.shape[1:3]) == tuple(map_size):
        return grid
    as_image = grid.permute(0, 3, 1, 2)
    return F.interpolate(as_image, size=map_size, mode="bilinear", align_corners=False).permute(0, 2, 3, 1)


def spatial_contrastive_loss(
    feats1: Tensor,
    feats2: Tensor | None = None,
    grid: Tensor | None = None,
    *,
    temperature: float = 1 / 7,
    distance_power: float = 0.5,
    normalize: bool = True,
    image_size: int | Sequence[int] | None = None,
    reduction: Reduction = "mean",
    implementation: Implementation = "auto",
) -> Tensor:
    """Eq. 3 with Eq. 4: the expected (powered) pixel distance between ``g(u)`` and ``u``'s soft match.

    Args:
        feats1: ``(B, d, h, w)`` descriptors of ``x``.
        feats2: ``(B, d, h, w)`` descriptors of ``x'``; ``None``: ``x' = x`` and ``g`` the identity
            (the projector objective of §3.2; ``grid`` must then be ``None``).
        grid: ``(B, h', w', 2)``: for each location ``u`` of ``x``, ``g(u)``, its ``(x, y)`` position
            in ``x'`` in the ``align_corners=False`` normalised frame of
            :mod:`contrastive_landmarks.coords` (``tps.make_pair(...).grid`` at image resolution).
            Resampled bilinearly to the ``(h, w)`` feature cells when ``(h', w') != (h, w)``.
            ``None``: the identity (``x'`` aligned with ``x``). Treated as data: no gradient.
        temperature: ``τ`` of Eq. 4 (default ``1/7``, the authors' multiplier 7).
        distance_power: ``γ`` in ``||g(u) - v||^γ`` (default 0.5 as DVE and the authors; Eq. 3 writes 1).
        normalize: L2-normalise the descriptors along ``d`` first, so logits are ``cos / τ``.
        image_size: ``(H, W)`` of the input image, the unit of the distances (pixels); default the
            feature grid ``(h, w)`` itself. ``v`` runs over the cell centres of ``feats2``'s grid
            (:func:`contrastive_landmarks.coords.cell_centers`).
        reduction: ``"mean"`` over ``u`` and the batch (authors'), ``"paper"`` (``1/|Ω|²``, i.e.
            ``mean / (h·w)``) or ``"none"`` (``(B, h, w)`` per-location values).
        implementation: ``"auto"``, ``"naive"``, ``"streaming"`` or ``"triton"``
            (see :mod:`contrastive_landmarks.ops.softmax_matching`).

    Returns:
        A scalar (float32 for 16-bit inputs), or ``(B, h, w)`` with ``reduction="none"``.
    """
    if not isinstance(feats1, Tensor) or feats1.ndim != 4:
        raise ValueError(f"feats1 must be a (B, d, h, w) tensor, got {getattr(feats1, 'shape', type(feats1))}")
    if not feats1.is_floating_point():
        raise TypeError(f"feats1 must be floating point, got {feats1.dtype}")
    batch, dim, h, w = feats1.shape
    if batch == 0 or dim == 0 or h == 0 or w == 0:
        raise ValueError(f"feats1 has an empty dimension: {tuple(feats1.shape)}")
    if feats2 is not None:
        if not isinstance(feats2, Tensor) or tuple(feats2.shape) != tuple(feats1.shape):
            raise ValueError(
                f"feats2 must have the shape of feats1 {tuple(feats1.shape)}, got {tuple(getattr(feats2, 'shape', ()))}"
            )
        if feats2.dtype != feats1.dtype or feats2.device != feats1.device:
            raise TypeError(
                f"feats1 and feats2 must share dtype and device, got {feats1.dtype}/{feats1.device} "
                f"and {feats2.dtype}/{feats2.device}"
            )
    elif grid is not None:
        raise ValueError("grid needs feats2: with feats2=None (x' = x) the correspondence g is the identity")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if not distance_power >= 0:
        raise ValueError(f"distance_power must be non-negative, got {distance_power}")
    if reduction not in ("mean", "paper", "none"):
        raise ValueError(f"reduction must be 'mean', 'paper' or 'none', got {reduction!r}")
    size = _image_size(image_size, (h, w))
    coord_dtype = torch.float64 if feats1.dtype == torch.float64 else torch.float32

    # Source points in feature cells (exact integers for the identity), distances scaled to image pixels.
    if grid is None:
        src = key_coordinates((h, w), dtype=coord_dtype, device=feats1.device)[None]  # (1, N, 2)
    else:
        if not isinstance(grid, Tensor) or grid.ndim != 4 or grid.shape[-1] != 2 or grid.shape[0] != batch:
            raise ValueError(
                f"grid must be ({batch}, h', w', 2) (x, y) normalised positions in x', "
                f"got {tuple(getattr(grid, 'shape', ()))}"
            )
        if not grid.is_floating_point():
            raise TypeError(f"grid must be floating point, got {grid.dtype}")
        cells = _grid_at_cells(grid.detach().to(device=feats1.device, dtype=coord_dtype), (h, w))
        src = normalized_to_pixels(cells, (h, w)).reshape(batch, h * w, 2)

    # (B, N, d) views of the (B, d, h, w) maps: the streaming op reads them in place, normalises tiles on
    # the fly and returns gradients in the maps' layout; the same tensor twice means x' = x.
    q = feats1.flatten(2).transpose(1, 2)
    k = q if feats2 is None else feats2.flatten(2).transpose(1, 2)
    height, width = size
    per_query = softmax_expected_distance(
        q,
        k,
        src,
        (h, w),
        scale=1.0 / temperature,
        power=distance_power,
        spacing=(width / w, height / h),
        normalize=normalize,
        implementation=implementation,
    )
    if reduction == "none":
        return per_query.view(batch, h, w)
    loss = per_query.mean()
    return loss / (h * w) if reduction == "paper" else loss
