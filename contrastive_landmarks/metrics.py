"""Evaluation metrics of the paper: inter-ocular error (faces), PCK (birds), matching error.

All functions take ``(x, y)`` **pixel** points ``(B, N, 2)`` (any consistent unit works for the
scale-free inter-ocular error) and an optional ``(B, N)`` bool ``visible`` mask; invisible points
are left out of every average. Results are Python-friendly 0-d tensors.

:func:`pck` is the library's one PCK: a fraction in ``[0, 1]``, a point correct when its distance is at most
the threshold (``<=``); multiply by 100 only to display a percentage. With ``image_size`` it is the metric
as the paper defines it; with ``threshold`` in pixels it is what ``evaluate keypoints`` reports.
:func:`pck_legacy` reproduces the reference evaluation script (integer-truncated distances in a 48-unit box,
compared with ``<``, per-part per-batch averaging), only to compare with numbers computed that way; it
overestimates PCK.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "EYE_INDICES",
    "Metric",
    "inter_ocular_error",
    "matching_error",
    "mean_pixel_error",
    "mean_shape",
    "pck",
    "pck_legacy",
    "point_spread",
    "resolve_metric",
    "spread_ratio",
]

#: An error of pixel predictions: ``f(pred (M, N, 2), target (M, N, 2), visible (M, N)) -> float``, lower is better.
Metric = Callable[[Tensor, Tensor, Tensor], float]

#: Landmark indices of the two points whose distance normalises the error (reference-notes §5b).
EYE_INDICES: dict[str, tuple[int, int]] = {
    "mafl": (0, 1),
    "celeba": (0, 1),
    "aflw_m": (0, 1),
    "aflw_mtfl": (0, 1),
    "mtfl": (0, 1),
    "aflw_r": (0, 1),
    "aflw": (0, 1),
    "300w": (36, 45),  # outer eye corners of the 68-point markup (0-based)
}


def _check(pred: Tensor, target: Tensor, visible: Tensor | None) -> Tensor:
    if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
        raise TypeError("pred and target must be tensors")
    if pred.shape != target.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(
            f"pred and target must both be (B, N, 2) (x, y) points, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if visible is None:
        return torch.ones(pred.shape[:2], dtype=torch.bool, device=pred.device)
    if visible.shape != pred.shape[:2]:
        raise ValueError(f"visible must be (B, N) = {tuple(pred.shape[:2])}, got {tuple(visible.shape)}")
    return visible.to(device=pred.device, dtype=torch.bool)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    if not bool(mask.any()):
        raise ValueError("no visible points to evaluate")
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum()


def _sizes(image_size: int | Sequence[int] | Tensor, batch: int, like: Tensor) -> Tensor:
    """``(B, 2)`` image ``(H, W)`` per image."""
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    sizes = torch.as_tensor(image_size, dtype=torch.float64, device=like.device)
    if sizes.shape == (2,):
        sizes = sizes.expand(batch, 2)
    if sizes.shape != (batch, 2):
        raise ValueError(f"image_size must be an int, (H, W) or a (B, 2) tensor of (H, W), got {tuple(sizes.shape)}")
    return sizes


def inter_ocular_error(
    pred: Tensor,
    target: Tensor,
    eye_indices: tuple[int, int] | str = (0, 1),
    visible: Tensor | None = None,
    *,
    reduction: str = "mean",
) -> Tensor:
    """Landmark error in percent of the inter-ocular distance (faces, Tables 2-5).

    ``100 · ‖pred_n − gt_n‖ / ‖gt_{e0} − gt_{e1}‖`` with the inter-ocular distance of each image's
    ground truth, averaged over images and landmarks (over visible ones when ``visible`` is given).

    Args:
        pred, target: ``(B, N, 2)`` points (pixels; the ratio is unit-free for square pixels).
        eye_indices: the two landmarks, or a dataset name of :data:`EYE_INDICES` (``"300w"`` -> (36, 45)).
        visible: optional ``(B, N)`` bool mask.
        reduction: ``"mean"`` (scalar) or ``"none"`` (``(B, N)``, NaN where invisible).
    """
    mask = _check(pred, target, visible)
    if isinstance(eye_indices, str):
        if eye_indices.lower() not in EYE_INDICES:
            raise ValueError(f"unknown dataset {eye_indices!r} for eye indices; known: {sorted(EYE_INDICES)}")
        eye_indices = EYE_INDICES[eye_indices.lower()]
    e0, e1 = eye_indices
    n = pred.shape[1]
    if not (-n <= e0 < n and -n <= e1 < n):
        raise ValueError(f"eye indices {eye_indices} out of range for {n} landmarks")
    pred64, target64 = pred.to(torch.float64), target.to(torch.float64)
    iod = (target64[:, e0] - target64[:, e1]).norm(dim=-1)  # (B,)
    if bool((iod <= 0).any()) or not bool(torch.isfinite(iod).all()):
        raise ValueError("inter-ocular distance is zero or not finite for some images")
    err = (pred64 - target64).norm(dim=-1) / iod[:, None] * 100
    if reduction == "none":
        return torch.where(mask, err, torch.full_like(err, float("nan")))
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return _masked_mean(err, mask)


def pck(
    pred: Tensor,
    target: Tensor,
    visible: Tensor | None = None,
    *,
    threshold: float | Tensor | None = None,
    image_size: int | Sequence[int] | Tensor | None = None,
    alpha: float = 0.05,
) -> Tensor:
    """Percentage of correct keypoints, as a **fraction** in ``[0, 1]``: ``correct / visible`` over the whole set.

    A visible point is correct when its pixel distance to the target is at most the threshold (``<=``; floating
    point, no truncation). The threshold is ``threshold`` pixels, or, given ``image_size`` instead, ``alpha`` ×
    the longer image side: the paper's PCK (CUB, Fig. 4). ``100 · pck`` is the percentage, for display.

    Args:
        pred, target: ``(B, N, 2)`` pixels (targets of invisible points may be NaN).
        visible: optional ``(B, N)`` bool.
        threshold: pixels, one for all images or ``(B,)`` one per image (e.g. a fraction of each animal's box).
        image_size: ``(H, W)`` shared by all images, or ``(B, 2)`` per image (instead of ``threshold``).
        alpha: the threshold's fraction of the longer image side, with ``image_size``.
    """
    mask = _check(pred, target, visible)
    if (threshold is None) == (image_size is None):
        raise ValueError("pck needs either a threshold in pixels or an image_size (alpha x its longer side)")
    batch = pred.shape[0]
    if threshold is None:
        limit = alpha * _sizes(image_size, batch, pred).max(dim=-1).values  # (B,)
    else:
        limit = torch.as_tensor(threshold, dtype=torch.float64, device=pred.device).expand(batch)
    dist = (pred.to(torch.float64) - target.to(torch.float64)).norm(dim=-1)
    return _masked_mean((dist <= limit[:, None]).to(torch.float64), mask)


def pck_legacy(
    pred: Tensor,
    target: Tensor,
    visible: Tensor | None = None,
    *,
    image_size: int | Sequence[int],
    alpha: float = 0.05,
    box_size: int = 48,
    batch_size: int | None = 32,
) -> Tensor:
    """**Legacy, for comparison only**: the reference's PCK (``metric.py``), including its bias; a fraction.

    Reproduces: points normalised with ``2x/(W−1) − 1`` and mapped to a ``box_size`` box
    (``[0, box_size − 1]``) per axis, so the threshold ``alpha · box_size`` is relative to each
    side, not the longer one; distances stored as **integers** (truncated, so ``< 2.4`` acts as
    ``< 3``); invisible ground truth and ground truth with a box coordinate ``≤ 0`` dropped;
    accuracy per part within each batch of ``batch_size`` images (parts without a visible point
    skipped), averaged over parts, then over batches weighted by their size. Inflates PCK by
    several points (reference-notes §5c); report :func:`pck` instead.

    Returns:
        PCK as a fraction in ``[0, 1]``, like :func:`pck` (the reference prints it times 100).
    """
    mask = _check(pred, target, visible)
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    scale = torch.tensor([(box_size - 1) / (width - 1), (box_size - 1) / (height - 1)], dtype=torch.float64)
    pred_box = pred.detach().cpu().to(torch.float64) * scale
    gt_box = target.detach().cpu().to(torch.float64) * scale
    mask = mask.cpu()
    gt_box = torch.where(mask.unsqueeze(-1), gt_box, torch.zeros_like(gt_box))  # invisible GT set to 0
    counted = (gt_box[..., 0] > 0) & (gt_box[..., 1] > 0)
    dist = (pred_box - gt_box).norm(dim=-1).trunc()  # the int32 array
    threshold = alpha * box_size
    batch = pred.shape[0]
    step = batch if batch_size is None else batch_size
    total, weight = 0.0, 0
    for start in range(0, batch, step):
        d, c = dist[start : start + step], counted[start : start + step]
        accs = [float((d[:, j][c[:, j]] < threshold).double().mean()) for j in range(d.shape[1]) if bool(c[:, j].any())]
        if accs:
            total += sum(accs) / len(accs) * d.shape[0]
            weight += d.shape[0]
    if weight == 0:
        raise ValueError("no visible points to evaluate")
    return torch.tensor(total / weight, dtype=torch.float64)


def matching_error(
    pred: Tensor,
    target: Tensor,
    image_size: int | Sequence[int],
    frame: float = 70.0,
    visible: Tensor | None = None,
    *,
    reduction: str = "mean",
) -> Tensor:
    """Mean landmark-matching error in pixels of the paper's 70-pixel frame (Table 1).

    Pixel offsets are rescaled per axis by ``frame / W`` and ``frame / H`` (DVE's
    ``err · 70 / (imwidth − 2·crop)`` for square images), then averaged over (visible) points.

    Args:
        pred, target: ``(B, N, 2)`` pixels in images of ``image_size = (H, W)``.
        frame: the canonical image side (70, DVE's small-network input size).
        visible: optional ``(B, N)`` bool.
        reduction: ``"mean"`` or ``"none"`` (``(B, N)``, NaN where invisible).
    """
    mask = _check(pred, target, visible)
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    scale = torch.tensor([frame / width, frame / height], dtype=torch.float64, device=pred.device)
    err = ((pred.to(torch.float64) - target.to(torch.float64)) * scale).norm(dim=-1)
    if reduction == "none":
        return torch.where(mask, err, torch.full_like(err, float("nan")))
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return _masked_mean(err, mask)


def mean_shape(keypoints: Tensor, visible: Tensor) -> Tensor:
    """The mean ``(N, 2)`` of ``(M, N, 2)`` keypoints over the samples where each point is visible, in the
    keypoints' own coordinates: pixels of images of one size (fit_regressor's baseline, ``RegressorFit.mean_shape``).

    Frames of different sizes share no pixel frame; for them :func:`~contrastive_landmarks.framing.mean_pose`
    averages in each frame's letterbox instead (units of its longer side, from its centre): finetune's baseline.
    """
    mask = visible.unsqueeze(-1).to(keypoints.dtype)
    total = torch.where(visible.unsqueeze(-1), keypoints, torch.zeros_like(keypoints)).sum(0)
    return total / mask.sum(0).clamp_min(1)


def mean_pixel_error(pred: Tensor, target: Tensor, visible: Tensor) -> float:
    """Mean Euclidean distance ``(M, N, 2)`` pred vs target over the ``(M, N)`` visible points (NaN when none)."""
    return float((pred - target).norm(dim=-1)[visible].mean()) if bool(visible.any()) else float("nan")


def resolve_metric(metric: str | Metric, eye_indices: Sequence[int] | None) -> tuple[str, Metric]:
    """``(name, f(pred_px, target_px, visible) -> error)``; ``"auto"`` is ``"iod"`` where the dataset names
    its eyes, else ``"pixel"``."""
    if callable(metric):
        return getattr(metric, "__name__", "custom"), metric
    if metric == "auto":
        metric = "iod" if eye_indices is not None else "pixel"
    if metric == "pixel":
        return "pixel", mean_pixel_error
    if metric == "iod":
        if eye_indices is None:
            raise ValueError("metric='iod' needs eye indices, and this dataset names no eyes; use metric='pixel'")
        eyes = (int(eye_indices[0]), int(eye_indices[1]))
        return "iod", lambda p, t, v: float(inter_ocular_error(p, t, eyes, v))
    raise ValueError(f"metric must be 'auto', 'pixel', 'iod' or a callable, got {metric!r}")


def point_spread(points: Tensor, visible: Tensor) -> Tensor:
    """How far the points move between images: the RMS distance of ``(B, N, 2)`` points from each landmark's mean
    over the images (visible ``(B, N)`` points only), a scalar in the points' units."""
    mask = visible.unsqueeze(-1).to(points.dtype)
    centre = (points * mask).sum(0) / mask.sum(0).clamp_min(1)
    return ((((points - centre) ** 2) * mask).sum() / mask.sum().clamp_min(1)).sqrt()


def spread_ratio(pred: Tensor, truth: Tensor, visible: Tensor) -> float:
    """:func:`point_spread` of the predictions over the truth's (visible points only)."""
    return float(point_spread(pred, visible) / point_spread(truth, visible).clamp_min(1e-6))
