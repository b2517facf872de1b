"""Landmark matching (the paper's Table 1): each image TPS-warped twice with the benchmark's halved warps
(:meth:`~contrastive_landmarks.tps.TPSParams.matching`); consecutive images ``(2i, 2i+1)`` form the pairs.
The ground-truth landmarks of image ``2i``'s doubly warped view are matched, by nearest neighbour
(:func:`contrastive_landmarks.match`), into its singly warped view (*same identity*) and into image
``2i+1``'s singly warped view (*different identity*); the error is the mean pixel distance scaled to the
70-pixel frame (``err · 70 / W``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..hypercolumn import Hypercolumn
from ..matching import match
from ..metrics import matching_error
from .report import environment

__all__ = ["ProjectedDescriptors", "describe", "evaluate_matching"]


def _normalizer(model: nn.Module, normalize: Callable[[Tensor], Tensor] | None) -> Callable[[Tensor], Tensor]:
    if normalize is not None:
        return normalize
    for owner in (
        model,
        getattr(model, "backbone", None),
        getattr(getattr(model, "hypercolumn", None), "backbone", None),
    ):
        if owner is not None and hasattr(owner, "normalize") and callable(owner.normalize):
            return owner.normalize
    raise TypeError(f"cannot find the input normalisation of {type(model).__name__}; pass normalize=")


class ProjectedDescriptors(nn.Module):
    """Hypercolumn + :class:`~contrastive_landmarks.projector.SpatialProjector` as one descriptor model
    (for :func:`evaluate_matching`): ``(B, 3, H, W)`` normalised images -> ``(B, dim, S, S)``.

    Args:
        hypercolumn: the frozen :class:`~contrastive_landmarks.Hypercolumn`.
        projector: a trained projector whose ``in_channels`` equals ``hypercolumn.channels``.
        size: descriptor grid (default: the input resolution, as the authors match at 96²).
    """

    def __init__(self, hypercolumn: Hypercolumn, projector: nn.Module, size: int | Sequence[int] | None = None):
        super().__init__()
        self.hypercolumn, self.projector, self.size = hypercolumn, projector, size
        self.backbone = hypercolumn.backbone

    def forward(self, images: Tensor) -> Tensor:
        size = self.size if self.size is not None else tuple(images.shape[-2:])
        return self.projector(self.hypercolumn.stage_maps(images), size)


def _match_pairs(
    model: nn.Module, pair, *, visible: Tensor | None, normalize: Callable[[Tensor], Tensor], frame: float, **options
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Distances of one batch's matches (``{"same", "different"}``, visible landmarks only) and its first examples.

    The doubly warped views of images ``2i`` are matched into their own singly warped views and into those of
    images ``2i+1``; ``options`` go to :func:`~contrastive_landmarks.match` (``similarity``, ``size``).
    """
    view1, view2 = pair.image1.clamp(0, 1), pair.image2.clamp(0, 1)
    height, width = view1.shape[-2:]
    kp1, kp2 = pair.keypoints1.float(), pair.keypoints2.float()
    source, src_kp = view1[0::2], kp1[0::2]
    # queries outside the warped image cannot be sampled: clamp them to the border (rare)
    src_kp = torch.stack([src_kp[..., 0].clamp(-0.5, width - 0.5), src_kp[..., 1].clamp(-0.5, height - 0.5)], -1)
    src_norm = normalize(source)
    distances, example = {}, {}
    for name, target, truth, vis in (
        ("same", view2[0::2], kp2[0::2], None if visible is None else visible[0::2]),
        ("different", view2[1::2], kp2[1::2], None if visible is None else visible[0::2] & visible[1::2]),
    ):
        found = match(model, src_norm, src_kp, normalize(target), **options)
        distance = matching_error(found.points, truth, (height, width), frame, vis, reduction="none")
        distances[name] = distance[~distance.isnan()]
        if name == "different":
            example = {
                "source": source[:4],
                "source_points": src_kp[:4],
                "target": target[:4],
                "points": found.points[:4],
                "truth": truth[:4],
            }
    return distances, example


@torch.no_grad()
def evaluate_matching(
    model: nn.Module,
    dataset,
    *,
    num_images: int | None = None,
    seed: int = 1,
    crop: int = 0,
    similarity: str | None = None,
    size: int | Sequence[int] | None = None,
    frame: float = 70.0,
    batch_size: int = 16,
    normalize: Callable[[Tensor], Tensor] | None = None,
    tps_params=None,
    return_matches: bool = False,
) -> dict:
    """Landmark matching on TPS-warped same-identity and consecutive different-identity pairs (Table 1).

    Args:
        model: a :class:`~contrastive_landmarks.Hypercolumn` (default similarity: per-stage cosine,
            the authors') or any module mapping normalised images to ``(B, C, h, w)`` descriptor maps,
            e.g. :class:`ProjectedDescriptors` (cosine).
        dataset: labelled samples (``image`` in ``[0, 1]``, ``keypoints``); all images the same size.
        num_images: use the first ``num_images`` images (rounded down to even; default all, giving
            ``num_images // 2`` pairs of each kind, 500 for MAFL's 1,000 test images).
        seed: seed of the warps (a CPU generator; the warps of image ``i`` depend only on ``seed`` and
            the images before it).
        crop: pixels removed from every side after warping (the paper warps 136² images and crops 20).
        similarity: ``stage_cosine`` / ``cosine`` / ``dot`` (default: ``stage_cosine`` for a
            Hypercolumn, else ``cosine``).
        size: descriptor grid (default: the full warped-image resolution, as the authors).
        frame: the canonical frame errors are reported in (70 px: ``error · frame / W``).
        tps_params: warp distribution (default :meth:`~contrastive_landmarks.tps.TPSParams.matching`).

    Returns:
        ``{"same": {"error", "count"}, "different": {...}, "config": {...}, "environment": {...}}``;
        errors are mean distances over all visible landmarks in the ``frame``-pixel frame.
    """
    from ..tps import TPSParams, make_pair

    params = tps_params or TPSParams.matching()
    normalize = _normalizer(model, normalize)
    if isinstance(model, nn.Module):
        model.eval()
    total = len(dataset) if num_images is None else min(num_images, len(dataset))
    total -= total % 2
    if total < 2:
        raise ValueError(f"matching needs at least 2 images, got {total}")
    similarity = similarity or ("stage_cosine" if isinstance(model, Hypercolumn) else "cosine")
    generator = torch.Generator().manual_seed(seed)
    errors = {"same": [], "different": []}
    kept = []
    chunk = max(2, batch_size - batch_size % 2)
    for start in range(0, total, chunk):
        samples = [dataset[i] for i in range(start, min(start + chunk, total))]
        images = torch.stack([s["image"] for s in samples])
        keypoints = torch.stack([s["keypoints"] for s in samples]).float()
        visible = torch.stack([s["visible"] for s in samples]) if "visible" in samples[0] else None
        pair = make_pair(images, keypoints, params, generator=generator, crop=crop)
        height, width = pair.image1.shape[-2:]
        options = {"similarity": similarity, "size": size}
        distances, example = _match_pairs(model, pair, visible=visible, normalize=normalize, frame=frame, **options)
        for name, distance in distances.items():
            errors[name].append(distance)
        if return_matches and not kept:
            kept.append(example)
    result = {
        name: {"error": float(torch.cat(e).mean()), "count": int(torch.cat(e).numel())} for name, e in errors.items()
    }
    result["config"] = {
        "protocol": "matching",
        "pairs": total // 2,
        "seed": seed,
        "crop": crop,
        "similarity": similarity,
        "size": size,
        "frame": frame,
        "image_size": [int(height), int(width)],
        "model": describe(model),
        "tps": {k: getattr(params, k) for k in vars(params)} if hasattr(params, "__dict__") else str(params),
    }
    result["environment"] = environment()
    if return_matches:
        result["examples"] = kept[0] if kept else None
    return result


def describe(model) -> dict:
    info: dict = {"class": type(model).__name__}
    backbone = getattr(model, "backbone", None)
    if backbone is not None and hasattr(backbone, "config"):
        info["backbone"] = backbone.config
    if isinstance(model, Hypercolumn):
        info["size"] = list(model.size) if model.size else None
    projector = getattr(model, "projector", None)
    if projector is not None and hasattr(projector, "config"):
        info["projector"] = projector.config
    return info
