"""Landmark matching: carry reference keypoints into target images by descriptor similarity.

Nearest neighbour by cosine similarity (paper §4.2), either plain or per stage (the authors' matching:
each hypercolumn stage is L2-normalised, the score is the mean of the per-stage cosines), and a soft
variant that returns the expected location under ``softmax(similarity / temperature)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .check import size_pair
from .coords import cell_centers, pixels_to_normalized
from .hypercolumn import Hypercolumn, check_points, normalize_stages, sample_stages
from .ops import stage_similarity

__all__ = ["Matches", "match", "match_descriptors"]

Similarity = Literal["cosine", "stage_cosine", "dot"]
Method = Literal["nn", "soft"]


@dataclass
class Matches:
    """Result of :func:`match`.

    Attributes:
        points: ``(B, K, 2)`` matched ``(x, y)`` in target-image pixels.
        similarity: ``(B, K)`` similarity of each query with its best target location
            (cosine in ``[-1, 1]`` for ``cosine`` / ``stage_cosine``).
    """

    points: Tensor
    similarity: Tensor


def _locate(
    scores: Tensor, map_size: tuple[int, int], image_size: tuple[int, int], method: Method, temperature: float
) -> Matches:
    best, index = scores.max(dim=-1)
    centers = cell_centers(map_size, image_size, dtype=scores.dtype, device=scores.device)
    if method == "nn":
        points = centers[index]
    elif method == "soft":
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        weights = torch.softmax(scores / temperature, dim=-1)
        points = weights @ centers
    else:
        raise ValueError(f"method must be 'nn' or 'soft', got {method!r}")
    return Matches(points=points, similarity=best)


def match_descriptors(
    queries: Tensor,
    target: Tensor,
    image_size: tuple[int, int] | None = None,
    *,
    similarity: Similarity = "cosine",
    stage_channels: Sequence[int] | None = None,
    method: Method = "nn",
    temperature: float = 0.05,
) -> Matches:
    """Match query descriptors into a target descriptor map.

    Args:
        queries: ``(B, K, C)`` descriptors.
        target: ``(B, C, h, w)`` descriptor map covering the target image.
        image_size: ``(H, W)`` of the target image; defaults to ``(h, w)``.
        similarity: ``cosine``, ``stage_cosine`` (needs ``stage_channels``) or ``dot``.
        method: ``nn`` (arg-max) or ``soft`` (soft-argmax with ``temperature``).

    Returns:
        :class:`Matches` in target pixels.
    """
    if queries.ndim != 3 or target.ndim != 4 or queries.shape[-1] != target.shape[1]:
        raise ValueError(
            f"queries (B, K, C) and target (B, C, h, w) must agree on C, got {tuple(queries.shape)} "
            f"and {tuple(target.shape)}"
        )
    if queries.shape[0] != target.shape[0]:
        raise ValueError(f"batch sizes differ: {queries.shape[0]} queries vs {target.shape[0]} targets")
    map_size = (target.shape[-2], target.shape[-1])
    flat = target.flatten(2)  # (B, C, h*w)
    if similarity == "cosine":
        queries, flat = F.normalize(queries, dim=-1), F.normalize(flat, dim=1)
        scale = 1.0
    elif similarity == "stage_cosine":
        if stage_channels is None:
            raise ValueError("similarity='stage_cosine' needs stage_channels")
        queries, flat = normalize_stages(queries, stage_channels, -1), normalize_stages(flat, stage_channels, 1)
        scale = 1.0 / len(stage_channels)
    elif similarity == "dot":
        scale = 1.0
    else:
        raise ValueError(f"similarity must be 'cosine', 'stage_cosine' or 'dot', got {similarity!r}")
    scores = torch.bmm(queries, flat) * scale
    return _locate(scores, map_size, image_size or map_size, method, temperature)


@torch.no_grad()
def match(
    model: nn.Module,
    ref_images: Tensor,
    ref_points: Tensor,
    target_images: Tensor,
    *,
    similarity: Similarity = "stage_cosine",
    method: Method = "nn",
    temperature: float = 0.05,
    size: int | Sequence[int] | None = None,
) -> Matches:
    """Find reference keypoints in target images.

    Args:
        model: a :class:`~contrastive_landmarks.Hypercolumn`, or any module mapping ``(B, 3, H, W)``
            images to ``(B, C, h, w)`` descriptor maps (e.g. a backbone + projector pipeline).
        ref_images: ``(B, 3, H, W)`` normalised reference images.
        ref_points: ``(B, K, 2)`` ``(x, y)`` reference keypoints in pixels.
        target_images: ``(B, 3, H', W')`` normalised target images.
        similarity: ``stage_cosine`` (per-stage cosine, the authors'; Hypercolumn only),
            ``cosine`` or ``dot``.
        method: ``nn`` (nearest neighbour) or ``soft`` (soft-argmax, ``temperature``).
        size: grid the target descriptors are computed on; default: the Hypercolumn's ``size``
            if set, else the target resolution (the authors match at full input resolution).

    Returns:
        :class:`Matches`: ``points`` ``(B, K, 2)`` in target pixels, ``similarity`` ``(B, K)``.
    """
    ref_size = (ref_images.shape[-2], ref_images.shape[-1])
    target_size = (target_images.shape[-2], target_images.shape[-1])
    check_points(ref_points, ref_size, ref_images.shape[0], "ref_points")
    if target_images.shape[0] != ref_images.shape[0]:
        raise ValueError(f"{ref_images.shape[0]} reference images but {target_images.shape[0]} targets")
    normalized = pixels_to_normalized(ref_points.to(ref_images.dtype), ref_size)

    if isinstance(model, Hypercolumn):
        grid = size_pair(size) if size is not None else (model.size or target_size)
        channels = model.stage_channels
        queries = sample_stages(model.stage_maps(ref_images), normalized)
        target_maps = model.stage_maps(target_images)
        if similarity in ("stage_cosine", "dot"):
            per_stage = similarity == "stage_cosine"
            if per_stage:
                queries = normalize_stages(queries, channels, -1)
            scores = stage_similarity(queries, target_maps, grid, normalize=per_stage)
            if per_stage:
                scores = scores / len(channels)
            return _locate(scores, grid, target_size, method, temperature)
        from .hypercolumn import hypercolumn

        return match_descriptors(
            queries,
            hypercolumn(target_maps, grid),
            target_size,
            similarity=similarity,
            method=method,
            temperature=temperature,
        )

    if similarity == "stage_cosine":
        raise ValueError("similarity='stage_cosine' needs a Hypercolumn model; use 'cosine' or 'dot'")
    ref_map = model(ref_images)
    queries = sample_stages([ref_map], normalized)
    target_map = model(target_images)
    if size is not None:
        target_map = F.interpolate(target_map, size=size_pair(size), mode="bilinear", align_corners=False)
    return match_descriptors(
        queries, target_map, target_size, similarity=similarity, method=method, temperature=temperature
    )
