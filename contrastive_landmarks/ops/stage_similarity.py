"""Similarity of query descriptors with every location of a hypercolumn, per-stage normalised or not."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["stage_similarity", "stage_similarity_reference"]


def stage_similarity_reference(
    queries: Tensor, maps: Sequence[Tensor], size: tuple[int, int], *, normalize: bool = True
) -> Tensor:
    """``<q_k, h(p)>`` for every query ``k`` and hypercolumn location ``p`` (materialised).

    With ``normalize=True`` each stage block of the hypercolumn is L2-normalised per location
    (the authors' matching), so with per-stage normalised queries the score is a sum of per-stage
    cosines, in ``[-n_stages, n_stages]``.

    Args:
        queries: ``(B, K, ΣC_s)`` descriptors, channels in the order of ``maps``.
        maps: ``(B, C_s, h_s, w_s)`` stage maps.
        size: hypercolumn ``(S_h, S_w)``.

    Returns:
        ``(B, K, S_h * S_w)`` scores, row-major over the ``S_h × S_w`` grid.
    """
    channels = [m.shape[1] for m in maps]
    if queries.ndim != 3 or queries.shape[-1] != sum(channels):
        raise ValueError(f"queries must be (B, K, {sum(channels)}), got {tuple(queries.shape)}")
    blocks = []
    for m in maps:
        up = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        blocks.append(F.normalize(up, dim=1) if normalize else up)
    hyper = torch.cat(blocks, dim=1).flatten(2)  # (B, C, S*S)
    return torch.bmm(queries, hyper)


def stage_similarity(
    queries: Tensor, maps: Sequence[Tensor], size: tuple[int, int], *, normalize: bool = True
) -> Tensor:
    """Dispatching form of :func:`stage_similarity_reference` (same arguments, same result)."""
    return stage_similarity_reference(queries, maps, size, normalize=normalize)
