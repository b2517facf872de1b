"""Multi-stage bilinear upsample-and-sum, and linear heads applied to stages at native resolution."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["project_stages", "project_stages_reference", "upsample_sum", "upsample_sum_reference"]


def _check_maps(maps: Sequence[Tensor]) -> None:
    if not maps:
        raise ValueError("expected at least one stage map")
    for m in maps:
        if m.ndim != 4:
            raise ValueError(f"stage maps must be (B, C, h, w), got {tuple(m.shape)}")
        if m.shape[0] != maps[0].shape[0]:
            raise ValueError(f"stage maps disagree on the batch size: {[tuple(x.shape) for x in maps]}")


def upsample_sum_reference(maps: Sequence[Tensor], size: tuple[int, int], bias: Tensor | None = None) -> Tensor:
    """``Σ_s up(maps[s]) (+ bias)`` with ``F.interpolate(bilinear, align_corners=False)``.

    Args:
        maps: ``(B, d, h_s, w_s)`` maps with the same ``d``.
        size: output ``(S_h, S_w)``.
        bias: optional ``(d,)``.

    Returns:
        ``(B, d, S_h, S_w)`` (channels-last memory format).
    """
    _check_maps(maps)
    out = None
    for m in maps:
        up = F.interpolate(m.contiguous(memory_format=torch.channels_last), size=size, mode="bilinear",
                           align_corners=False)
        out = up if out is None else out + up
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def upsample_sum(maps: Sequence[Tensor], size: tuple[int, int], bias: Tensor | None = None) -> Tensor:
    """Dispatching form of :func:`upsample_sum_reference` (same arguments, same result)."""
    return upsample_sum_reference(maps, size, bias)


def _split_weight(weight: Tensor, maps: Sequence[Tensor]) -> list[Tensor]:
    channels = [m.shape[1] for m in maps]
    if weight.ndim == 4:
        weight = weight.flatten(1)
    if weight.ndim != 2 or weight.shape[1] != sum(channels):
        raise ValueError(
            f"head weight of shape {tuple(weight.shape)} does not fit stages with {channels} channels "
            f"(expected (d, {sum(channels)}))"
        )
    return list(torch.split(weight, channels, dim=1))


def project_stages_reference(
    maps: Sequence[Tensor], weight: Tensor, bias: Tensor | None, size: tuple[int, int]
) -> Tensor:
    """The materialised definition: ``conv1x1(concat_s up(maps[s]), weight, bias)``.

    Args:
        maps: ``(B, C_s, h_s, w_s)`` stage maps.
        weight: ``(d, ΣC_s)`` or ``(d, ΣC_s, 1, 1)``, input channels in the order of ``maps``.
        bias: ``(d,)`` or ``None``.
        size: output ``(S_h, S_w)``.

    Returns:
        ``(B, d, S_h, S_w)``.
    """
    _check_maps(maps)
    _split_weight(weight, maps)
    hyper = torch.cat(
        [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps], dim=1
    )
    return F.conv2d(hyper, weight.reshape(weight.shape[0], -1, 1, 1), bias)


def project_stages(
    maps: Sequence[Tensor], weight: Tensor, bias: Tensor | None, size: tuple[int, int]
) -> Tensor:
    """A 1×1 linear head on the hypercolumn of ``maps``, computed without the hypercolumn.

    Projects each stage at its native resolution with its slice of ``weight``, then upsamples and
    sums (:func:`upsample_sum`). Exact, because bilinear interpolation weights sum to one. Same
    arguments and result as :func:`project_stages_reference`.
    """
    _check_maps(maps)
    parts = _split_weight(weight, maps)
    projected = [
        F.conv2d(m.contiguous(memory_format=torch.channels_last), w[:, :, None, None])
        for m, w in zip(maps, parts)
    ]
    return upsample_sum(projected, size, bias)
