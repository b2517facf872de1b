"""Fit a :class:`~contrastive_landmarks.LandmarkRegressor` on a frozen backbone: the library's one fitting loop.

Every regressor in the library comes from :func:`fit_regressor`: the ``fit-regressor`` command, the
evaluation protocols (:mod:`contrastive_landmarks.evaluation`), the few-shot curves and the built-in
bundle. Its defaults were chosen on validation data (``docs/benchmarks.md``, "regressor recipe"):

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

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..coords import normalized_to_pixels, pixels_to_normalized
from ..data.base import KeypointSubset
from ..hypercolumn import Hypercolumn
from ..metrics import Metric, mean_shape, resolve_metric
from ..ops import project_stages
from ..regressor import LandmarkRegressor, regression_loss
from .features import StageMapBank, check_dataset, collate, eval_mode, index_batches, module_device, regressor_maps
from .regressor_report import RegressorFit, diagnose, report
from .regressor_views import Augment

__all__ = [
    "Augment",
    "RegressorFit",
    "default_heatmaps",
    "diagnose",
    "fit_regressor",
    "mean_shape",
    "predict",
    "resolve_metric",
]


def default_heatmaps(num_landmarks: int, budget: int = 128) -> int:
    """``K`` for ``N`` landmarks: about ``budget`` heatmaps in all, between 2 and 10 per landmark.

    A training step costs about linearly in ``N·K`` (``benchmarks/bench_regressor.py``: 28 ms for 5 x 10 and
    620 ms for 68 x 10 heatmaps on ResNet-18 stage maps at a 32² grid, batch 32, one thread), so 68 points get
    ``K = 2`` and a fit stays within minutes; 5-point faces keep 10 (as good as the paper's 50 on validation).
    """
    return int(min(10, max(2, round(budget / max(1, num_landmarks)))))


def _auto_split(n: int, seed: int) -> tuple[list[int], list[int]]:
    if n < 10:
        return list(range(n)), []
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    count = min(max(1, round(0.1 * n)), 1000)
    return sorted(order[count:]), sorted(order[:count])


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
    augment: Augment | None = None,
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

    The steps, each a function of this module: :func:`build_views` (the frozen backbone once per view),
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
        augment: the per-view augmentation (default :class:`Augment`; ``Augment.none()`` for none).
        copies: views per training image (default: enough for ``min(max_views, steps · batch_size)``
            views, one without augmentation).
        standardize: standardise each channel with training-view statistics (folded into the filters).
        metric: ``"auto"``, ``"iod"``, ``"pixel"`` or ``f(pred_px, target_px, visible) -> error``.
        eye_indices, flip_pairs: default: the dataset's ``eye_indices`` / ``flip_pairs`` attributes.
        eval_every, patience: validation every ``eval_every`` steps (default ``steps // 40``, at least 25);
            stop after ``patience`` evaluations without a better error, once half the steps have run.
        seed: seeds the split, the views, the init and the batches (same seed, same regressor).
        device: where to train (default: the features' device).
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
    augment = Augment() if augment is None else augment
    if val is None:
        train_idx, val_idx = _auto_split(len(train), seed)
        train, val = KeypointSubset(train, train_idx), (KeypointSubset(train, val_idx) if val_idx else None)
    device = module_device(features, device)
    features.to(device)
    generator = torch.Generator().manual_seed(seed)  # then draws, in order: the views, the init, the batches
    if copies is None:
        copies = max(1, min(max_views, steps * batch_size) // len(train))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(train) * copies + steps, desc="fit_regressor", unit="it", mininterval=5.0)
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


@dataclass
class Views:
    """The stage maps :func:`fit_regressor` trains and selects on (:func:`build_views`).

    Attributes:
        train: ``copies`` views of every training image (the first pass unaugmented, so ``train[:n_train]``
            are the images as they are); ``val``: one view of every validation image, or ``None``.
        n_train: training images; ``image_size``: their ``(H, W)``; ``grid``: the regressor's ``(S_h, S_w)``.
    """

    train: StageMapBank
    val: StageMapBank | None
    n_train: int
    image_size: tuple[int, int]
    grid: tuple[int, int]

    @property
    def check(self) -> StageMapBank:
        """The views a fit is scored on: validation, else the training views."""
        return self.val if self.val is not None else self.train


def build_views(
    features: Hypercolumn,
    train: Any,
    val: Any | None,
    copies: int,
    augment: Augment,
    flip_pairs: Sequence[Sequence[int]] | None,
    generator: torch.Generator,
    device: torch.device,
    bar=None,
) -> Views:
    """Run the frozen ``features`` once per view (:func:`~.features.regressor_maps`), augmenting with ``generator``."""
    bank = StageMapBank.build(
        lambda x: regressor_maps(features, x),
        train,
        copies=copies,
        batch_size=64,
        device=device,
        augment=lambda i, k, v: augment(i, k, v, flip_pairs, generator),
        augment_first=False,
        bar=bar,
    )
    val_bank = (
        StageMapBank.build(lambda x: regressor_maps(features, x), val, copies=1, batch_size=64, device=device)
        if val is not None
        else None
    )
    size = bank.image_size
    return Views(bank, val_bank, len(train), size, features.size or (size[0] // 2, size[1] // 2))


class Head:
    """A regressor on stage maps (or a frozen projector's output), with the channel standardisation.

    ``mean`` and ``std`` (per map, ``None`` without standardisation) standardise the regressor's input while
    training; :meth:`fold` then divides them into its filters, so that the returned regressor runs on raw
    features (the mean only shifts each heatmap by a constant, which the spatial softmax ignores).
    """

    def __init__(self, regressor: LandmarkRegressor, projector, grid, mean, std) -> None:
        self.regressor, self.projector, self.grid, self.mean, self.std = regressor, projector, grid, mean, std
        self.composed = projector is not None and getattr(projector, "mode", None) == "linear"

    def heatmaps(self, maps: list[Tensor]) -> Tensor:
        """``(B, N·K, S_h, S_w)`` heatmaps of a batch of views' maps."""
        # standardising, upsampling and 1x1 filters are linear: fold the scaling into the filters and
        # project the stage maps, never building the hypercolumn
        regressor, std, grid = self.regressor, self.std, self.grid
        if self.projector is None:
            weight = regressor.weight if std is None else regressor.weight / torch.cat(std).view(1, -1)
            return project_stages(maps, weight, None, grid)
        if self.composed:  # a linear projector, then linear filters: one linear map of the stage maps
            weight = regressor.weight if std is None else regressor.weight / std[0].view(1, -1)
            return project_stages(maps, weight @ self.projector.weight.to(weight), None, grid)
        x = self.projector(maps, grid)
        if self.mean is not None:
            x = (x - self.mean[0].view(1, -1, 1, 1)) / std[0].view(1, -1, 1, 1)
        return regressor.heatmaps(x, grid)

    @torch.no_grad()
    def fold(self) -> LandmarkRegressor:
        """The regressor on raw features (the standardisation divided into its filters), in eval mode."""
        if self.std is not None:
            self.regressor.weight.div_(torch.cat(self.std).to(self.regressor.weight))
        return self.regressor.eval()


def init_head(
    views: Views,
    projector: torch.nn.Module | None,
    *,
    heatmaps_per_landmark: int | None,
    init: str,
    softmax_multiplier: float | None,
    standardize: bool,
    generator: torch.Generator,
    device: torch.device,
) -> Head:
    """A fresh regressor (filters drawn from ``generator``) and the training views' channel statistics."""
    bank, grid = views.train, views.grid
    if projector is not None:
        projector.requires_grad_(False)
    mean = std = None
    if standardize:  # of the stage maps, or of the projector's output on up to 512 views
        if projector is None:
            mean, std = bank.channel_stats()
        else:
            mean, std = bank.channel_stats(transform=lambda maps: projector(maps, grid), limit=512)
    regressor = LandmarkRegressor(
        projector.dim if projector is not None else bank.channels,
        bank.num_landmarks,
        heatmaps_per_landmark or default_heatmaps(bank.num_landmarks),
        init=init,
        softmax_multiplier=softmax_multiplier,
        size=grid,
    )
    regressor.reset_parameters(generator)
    regressor.to(device)
    return Head(regressor, projector, grid, mean, std)


@torch.no_grad()
def evaluate(head: Head, views: Views, score_fn, limit: int | None = None) -> tuple[float, float, Tensor]:
    """``(error, mean peakiness, predicted pixels)`` on the first ``limit`` of :attr:`Views.check`."""
    check, preds, peaks = views.check, [], []
    for idx in index_batches(len(check) if limit is None else min(limit, len(check)), 256):
        heat = head.heatmaps(check.take(idx)[0])
        preds.append(normalized_to_pixels(head.regressor.decode(heat), views.image_size).cpu())
        peaks.append(head.regressor.heatmap_peakiness(heat).cpu())
    pred = torch.cat(preds)
    n = pred.shape[0]
    return score_fn(pred, check.keypoints[:n].cpu(), check.visible[:n].cpu()), float(torch.cat(peaks).mean()), pred


@dataclass
class Schedule:
    """The optimiser loop's options: Adam, cosine over ``steps``, validation every ``eval_every`` steps."""

    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    betas: tuple[float, float]
    eval_every: int
    patience: int


@dataclass
class Run:
    """What :func:`train_head` did: ``history`` (one dict per evaluation), the selected ``best_step``, the
    ``steps_run``, the peakiness at the start (on up to 256 views) and the selected state's ``score``,
    ``peakiness_final`` and predicted pixels ``pred`` on all of :attr:`Views.check`."""

    history: list[dict[str, float]]
    best_step: int
    steps_run: int
    peakiness_init: float
    score: float
    peakiness_final: float
    pred: Tensor


def train_head(head: Head, views: Views, score_fn, schedule: Schedule, generator: torch.Generator, bar=None) -> Run:
    """Adam on the regressor, batches drawn with ``generator``; keeps the state with the best validation error.

    Stops early after ``patience`` evaluations without a better error (by 0.1 %), once half the steps have run;
    without validation data the last state is kept.
    """
    regressor, bank, size, s = head.regressor, views.train, views.image_size, schedule
    _, peak_init, _ = evaluate(head, views, score_fn, limit=256)
    optimizer = torch.optim.Adam(regressor.parameters(), lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=s.steps, eta_min=s.lr * 1e-2)
    history: list[dict[str, float]] = []
    best = (math.inf, 0, copy.deepcopy(regressor.state_dict()))
    since_best, running, step = 0, 0.0, 0
    order = torch.empty(0, dtype=torch.long)
    for step in range(1, s.steps + 1):
        if order.numel() < s.batch_size:
            order = torch.cat([order, torch.randperm(len(bank), generator=generator)])
        idx, order = order[: s.batch_size], order[s.batch_size :]
        maps, kp, vis = bank.take(idx)
        loss = regression_loss(regressor.decode(head.heatmaps(maps)), pixels_to_normalized(kp, size), vis)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        cosine.step()
        running += float(loss.detach())
        if bar is not None:
            bar.update(1)
        if step % s.eval_every != 0 and step != s.steps:
            continue
        error, _, _ = evaluate(head, views, score_fn)
        lr = optimizer.param_groups[0]["lr"]
        history.append({"step": step, "lr": lr, "train_loss": running / s.eval_every, "val_error": error})
        running = 0.0
        if error < best[0] * (1 - 1e-3):
            best, since_best = (error, step, copy.deepcopy(regressor.state_dict())), 0
        else:
            since_best += 1
        if bar is not None:
            bar.set_postfix(val=f"{error:.4g}", best=f"{best[0]:.4g}", refresh=False)
        if views.val is not None and since_best >= s.patience and step >= s.steps // 2:
            break  # not before the cosine has reached its second half, where late low-lr steps still help
    if bar is not None:
        bar.close()
    if views.val is not None:
        regressor.load_state_dict(best[2])
    score, peak_final, pred = evaluate(head, views, score_fn)
    return Run(history, best[1] if views.val is not None else step, step, peak_init, score, peak_final, pred)


@torch.no_grad()
def predict(
    features: Hypercolumn,
    regressor: LandmarkRegressor,
    data: Any,
    *,
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Pixel predictions ``(M, N, 2)`` for a dataset, a list of sample dicts or ``(M, 3, H, W)`` images in [0, 1]."""
    device = module_device(features, device)
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
            size = tuple(images.shape[-2:])
            grid = regressor.size
            out.append(regressor.predict_pixels(regressor_maps(features, images), size, grid).cpu())
    return torch.cat(out)
