"""Fit a :class:`~contrastive_landmarks.projector.SpatialProjector` on frozen hypercolumn features (§3.2).

The projector ``Φ' = wᵀ Φ`` is trained with the spatially contrastive loss of Eq. 3
(:func:`contrastive_landmarks.losses.spatial_contrastive_loss`) while the backbone stays frozen
(eval mode, no gradients): by default with ``x' = x`` (each location must be most similar to itself
and its neighbours, the authors' ``train_feature_projector.py``), or, with ``warp=``, on TPS-warped
pairs ``(x, g x)`` with their dense correspondence (Eq. 3 in its general form).

The authors' recipe (reference-notes §3b) is the default: the loss on a **24 × 24** grid (its cost
grows as ``(h w)²``), SGD lr ``1e-3`` momentum 0.9 weight decay ``5e-4``, batch 32, 10 epochs,
``τ = 1/7``, distances to the power 0.5 in input pixels. Differences, all deliberate:

- Without warps, each image's stage maps are computed **once** and cached
  (:class:`~contrastive_landmarks.train.feature_cache.CachedFeatures`); the projector trains on them through
  :func:`contrastive_landmarks.ops.project_stages`, never building the hypercolumn.
- Model selection uses the **validation loss** (the same Eq. 3 objective on held-out images; with
  warps, on pairs drawn once from a fixed seed), not the authors' matching error on an unseeded
  random subset.
- Everything random (init, shuffling, warps) comes from one seeded generator: two runs with the
  same seed give identical weights. The authors also use photometric augmentations (JPEG, crops,
  colour jitter); pass an augmented dataset to get them (and ``cache=False``).
- With ``checkpoint=PATH`` the fit is saved there (atomically) after every epoch and on Ctrl-C, at a
  step boundary (:class:`ProjectorFitInterrupted` names the file); ``resume=True`` continues it to the
  weights an uninterrupted run ends with.

Samples follow the library's contract: ``data[i]["image"]`` is a ``(3, H, W)`` image in ``[0, 1]``
(labels are not needed); a ``(M, 3, H, W)`` tensor of images works too. All images share one size.

This module is the loop (epochs, steps, validation, Ctrl-C); the features and the loss are
:mod:`.projector_data`, a fit's state and its checkpoint :mod:`.projector_run`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..device import resolve_device
from ..hypercolumn import Hypercolumn
from ..projector import SpatialProjector
from ..tps import TPSParams
from ._loop import BestState, progress_bar
from .checkpoint import save_checkpoint
from .feature_cache import FeatureCache
from .features import eval_mode, index_batches, module_device
from .interrupt import StopOnInterrupt, TrainingInterrupted
from .projector_data import (
    FeatureSource,
    as_dataset,
    batch_loss,
    eq3_options,
    mean_loss,
    pair_size,
    projector_loss,
    warn_if_cache_too_small,
    warp_params,
)
from .projector_run import Fit, fit_state, restore_fit

__all__ = ["ProjectorFitInterrupted", "ProjectorFitResult", "fit_projector", "projector_loss"]

OPTIMIZERS = ("sgd", "adam")
_VAL_SEED_OFFSET = 7919  # validation warps come from their own fixed stream


class ProjectorFitInterrupted(TrainingInterrupted):
    """Ctrl-C during :func:`fit_projector`: the fit after its last finished step was saved to :attr:`checkpoint`."""


@dataclass
class ProjectorFitResult:
    """What :func:`fit_projector` returns.

    Attributes:
        projector: the selected projector (lowest validation loss; the last epoch without validation
            data), in eval mode, on the device it trained on.
        best_epoch: its epoch, counting from 0.
        best_score: its validation loss (``nan`` without validation data).
        initial_score: the validation loss of the untrained projector (``nan`` without validation data).
        history: one dict per epoch: ``epoch``, ``lr``, ``train_loss``, ``seconds``, ``images_per_s`` and,
            with validation data, ``val_loss``.
        config: the settings used (JSON-serialisable), e.g. for a model card.
    """

    projector: SpatialProjector
    best_epoch: int
    best_score: float
    initial_score: float
    history: list[dict[str, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def recipe(self) -> str:
        """The settings in one line."""
        c = self.config
        optimiser = (
            f"SGD lr {c['lr']:g} momentum {c['momentum']:g}" if c["optimizer"] == "sgd" else f"Adam lr {c['lr']:g}"
        )
        return (
            f"{c['mode']} projector {c['in_channels']} -> {c['dim']}; Eq. 3 on a {c['size']}x{c['size']} grid "
            f"({'TPS pairs' if c['warp'] else 'x = x'}), temperature {c['temperature']:.4g}, distance^"
            f"{c['distance_power']:g} in input pixels; {optimiser} wd {c['weight_decay']:g}"
            f"{', cosine' if c['cosine'] else ''}, batch {c['batch_size']}, {c['epochs']} epochs, seed {c['seed']}"
        )

    def __repr__(self) -> str:
        return (
            f"ProjectorFitResult(best_epoch={self.best_epoch}, best_score={self.best_score:.4g}, "
            f"initial_score={self.initial_score:.4g}, epochs={len(self.history)}, "
            f"projector={self.projector.extra_repr()})"
        )


def fit_projector(
    features: Hypercolumn,
    data: Any,
    val: Any | None = None,
    *,
    dim: int = 256,
    mode: str = "linear",
    softmax_multiplier: float = 7.0,
    size: int | tuple[int, int] = 24,
    epochs: int = 10,
    batch_size: int = 32,
    optimizer: str = "sgd",
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    cosine: bool = False,
    temperature: float = 1 / 7,
    distance_power: float = 0.5,
    warp: bool | TPSParams = False,
    cache: bool | FeatureCache | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    callback: Callable[[dict[str, float]], None] | None = None,
    implementation: str = "auto",
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
) -> ProjectorFitResult:
    """Train a spatial projector on frozen features with Eq. 3 and select it on validation data.

    Args:
        features: a :class:`~contrastive_landmarks.Hypercolumn` (frozen: eval mode, no gradients). With
            ``normalize=True`` the per-stage normalised hypercolumn is built at ``size`` and projected.
        data: training images (see the module docstring): a dataset, a list of sample dicts, or
            ``(M, 3, H, W)`` in ``[0, 1]``.
        val: validation images for model selection (never the test set); ``None`` keeps the last epoch.
        dim, mode, softmax_multiplier: the projector (:class:`~contrastive_landmarks.SpatialProjector`).
        size: grid ``S`` (or ``(S_h, S_w)``) the loss is computed on (24, the authors'; the cost and
            memory of a step grow as ``(S_h S_w)²``).
        epochs, batch_size: optimisation length (10 and 32 in the authors' recipe).
        optimizer: ``"sgd"`` (the authors', with ``momentum``) or ``"adam"``.
        lr, momentum, weight_decay: optimiser settings (``1e-3``, 0.9, ``5e-4``).
        cosine: decay the learning rate per epoch with a cosine to 0 (off in the authors' recipe).
        temperature, distance_power: ``τ`` (``1/7``) and ``γ`` (0.5) of Eq. 3/4; distances in input pixels.
        warp: ``True`` for TPS pairs with :meth:`TPSParams.dve` (redrawn every step), a
            :class:`~contrastive_landmarks.tps.TPSParams`, or ``False`` for ``x' = x``.
        cache: cache stage maps (default: when not warping) in a
            :class:`~contrastive_landmarks.train.feature_cache.FeatureCache` (pass one to set its memory budget or a
            spill folder; the default holds 1 GiB in memory and recomputes what does not fit). Costs
            ``Σ_s C_s h_s w_s`` floats per image (1.1 MB for ResNet-50 at 96 px).
        seed: seeds the init, the shuffling and the warps.
        device: where to train (default: the features' device; the features are moved there).
        progress: show a tqdm bar with images/s and the ETA (needs the ``train`` or ``dev`` extra).
        callback: called with each epoch's history row (e.g. to log to TensorBoard).
        implementation: the loss implementation (see :func:`~contrastive_landmarks.losses.spatial_contrastive_loss`).
        checkpoint: a file to save the fit to after every epoch and on Ctrl-C (default: none, and Ctrl-C
            stops at once).
        resume: continue from ``checkpoint`` when it exists (the same data and settings; else start afresh).

    Returns:
        :class:`ProjectorFitResult`.

    Raises:
        ValueError: empty data, bad settings, images of different sizes, or a checkpoint of other settings.
        ProjectorFitInterrupted: on Ctrl-C with a ``checkpoint``, after saving it.
    """
    data = as_dataset(data, "data")
    val = None if val is None else as_dataset(val, "val")
    grid, params = pair_size(size), warp_params(warp)
    _check_settings(epochs, batch_size, optimizer, lr, cache, params, checkpoint, resume)
    device = module_device(features, None if device is None else resolve_device(device))
    features.to(device)
    projector, generator = _new_projector(features, dim, mode, softmax_multiplier, grid, seed, device)
    opt = _optimizer(projector, optimizer, lr, momentum, weight_decay)
    config = {
        "in_channels": features.channels,
        "dim": dim,
        "mode": mode,
        "size": grid[0] if grid[0] == grid[1] else list(grid),
        "epochs": epochs,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "cosine": cosine,
        "temperature": temperature,
        "distance_power": distance_power,
        "warp": params is not None,
        "seed": seed,
        "train_images": len(data),
        "val_images": 0 if val is None else len(val),
    }
    loss_kwargs = eq3_options(temperature, distance_power, implementation)
    run = Fit(features, projector, opt, generator, grid, loss_kwargs, config, BestState(projector))
    return _fit(run, data, val, device, cache, params, checkpoint, resume, progress, callback)


def _fit(run: Fit, data, val, device, cache, params, checkpoint, resume, progress, callback) -> ProjectorFitResult:
    """Run a fresh ``run`` (resumed from ``checkpoint`` when asked and it exists) to its end; its result."""
    run.checkpoint = None if checkpoint is None else Path(checkpoint)
    if resume and run.checkpoint.is_file():
        restore_fit(run)
    with eval_mode(run.features), StopOnInterrupt(run.checkpoint is not None) as interrupt:
        bar = _progress_bar(run, len(data)) if progress else None
        try:
            _attach_sources(run, data, val, device, cache, params)
            _train(run, bar, callback, interrupt)
        finally:
            if bar is not None:
                bar.close()
    return _result(run)


# -- the parts of a fit ------------------------------------------------------------------------------------
def _check_settings(epochs, batch_size, optimizer, lr, cache, params, checkpoint, resume) -> None:
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if cache not in (None, False) and params is not None:
        raise ValueError("cache cannot be combined with warp (the warped images change every step)")
    if resume and checkpoint is None:
        raise ValueError("resume needs checkpoint= (the file to continue from)")


def _new_projector(
    features: Hypercolumn, dim: int, mode: str, softmax_multiplier: float, grid, seed: int, device: torch.device
) -> tuple[SpatialProjector, torch.Generator]:
    """The untrained projector (drawn from the fit's generator, seeded with ``seed``) and that generator."""
    generator = torch.Generator().manual_seed(seed)
    projector = SpatialProjector(features.channels, dim, mode=mode, softmax_multiplier=softmax_multiplier, size=grid)
    projector.reset_parameters(generator)
    return projector.to(device), generator


def _optimizer(
    projector: SpatialProjector, name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    trainable = list(projector.parameters())
    if name == "sgd":
        return torch.optim.SGD(trainable, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(trainable, lr=lr, weight_decay=weight_decay)


def _progress_bar(run: Fit, images: int):
    """A bar over every epoch's ``images``, from where ``run`` is (tqdm imported only here)."""
    done = run.epoch * images + run.count
    return progress_bar(True, run.epochs * images, "fit_projector", "img", done, dynamic_ncols=True)


def _interrupted(run: Fit) -> ProjectorFitInterrupted:
    """Save ``run`` after Ctrl-C; the exception that says where."""
    save_checkpoint(fit_state(run), run.checkpoint)
    return ProjectorFitInterrupted(run.steps_done, run.checkpoint)


def _attach_sources(
    run: Fit, data: Any, val: Any | None, device: torch.device, cache: bool | FeatureCache | None, params
) -> None:
    """The training and validation feature sources (cached unless warping or told not to), and the untrained score."""
    use_cache = params is None if cache is None else cache is not False
    run.train_cache = cache if isinstance(cache, FeatureCache) else (FeatureCache() if use_cache else None)
    run.source = FeatureSource(run.features, data, device, run.batch_size, run.train_cache, params)
    if val is None:
        return
    val_cache = FeatureCache() if params is None and cache is not False else None
    run.val_source = FeatureSource(run.features, val, device, run.batch_size, val_cache, params)
    if tuple(run.val_source.image_size) != tuple(run.source.image_size):
        raise ValueError(
            f"train images are {run.source.image_size} but validation images are {run.val_source.image_size}"
        )
    if not run.resumed:  # a resumed fit has the untrained projector's score in its checkpoint
        run.initial = _val_loss(run)


def _val_loss(run: Fit) -> float:
    """The validation loss (on pairs drawn from their own fixed seed: the same every epoch)."""
    return mean_loss(
        run.projector,
        run.features,
        run.val_source,
        run.batch_size,
        run.grid,
        run.loss_kwargs,
        run.seed + _VAL_SEED_OFFSET,
    )


def _step(run: Fit, idx: Tensor) -> float:
    """One optimiser step on the samples at ``idx``; returns its loss."""
    loss = batch_loss(run.projector, run.features, run.source, idx, run.generator, run.grid, run.loss_kwargs)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    return float(loss.detach())


def _epoch(run: Fit, bar, interrupt: StopOnInterrupt) -> dict[str, float]:
    """Train epoch ``run.epoch`` from its batch ``run.position`` on; validate; returns its history row.

    Ctrl-C (``interrupt``) stops it after a step, saved, unless that step was the fit's last.
    """
    if run.order is None:
        run.order = torch.randperm(len(run.source), generator=run.generator)
    for group in run.optimizer.param_groups:
        group["lr"] = run.lr
    started, first = time.perf_counter() - run.seconds, run.position
    batches = list(index_batches(len(run.order), run.batch_size, run.order))
    for idx in batches[run.position :]:
        run.total += _step(run, idx) * len(idx)
        run.count += len(idx)
        run.position += 1
        run.seconds = time.perf_counter() - started
        if bar is not None:
            bar.update(len(idx))
            bar.set_postfix(loss=f"{run.total / run.count:.4f}", refresh=False)
        if interrupt.requested and run.steps_done < run.epochs * run.steps_per_epoch:
            raise _interrupted(run)
    seconds = time.perf_counter() - started
    if run.epoch == 0 and first == 0 and run.train_cache is not None:  # (a resumed epoch cached only a part)
        warn_if_cache_too_small(run.train_cache, len(run.source))
    row = {
        "epoch": run.epoch,
        "lr": run.lr,
        "train_loss": run.total / run.count,
        "seconds": seconds,
        "images_per_s": run.count / max(seconds, 1e-9),
    }
    if run.val_source is not None:
        row["val_loss"] = _val_loss(run)
        run.best.update(row["val_loss"], run.epoch, run.projector)
    run.history.append(row)
    run.epoch, run.position, run.order, run.total, run.count, run.seconds = run.epoch + 1, 0, None, 0.0, 0, 0.0
    return row


def _train(run: Fit, bar, callback: Callable[[dict[str, float]], None] | None, interrupt: StopOnInterrupt) -> None:
    """The loop: the epochs from ``run.epoch`` to ``run.epochs``, each row to the bar and the callback, each
    finished epoch to the checkpoint; Ctrl-C stops it at a step boundary (:func:`_epoch`) or after an epoch."""
    run.projector.train()
    while run.epoch < run.epochs:
        row = _epoch(run, bar, interrupt)
        if bar is not None:
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k in ("train_loss", "val_loss")})
        if callback is not None:
            callback(row)
        if run.checkpoint is not None:
            save_checkpoint(fit_state(run), run.checkpoint)
            if interrupt.requested and run.epoch < run.epochs:  # Ctrl-C during the validation
                raise ProjectorFitInterrupted(run.steps_done, run.checkpoint)


def _result(run: Fit) -> ProjectorFitResult:
    """The selected projector (the best validation epoch's weights; the last epoch's without validation)."""
    projector, best_score = run.projector, run.best.score
    if run.selected:
        projector.load_state_dict(run.best.state)
    else:
        best_score = math.nan
    projector.eval()
    return ProjectorFitResult(projector, run.best_epoch, float(best_score), float(run.initial), run.history, run.config)
