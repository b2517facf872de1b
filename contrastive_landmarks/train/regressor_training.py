"""The parts of :func:`~contrastive_landmarks.train.fit_regressor`'s loop: the views it trains on, the head it
trains, the optimiser loop and what the loop did.

- :func:`build_views`: the frozen backbone run once per (augmented) view, its stage maps kept (:class:`Views`);
  :func:`view_augment` its augmentation (whole images: one that crops is refused);
- :func:`init_head`: a fresh regressor and the channel standardisation (:class:`Head`), :func:`default_heatmaps`
  its ``K``;
- :func:`train_head`: Adam with a cosine over the steps, selection on validation with patience
  (:class:`~._loop.BestState`), returning :class:`Run`; :func:`evaluate` scores a head on the check views.

Training and validation read landmarks off the heatmaps with the regressor's own
:meth:`~contrastive_landmarks.LandmarkRegressor.decode`, the decoding that prediction runs too
(:func:`~contrastive_landmarks.regression.regress`); a :class:`Head`'s heatmaps are its regressor's on the
standardised maps, which :meth:`Head.fold` makes the returned regressor's on raw ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..coords import normalized_to_pixels, pixels_to_normalized
from ..hypercolumn import Hypercolumn
from ..ops import project_stages
from ..regressor import LandmarkRegressor, regression_loss
from ._loop import BestState, warmup_cosine
from .features import StageMapBank, index_batches, regressor_maps
from .keypoint_views import Augment, ViewAugment

__all__ = [
    "Head",
    "Run",
    "Schedule",
    "Views",
    "build_views",
    "default_heatmaps",
    "evaluate",
    "init_head",
    "train_head",
    "view_augment",
]


def default_heatmaps(num_landmarks: int, budget: int = 128) -> int:
    """``K`` for ``N`` landmarks: about ``budget`` heatmaps in all, between 2 and 10 per landmark.

    A training step costs about linearly in ``N·K`` (``benchmarks/bench_regressor.py``: 28 ms for 5 x 10 and
    620 ms for 68 x 10 heatmaps on ResNet-18 stage maps at a 32² grid, batch 32, one thread), so 68 points get
    ``K = 2`` and a fit stays within minutes; 5-point faces keep 10 (as good as the paper's 50 on validation).
    """
    return int(min(10, max(2, round(budget / max(1, num_landmarks)))))


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


def view_augment(augment: ViewAugment | None) -> ViewAugment:
    """The augmentation of :func:`build_views`: ``augment``, default :class:`~.keypoint_views.Augment` (warps and
    flips); refused if it crops, since the views are whole images."""
    augment = Augment() if augment is None else augment
    if augment.crops:
        raise ValueError(
            "fit_regressor's views are whole images, not crops: its augment needs scale, rotation and translation 0 "
            f"(its geometry is the warp, as in ViewAugment.frozen()), got {augment}"
        )
    return augment


def build_views(
    features: Hypercolumn,
    train: Any,
    val: Any | None,
    copies: int,
    augment: ViewAugment,
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
    cosine = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: warmup_cosine(i, s.steps, floor=1e-2))
    history: list[dict[str, float]] = []
    best = BestState(regressor, patience=s.patience, min_improvement=1e-3)
    running, step = 0.0, 0
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
        best.update(error, step, regressor)
        if bar is not None:
            bar.set_postfix(val=f"{error:.4g}", best=f"{best.score:.4g}", refresh=False)
        if views.val is not None and best.stale and step >= s.steps // 2:
            break  # not before the cosine has reached its second half, where late low-lr steps still help
    if bar is not None:
        bar.close()
    if views.val is not None:
        regressor.load_state_dict(best.state)
    score, peak_final, pred = evaluate(head, views, score_fn)
    return Run(history, best.step if views.val is not None else step, step, peak_init, score, peak_final, pred)
