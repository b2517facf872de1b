"""Fit a :class:`~contrastive_landmarks.LandmarkRegressor` on a frozen backbone: the library's one fitting loop.

Every regressor in the library comes from :func:`fit_regressor`: the ``fit-regressor`` command, the
evaluation protocols (:mod:`contrastive_landmarks.evaluation`), the few-shot curves and the built-in
bundle. Its defaults were chosen on validation data (``docs/notes/2026-12-benchmarks.md``, "Landmark regression:
the recipe, the baseline, the numbers"):

- **views**: each training image is shown ``copies`` times, each view with a fresh random augmentation
  (the dataset's own random transform, if any, then a small affine/TPS warp and, where the dataset
  names left/right pairs, a horizontal flip that swaps them). The frozen backbone runs once per view;
  its stage maps are kept in memory (:class:`~contrastive_landmarks.train.features.StageMapBank`) and
  the regressor trains on them for ``steps`` optimiser steps, never building the hypercolumn.
- **features**: every channel standardised with training-view statistics (folded into the returned
  filters, so the regressor runs on raw features), the regressor's ``"soft"`` start (a soft spatial
  softmax from the first step), ``K = 10`` heatmaps per landmark (fewer for many landmarks,
  :func:`default_heatmaps`) on a grid of half the input size.
- **optimiser**: Adam, lr 1e-2, weight decay 1e-4, cosine over the steps, smooth-L1 on ``10 ×``
  normalised coordinates (the authors' loss).
- **selection**: the validation error (the dataset's metric: inter-ocular error where it names eyes,
  else mean pixel error) every ``eval_every`` steps; the best state is kept and training stops early
  after ``patience`` evaluations without improvement.
- **baseline**: the training set's mean shape is scored on the same validation split; the result
  holds both and a warning says so when the model is not clearly better, or when the validation error
  was still falling at the last step (too few steps).

The paper's own protocol (``init="paper"``, lr 1e-3, wd 5e-4, 50 heatmaps, ~1000 samples an epoch,
hundreds of epochs) is reachable through the options.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..data.base import KeypointSubset
from ..device import resolve_device
from ..hypercolumn import Hypercolumn
from ..metrics import Metric, resolve_metric
from ..regression import regress
from ..regressor import LandmarkRegressor
from ._loop import holdout_split, progress_bar
from .features import check_dataset, collate, eval_mode, index_batches, module_device
from .keypoint_views import ViewAugment
from .regressor_report import RegressorFit, diagnose, report
from .regressor_training import Schedule, build_views, default_heatmaps, init_head, train_head, view_augment

__all__ = ["RegressorFit", "default_heatmaps", "diagnose", "fit_regressor", "predict"]


def fit_regressor(
    features: Hypercolumn,
    train: Any,
    val: Any | None = None,
    *,
    projector: torch.nn.Module | None = None,
    heatmaps_per_landmark: int | None = None,
    init: str = "soft",
    softmax_multiplier: float | None = None,
    steps: int = 2000,
    batch_size: int = 32,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    betas: tuple[float, float] = (0.9, 0.999),
    augment: ViewAugment | None = None,
    copies: int | None = None,
    max_views: int = 6000,
    standardize: bool = True,
    metric: str | Metric = "auto",
    eye_indices: Sequence[int] | None = None,
    flip_pairs: Sequence[Sequence[int]] | None = None,
    eval_every: int | None = None,
    patience: int = 8,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    warn: bool = True,
) -> RegressorFit:
    """Train a landmark regressor on frozen features and select it on validation data.

    The steps, each a function of :mod:`.regressor_training`: :func:`build_views` (the frozen backbone once per view),
    :func:`init_head` (the regressor and the standardisation), :func:`train_head` (the optimiser loop with
    selection on validation), :func:`report` (the mean-shape baseline, the warnings and the result).

    Args:
        features: the frozen :class:`~contrastive_landmarks.Hypercolumn` (its ``size`` is the grid;
            ``None`` means half the input size).
        train: labelled samples (dicts with ``image`` ``(3, H, W)`` in ``[0, 1]``, ``keypoints``
            ``(N, 2)`` pixels, ``visible`` ``(N,)``), all of one size. A random dataset transform (e.g.
            jittered face crops) gives every view its own draw.
        val: validation samples (never the test set). ``None``: 10 % of ``train`` (at most 1000), split
            with ``seed``; below 10 images there is no validation and the last step is kept.
        projector: an optional frozen :class:`~contrastive_landmarks.SpatialProjector`; the regressor then
            learns on its ``d``-dimensional output.
        heatmaps_per_landmark, init, softmax_multiplier: the regressor (``K``; ``"soft"`` or ``"paper"``).
            ``K`` defaults to :func:`default_heatmaps`: 10 for up to 12 landmarks, fewer for many (2 for 68).
        steps, batch_size, lr, weight_decay, betas: Adam with a cosine schedule to ``lr · 1e-2`` over ``steps``.
        augment: the per-view augmentation (default :class:`Augment`, i.e. ``ViewAugment.frozen()``: warps and
            flips; ``Augment.none()`` for none). The views are whole images, so it cannot crop
            (:attr:`~.keypoint_views.ViewAugment.crops`); its photometry, if any, runs after the warp.
        copies: views per training image (default: enough for ``min(max_views, steps · batch_size)``
            views, one without augmentation).
        standardize: standardise each channel with training-view statistics (folded into the filters).
        metric: ``"auto"``, ``"iod"``, ``"pixel"`` or ``f(pred_px, target_px, visible) -> error``.
        eye_indices, flip_pairs: default: the dataset's ``eye_indices`` / ``flip_pairs`` attributes.
        eval_every, patience: validation every ``eval_every`` steps (default ``steps // 40``, at least 25);
            stop after ``patience`` evaluations without a better error, once half the steps have run.
        seed: seeds the split, the views, the init and the batches (same seed, same regressor).
        device: where to train (default: the features' device; ``"auto"``: the GPU when there is one); a
            name torch does not know or a GPU this machine lacks is refused
            (:func:`~contrastive_landmarks.device.resolve_device`).
        progress: a tqdm bar (``train`` extra). ``warn``: issue the result's warnings as ``UserWarning``.
    """
    if steps < 1 or batch_size < 1 or max_views < 1:
        raise ValueError(f"steps, batch_size and max_views must be positive, got {steps}, {batch_size} and {max_views}")
    check_dataset(train, "train")
    if val is not None:
        check_dataset(val, "val")
    eye_indices = eye_indices if eye_indices is not None else getattr(train, "eye_indices", None)
    flip_pairs = flip_pairs if flip_pairs is not None else getattr(train, "flip_pairs", None)
    metric_name, score_fn = resolve_metric(metric, eye_indices)
    augment = view_augment(augment)
    if val is None:
        train, val = _validation_split(train, seed)
    device = module_device(features, None if device is None else resolve_device(device))
    features.to(device)
    generator = torch.Generator().manual_seed(seed)  # then draws, in order: the views, the init, the batches
    if copies is None:
        copies = max(1, min(max_views, steps * batch_size) // len(train))
    bar = progress_bar(progress, len(train) * copies + steps, "fit_regressor", "it", mininterval=5.0)
    schedule = Schedule(steps, batch_size, lr, weight_decay, betas, eval_every or max(25, steps // 40), patience)
    with eval_mode(features), eval_mode(projector):
        views = build_views(features, train, val, copies, augment, flip_pairs, generator, device, bar)
        head = init_head(
            views,
            projector,
            heatmaps_per_landmark=heatmaps_per_landmark,
            init=init,
            softmax_multiplier=softmax_multiplier,
            standardize=standardize,
            generator=generator,
            device=device,
        )
        run = train_head(head, views, score_fn, schedule, generator, bar)
    options = {"init": init, "copies": copies, "augment": augment, "standardize": standardize, "seed": seed}
    options.update(eye_indices=eye_indices, flip_pairs=flip_pairs)
    return report(head, views, run, metric_name, score_fn, schedule, options, warn)


def _validation_split(train: Any, seed: int) -> tuple[KeypointSubset, KeypointSubset | None]:
    """``(train, val)`` when no validation set is given: 10 % of ``train`` (at most 1000), split with ``seed``; no
    validation below 10 images."""
    train_idx, val_idx = holdout_split(len(train), 0.1, seed, min_count=1, max_count=1000, min_n=10)
    return KeypointSubset(train, train_idx), (KeypointSubset(train, val_idx) if val_idx else None)


@torch.no_grad()
def predict(
    features: Hypercolumn,
    regressor: LandmarkRegressor,
    data: Any,
    *,
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Pixel predictions ``(M, N, 2)`` for a dataset, a list of sample dicts or ``(M, 3, H, W)`` images in [0, 1].

    The regressor runs as :meth:`~contrastive_landmarks.LandmarkModel.detect` runs it
    (:func:`~contrastive_landmarks.regression.regress`), on the images as they are, on its own grid.
    """
    device = module_device(features, None if device is None else resolve_device(device))
    features.to(device)
    regressor.to(device)
    out = []
    with eval_mode(features), eval_mode(regressor):
        if isinstance(data, Tensor):
            if data.ndim != 4:
                raise ValueError(f"images must be (M, 3, H, W), got {tuple(data.shape)}")
            batches = (data[idx] for idx in index_batches(data.shape[0], batch_size))
        else:
            batches = (
                collate(data, idx.tolist(), labels=False)["image"] for idx in index_batches(len(data), batch_size)
            )
        for images in batches:
            images = images.to(device, torch.float32)
            out.append(regress(features, regressor, images, size=regressor.size).points.cpu())
    return torch.cat(out)
