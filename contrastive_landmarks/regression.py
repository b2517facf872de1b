"""What a fitted landmark regressor computes on a batch, and the confidences read off it.

- :func:`regress`: the library's one way to run a fitted regressor on images (``[0, 1]`` images -> stage maps
  -> what a head reads -> the projector, if any -> heatmaps -> :meth:`LandmarkRegressor.decode_steps`), giving a
  :class:`Regression`. ``LandmarkModel.detect``, the evaluation protocols and
  :func:`~contrastive_landmarks.train.regressor_fitting.predict` all run it.
- :func:`landmark_scores`: each landmark's confidence, read off a :class:`Regression`'s heatmaps.

:mod:`contrastive_landmarks.pipeline` (:class:`~contrastive_landmarks.LandmarkModel`) re-exports the three.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .backbone import _autocast_enabled
from .coords import normalized_to_pixels
from .hypercolumn import head_maps
from .regressor import LandmarkRegressor

__all__ = ["SCORE_MULTIPLIER", "SCORE_RADIUS", "SCORE_SPREAD", "Regression", "landmark_scores", "regress"]


class Regression(NamedTuple):
    """The regressor's intermediate results on a batch (:meth:`~contrastive_landmarks.LandmarkModel.regression`).

    Attributes:
        points: ``(B, N, 2)`` landmarks, pixels of each input image (what ``LandmarkModel.detect`` returns).
        normalized: ``(B, N, 2)`` the same landmarks in the normalised frame (:mod:`~contrastive_landmarks.coords`).
        intermediate: ``(B, N, K, 2)`` each heatmap's soft-argmax point, normalised frame.
        heatmaps: ``(B, N, K, S_h, S_w)`` the heatmap logits (before the softmax multiplier).
        probs: ``(B, N, K, S_h, S_w)`` each heatmap's spatial softmax (after it).
        scores: ``(B, N)`` :func:`landmark_scores` when a step has computed them already (else ``None``).
    """

    points: Tensor
    normalized: Tensor
    intermediate: Tensor
    heatmaps: Tensor
    probs: Tensor
    scores: Tensor | None = None


def regress(
    features: nn.Module,
    regressor: LandmarkRegressor,
    images: Tensor,
    *,
    projector: nn.Module | None = None,
    size: tuple[int, int] | None = None,
    to_pixels: Callable[[Tensor], Tensor] | None = None,
) -> Regression:
    """Run a fitted regressor on a batch: the library's one way from images to a regressor's landmarks.

    :meth:`~contrastive_landmarks.LandmarkModel.detect` (through ``LandmarkModel.regression``), the evaluation
    protocols (:func:`~contrastive_landmarks.evaluation.predict_dataset`) and
    :func:`~contrastive_landmarks.train.regressor_fitting.predict` all run this, so a regressor predicts the
    same wherever it runs. The steps: the stage maps of the ``[0, 1]`` images, what a head reads of them
    (:func:`~contrastive_landmarks.hypercolumn.head_maps`, the same as fitting reads), the projector if the
    regressor was fitted on its output, the heatmaps, and :meth:`LandmarkRegressor.decode_steps`.

    Under an active autocast (a caller's ``torch.autocast``) only the backbone runs in the lower precision: the
    heads run in float32, as finetune trains them (a soft-argmax in bfloat16 is off by pixels).

    Args:
        features: a :class:`~contrastive_landmarks.Hypercolumn`, or anything with its ``image_stage_maps``,
            ``output_size`` and ``normalize`` (:class:`~contrastive_landmarks.evaluation.StageSubset`).
        regressor: the fitted :class:`~contrastive_landmarks.LandmarkRegressor`.
        images: ``(B, 3, H, W)`` images in ``[0, 1]``, already checked and at the size the features take
            (``LandmarkModel.detect`` checks and resizes them; this runs them as they are).
        projector: the frozen projector whose output the regressor reads, or ``None`` (it reads the features).
        size: the heads' grid ``(S_h, S_w)`` (default: ``features.output_size(images)``).
        to_pixels: maps the ``(B, N, 2)`` normalised landmarks to the returned ``points`` (default: pixels
            of ``images``).

    Returns:
        a :class:`Regression`.
    """
    grid = features.output_size(images)
    size = grid if size is None else size
    stage_maps = features.image_stage_maps(images)
    mixed = _autocast_enabled(images.device.type)
    if mixed:
        stage_maps = [m.float() for m in stage_maps]
    with torch.autocast(images.device.type, enabled=False) if mixed else nullcontext():
        maps = head_maps(stage_maps, grid, normalize=features.normalize)
        heatmaps = regressor.heatmaps(maps if projector is None else projector(maps, size=size), size)
        normalized, intermediate, probs = regressor.decode_steps(heatmaps)
    points = normalized_to_pixels(normalized, tuple(images.shape[-2:])) if to_pixels is None else to_pixels(normalized)
    grid_shape = (*intermediate.shape[:3], *heatmaps.shape[-2:])
    return Regression(points, normalized, intermediate, heatmaps.reshape(grid_shape), probs.reshape(grid_shape))


#: Inverse temperature of the softmax the scores read the heatmaps at (not the regressor's own multiplier,
#: which for the built-in regressor, 100, is a hard argmax on every image, faces or not).
SCORE_MULTIPLIER = 0.5
#: Cells (Chebyshev distance) around a heatmap's peak whose probability counts as "at the peak": a 7x7 window.
SCORE_RADIUS = 3
#: Spread of a landmark's ``K`` soft-argmax points (RMS distance from their mean, normalised units: the
#: image's half width is 1) that divides the agreement term, ``exp(-spread / SCORE_SPREAD)``; 0.75 is 24
#: pixels of a 64-pixel input.
SCORE_SPREAD = 0.75


def landmark_scores(regression: Regression) -> Tensor:
    """Per-landmark confidence ``(B, N)`` in ``[0, 1]``, read off the regressor's heatmaps.

    ``score = focus · agreement``:

    - ``focus``: each of the landmark's ``K`` heatmaps, as a softmax at :data:`SCORE_MULTIPLIER`, puts
      this much probability within :data:`SCORE_RADIUS` cells of its peak; mean over ``K``;
    - ``agreement``: ``exp(-spread / SCORE_SPREAD)``, ``spread`` the RMS distance of the ``K``
      soft-argmax points (those :meth:`~contrastive_landmarks.LandmarkModel.detect` combines) from their mean.

    Chosen by ``benchmarks/bench_scores.py`` among peakiness, point agreement, mass near the predicted
    point and others (``docs/notes/2026-12-benchmarks.md``, "Landmark confidence scores"): it separates real
    faces from noise, blank and patch-shuffled images best. The scale is relative: compare scores of one model
    (faces score about 1.5x the negatives' level on ``resnet18-faces``), not an absolute probability.
    """
    if regression.scores is not None:  # computed once per pass (pose relations read them first)
        return regression.scores
    logits = regression.heatmaps.flatten(-2).float() * SCORE_MULTIPLIER  # (B, N, K, h*w)
    h, w = regression.heatmaps.shape[-2:]
    top, peak = logits.max(-1)  # (B, N, K)
    total = torch.exp(logits - top[..., None]).sum(-1)  # the softmax's denominator, over the peak's exp
    # the window's cells gathered (a (2r+1)^2 index per heatmap), not a mask over every cell: a fifth of the time
    offsets = torch.arange(-SCORE_RADIUS, SCORE_RADIUS + 1, device=logits.device)
    rows, cols = (peak // w)[..., None] + offsets, (peak % w)[..., None] + offsets  # (B, N, K, 2r+1)
    inside = (((rows >= 0) & (rows < h))[..., :, None] & ((cols >= 0) & (cols < w))[..., None, :]).flatten(-2)
    index = (rows.clamp(0, h - 1)[..., :, None] * w + cols.clamp(0, w - 1)[..., None, :]).flatten(-2)
    near = torch.exp(logits.gather(-1, index) - top[..., None]) * inside
    focus = (near.sum(-1) / total).mean(-1)
    points = regression.intermediate.float()  # (B, N, K, 2)
    spread = (points - points.mean(-2, keepdim=True)).pow(2).sum(-1).mean(-1).sqrt()
    return (focus * torch.exp(-spread / SCORE_SPREAD)).clamp(0, 1)
