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
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..coords import normalized_to_pixels, pixels_to_normalized
from ..data.base import KeypointSubset
from ..hypercolumn import Hypercolumn
from ..metrics import Metric, mean_shape, resolve_metric, spread_ratio
from ..ops import project_stages
from ..regressor import LandmarkRegressor, regression_loss
from .features import StageMapBank, check_dataset, collate, eval_mode, index_batches, module_device, regressor_maps
from .view_augment import Augment

__all__ = ["Augment", "RegressorFit", "default_heatmaps", "fit_regressor", "mean_shape", "predict", "resolve_metric"]


@dataclass
class RegressorFit:
    """What :func:`fit_regressor` returns.

    Attributes:
        regressor: the selected regressor (lowest validation error), on raw features, in eval mode.
        metric: the error's name (``"iod"``: inter-ocular error in %, ``"pixel"``: mean pixel distance).
        score: its validation error (training error when there was no validation data).
        baseline: the training set's mean shape scored the same way on the same images.
        mean_shape: that mean shape, ``(N, 2)`` pixels (of the training images, without the augmentation).
        best_step: the optimiser step of the selected state; ``steps``: steps run (early stopping may end sooner).
        history: one dict per evaluation: ``step``, ``lr``, ``train_loss``, ``val_error``.
        peakiness_init, peakiness_final: mean peak probability of the spatial softmax on validation
            views at initialisation and for the selected state (:meth:`LandmarkRegressor.peakiness`).
        spread: how far the predictions move between images relative to the truth (the ratio of their
            spreads about each landmark's mean); near 0 means the regressor predicts one layout for all.
        warnings: plain-words problems (not clearly better than the mean shape; still improving at the end).
        config: every option used, for reports.
    """

    regressor: LandmarkRegressor
    metric: str
    score: float
    baseline: float
    mean_shape: Tensor
    best_step: int
    steps: int
    history: list[dict[str, float]]
    peakiness_init: float
    peakiness_final: float
    spread: float
    warnings: list[str]
    config: dict[str, Any]

    @property
    def improvement(self) -> float:
        """``1 - score / baseline``: the fraction of the mean-shape error the regressor removes."""
        return 1.0 - self.score / self.baseline if self.baseline > 0 else float("nan")


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
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
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
    generator = torch.Generator().manual_seed(seed)
    n_train = len(train)
    if copies is None:
        copies = max(1, min(max_views, steps * batch_size) // n_train)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_train * copies + steps, desc="fit_regressor", unit="it", mininterval=5.0)

    with eval_mode(features), eval_mode(projector):
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
        image_size = bank.image_size
        grid = features.size or (image_size[0] // 2, image_size[1] // 2)

        def raw_input(maps: list[Tensor]) -> list[Tensor] | Tensor:
            return maps if projector is None else projector(maps, grid)

        mean = std = None
        if standardize:
            # of the stage maps, or of the projector's output on up to 512 views
            mean, std = (
                bank.channel_stats() if projector is None else bank.channel_stats(transform=raw_input, limit=512)
            )

        def head_input(maps: list[Tensor]) -> list[Tensor] | Tensor:
            x = raw_input(maps)
            if mean is None:
                return x
            if isinstance(x, Tensor):
                return (x - mean[0].view(1, -1, 1, 1)) / std[0].view(1, -1, 1, 1)
            return [(m - mu.view(1, -1, 1, 1)) / sd.view(1, -1, 1, 1) for m, mu, sd in zip(x, mean, std)]

        channels = projector.dim if projector is not None else bank.channels
        heatmaps_per_landmark = heatmaps_per_landmark or default_heatmaps(bank.num_landmarks)
        regressor = LandmarkRegressor(
            channels,
            bank.num_landmarks,
            heatmaps_per_landmark,
            init=init,
            softmax_multiplier=softmax_multiplier,
            size=grid,
        )
        regressor.reset_parameters(generator)
        regressor.to(device)
        if projector is not None:
            projector.requires_grad_(False)
        composed = projector is not None and getattr(projector, "mode", None) == "linear"

        def heatmaps(maps: list[Tensor]) -> Tensor:
            # standardising, upsampling and 1x1 filters are linear: fold the scaling into the filters (the mean
            # shifts each heatmap by a constant, which the spatial softmax ignores) and project the stage maps
            if projector is None:
                weight = regressor.weight if std is None else regressor.weight / torch.cat(std).view(1, -1)
                return project_stages(maps, weight, None, grid)
            if composed:  # a linear projector, then linear filters: one linear map of the stage maps
                weight = regressor.weight if std is None else regressor.weight / std[0].view(1, -1)
                return project_stages(maps, weight @ projector.weight.to(weight), None, grid)
            return regressor.heatmaps(head_input(maps), grid)

        check = val_bank if val_bank is not None else bank

        @torch.no_grad()
        def evaluate(limit: int | None = None, spread: bool = False) -> tuple[float, ...]:
            preds, peaks = [], []
            for idx in index_batches(len(check) if limit is None else min(limit, len(check)), 256):
                heat = heatmaps(check.take(idx)[0])
                preds.append(normalized_to_pixels(regressor.decode(heat), image_size).cpu())
                peaks.append(regressor.heatmap_peakiness(heat).cpu())
            pred = torch.cat(preds)
            n = pred.shape[0]
            truth, visible = check.keypoints[:n].cpu(), check.visible[:n].cpu()
            error, peak = score_fn(pred, truth, visible), float(torch.cat(peaks).mean())
            return (error, peak, spread_ratio(pred, truth, visible)) if spread else (error, peak)

        shape = mean_shape(bank.keypoints[:n_train].cpu(), bank.visible[:n_train].cpu())  # the unaugmented views
        baseline = score_fn(shape.expand_as(check.keypoints.cpu()).clone(), check.keypoints.cpu(), check.visible.cpu())
        _, peak_init = evaluate(limit=256)

        optimizer = torch.optim.Adam(regressor.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=lr * 1e-2)
        eval_every = eval_every or max(25, steps // 40)
        history: list[dict[str, float]] = []
        best = (math.inf, 0, copy.deepcopy(regressor.state_dict()))
        since_best, running, step = 0, 0.0, 0
        order = torch.empty(0, dtype=torch.long)
        for step in range(1, steps + 1):
            if order.numel() < batch_size:
                order = torch.cat([order, torch.randperm(len(bank), generator=generator)])
            idx, order = order[:batch_size], order[batch_size:]
            maps, kp, vis = bank.take(idx)
            pred = regressor.decode(heatmaps(maps))
            loss = regression_loss(pred, pixels_to_normalized(kp, image_size), vis)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running += float(loss.detach())
            if bar is not None:
                bar.update(1)
            if step % eval_every == 0 or step == steps:
                error, _ = evaluate()
                history.append(
                    {
                        "step": step,
                        "lr": optimizer.param_groups[0]["lr"],
                        "train_loss": running / eval_every,
                        "val_error": error,
                    }
                )
                running = 0.0
                if error < best[0] * (1 - 1e-3):
                    best, since_best = (error, step, copy.deepcopy(regressor.state_dict())), 0
                else:
                    since_best += 1
                if bar is not None:
                    bar.set_postfix(val=f"{error:.4g}", best=f"{best[0]:.4g}", refresh=False)
                if val_bank is not None and since_best >= patience and step >= steps // 2:
                    break  # not before the cosine has reached its second half, where late low-lr steps still help
        if bar is not None:
            bar.close()
        if val_bank is not None:
            regressor.load_state_dict(best[2])
        score, peak_final, spread = evaluate(spread=True)

    if std is not None:
        with torch.no_grad():  # fold the scaling into the filters; the mean only shifts each heatmap by a constant
            regressor.weight.div_(torch.cat(std).to(regressor.weight))
    regressor.eval()
    problems = diagnose(metric_name, score, baseline, history, steps, step, val_bank is not None)
    if warn:
        for message in problems:
            warnings.warn(message, UserWarning, stacklevel=2)
    config = {
        "heatmaps_per_landmark": regressor.heatmaps_per_landmark,
        "init": init,
        "softmax_multiplier": regressor.softmax_multiplier,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "betas": list(betas),
        "copies": copies,
        "views": len(bank),
        "augment": repr(augment),
        "standardize": standardize,
        "metric": metric_name,
        "grid": list(grid),
        "image_size": list(image_size),
        "train_images": n_train,
        "val_images": 0 if val_bank is None else len(val_bank),
        "seed": seed,
        "eye_indices": None if eye_indices is None else list(eye_indices),
        "flip_pairs": None if not flip_pairs else [list(p) for p in flip_pairs],
    }
    return RegressorFit(
        regressor,
        metric_name,
        score,
        baseline,
        shape,
        best[1] if val_bank is not None else step,
        step,
        history,
        peak_init,
        peak_final,
        spread,
        problems,
        config,
    )


def diagnose(
    metric: str, score: float, baseline: float, history: list[dict], steps: int, ran: int, has_val: bool
) -> list[str]:
    problems = []
    unit = "%" if metric == "iod" else (" px" if metric == "pixel" else "")
    where = "validation" if has_val else "training (no validation data)"
    if not has_val:
        problems.append(
            "no validation images (fewer than 10 labelled): the regressor could not be selected or "
            "checked on held-out data; its error below is on the training images"
        )
    if not score < 0.9 * baseline:
        problems.append(
            f"the regressor is not clearly better than predicting the training set's mean shape "
            f"({metric} {score:.3g}{unit} vs {baseline:.3g}{unit} on the {where} images): it has "
            "learned little beyond the average layout; try more steps, more labels or another backbone"
        )
    if ran == steps and len(history) >= 4:
        late = [h["val_error"] for h in history[-max(2, len(history) // 4) :]]
        earlier = history[-max(2, len(history) // 4) - 1]["val_error"]
        if late[-1] < earlier * 0.95 and late[-1] <= min(late) * 1.001:
            problems.append(
                f"the {where} error was still falling at the last of {steps} steps "
                f"({earlier:.4g} -> {late[-1]:.4g}{unit} over the last quarter): the regressor is "
                f"probably undertrained; pass more steps (e.g. steps={2 * steps})"
            )
    return problems


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
