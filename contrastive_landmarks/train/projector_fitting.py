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
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..hypercolumn import Hypercolumn, head_maps
from ..losses import spatial_contrastive_loss
from ..projector import SpatialProjector
from ..tps import TPSParams, make_pair
from .checkpoint import load_checkpoint, save_checkpoint
from .feature_cache import CachedFeatures, FeatureCache
from .features import check_dataset, collate, eval_mode, index_batches, module_device
from .interrupt import StopOnInterrupt, TrainingInterrupted

__all__ = ["ProjectorFitInterrupted", "ProjectorFitResult", "fit_projector", "projector_loss"]

OPTIMIZERS = ("sgd", "adam")
_VAL_SEED_OFFSET = 7919  # validation warps come from their own fixed stream
_FORMAT = "contrastive_landmarks.projector_fit/1"


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


class _Images:
    """A ``(M, 3, H, W)`` tensor as a sequence of sample dicts."""

    def __init__(self, images: Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (M, 3, H, W), got {tuple(images.shape)}")
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "index": int(index)}


def _as_dataset(data: Any, what: str) -> Any:
    if isinstance(data, Tensor):
        data = _Images(data)
    check_dataset(data, what)
    return data


def _pair_size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    size = tuple(size)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"size must be a positive int or (h, w), got {size!r}")
    return size  # type: ignore[return-value]


class _Source:
    """Batches of frozen features for one dataset: cached stage maps, or the backbone run on (warped) images."""

    def __init__(
        self,
        features: Hypercolumn,
        data: Any,
        device: torch.device,
        batch_size: int,
        cache: FeatureCache | None,
        params: TPSParams | None,
    ) -> None:
        self.features, self.data, self.device, self.params = features, data, device, params
        self.image_size = tuple(collate(data, [0], labels=False)["image"].shape[-2:])
        self.cached = (
            CachedFeatures(features, data, cache=cache, batch_size=batch_size, device=device)
            if cache is not None
            else None
        )

    def __len__(self) -> int:
        return len(self.data)

    @torch.no_grad()
    def _maps(self, images: Tensor) -> list[Tensor]:
        return list(self.features.image_stage_maps(images))

    @torch.no_grad()
    def batch(
        self, idx: Tensor, generator: torch.Generator | None
    ) -> tuple[list[Tensor], list[Tensor] | None, Tensor | None]:
        """``(stage maps of x, stage maps of x' or None, grid or None)`` of the samples at ``idx``."""
        if self.cached is not None:
            return self.cached.get(idx), None, None
        images = collate(self.data, idx.tolist(), labels=False)["image"].to(self.device)
        if self.params is None:
            return self._maps(images), None, None
        pair = make_pair(images, params=self.params, generator=generator)
        return self._maps(pair.image1), self._maps(pair.image2), pair.grid


def _project(projector: SpatialProjector, maps: list[Tensor], size: tuple[int, int], normalize: bool) -> Tensor:
    # what the projector reads when the fitted model predicts (the normalised hypercolumn with normalize=True)
    return projector(head_maps([m.float() for m in maps], size, normalize=normalize), size)


def _loss(projector, features, source: _Source, idx, generator, size, loss_kwargs) -> Tensor:
    maps1, maps2, grid = source.batch(idx, generator)
    f1 = _project(projector, maps1, size, features.normalize)
    f2 = None if maps2 is None else _project(projector, maps2, size, features.normalize)
    return spatial_contrastive_loss(f1, f2, grid, image_size=source.image_size, **loss_kwargs)


@torch.no_grad()
def _mean_loss(projector, features, source: _Source, batch_size: int, size, loss_kwargs, seed: int) -> float:
    was_training = projector.training
    projector.eval()
    generator = torch.Generator().manual_seed(seed)  # the same validation pairs every time
    total = 0.0
    for idx in index_batches(len(source), batch_size):
        total += float(_loss(projector, features, source, idx, generator, size, loss_kwargs)) * len(idx)
    projector.train(was_training)
    return total / len(source)


def _warn_if_cache_too_small(cache: FeatureCache, count: int) -> None:
    """After one pass: warn when not every image's maps stayed cached (later epochs rerun the backbone on them)."""
    held = len(cache)
    if cache.directory is not None or held >= count or held == 0:
        return
    need = cache.memory_used / held * count / 2**30
    warnings.warn(
        f"the feature cache kept {held} of {count} images' stage maps ({cache.memory_used / 2**30:.2f} GiB); "
        f"the others are recomputed every epoch. Give FeatureCache(memory_bytes) >= {need:.2f} GiB (CLI: "
        "--cache-memory-gb) or a cache_dir (--cache-dir)",
        RuntimeWarning,
        stacklevel=5,  # the caller of fit_projector (-> _train -> _epoch -> here)
    )


def _warp_params(warp: bool | TPSParams) -> TPSParams | None:
    if warp is True:
        return TPSParams()
    if warp is False or warp is None:
        return None
    if not isinstance(warp, TPSParams):
        raise TypeError(f"warp must be a bool or TPSParams, got {type(warp).__name__}")
    return warp


def _loss_kwargs(temperature: float, distance_power: float, implementation: str) -> dict:
    return {"temperature": temperature, "distance_power": distance_power, "implementation": implementation}


def projector_loss(
    features: Hypercolumn,
    projector: SpatialProjector,
    data: Any,
    *,
    size: int | tuple[int, int] = 24,
    temperature: float = 1 / 7,
    distance_power: float = 0.5,
    warp: bool | TPSParams = False,
    batch_size: int = 32,
    seed: int = 0,
    device: torch.device | str | None = None,
    implementation: str = "auto",
) -> float:
    """The mean Eq. 3 loss of ``projector`` on a dataset (no gradients; the validation score of :func:`fit_projector`).

    Args:
        features: the frozen :class:`~contrastive_landmarks.Hypercolumn`.
        projector: a :class:`~contrastive_landmarks.SpatialProjector` with ``in_channels == features.channels``.
        data: samples with ``image`` ``(3, H, W)`` in ``[0, 1]``, or a ``(M, 3, H, W)`` tensor.
        size: the grid the loss is computed on (24 in the authors' training).
        temperature, distance_power: ``τ`` and ``γ`` of Eq. 3/4.
        warp: ``True`` / :class:`~contrastive_landmarks.tps.TPSParams`: TPS pairs drawn from ``seed``
            (the general Eq. 3); ``False``: ``x' = x``.

    Returns:
        The loss averaged over images (expected powered pixel distance of a location's soft match).
    """
    data = _as_dataset(data, "data")
    grid = _pair_size(size)
    device = module_device(features, device)
    features.to(device)
    projector.to(device)
    with eval_mode(features), eval_mode(projector):
        source = _Source(features, data, device, batch_size, None, _warp_params(warp))
        return _mean_loss(
            projector,
            features,
            source,
            batch_size,
            grid,
            _loss_kwargs(temperature, distance_power, implementation),
            seed,
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
    data = _as_dataset(data, "data")
    val = None if val is None else _as_dataset(val, "val")
    grid, params = _pair_size(size), _warp_params(warp)
    _check_settings(epochs, batch_size, optimizer, lr, cache, params, checkpoint, resume)
    device = module_device(features, device)
    features.to(device)
    generator = torch.Generator().manual_seed(seed)
    projector = SpatialProjector(features.channels, dim, mode=mode, softmax_multiplier=softmax_multiplier, size=grid)
    projector.reset_parameters(generator)
    projector.to(device)
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
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs) if cosine else None
    loss_kwargs = _loss_kwargs(temperature, distance_power, implementation)
    run = _Fit(features, projector, opt, scheduler, generator, grid, loss_kwargs, config)
    run.checkpoint = None if checkpoint is None else Path(checkpoint)
    if resume and run.checkpoint.is_file():
        _restore(run)
    with eval_mode(features), StopOnInterrupt(run.checkpoint is not None) as interrupt:
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


def _optimizer(
    projector: SpatialProjector, name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    trainable = list(projector.parameters())
    if name == "sgd":
        return torch.optim.SGD(trainable, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(trainable, lr=lr, weight_decay=weight_decay)


@dataclass
class _Fit:
    """Everything one call of :func:`fit_projector` trains with, and where it is.

    ``epoch`` is the epoch in progress; ``position`` counts its batches done, ``order`` is its data order
    (``None`` until drawn), ``total``/``count`` its summed loss and images, ``seconds`` its training time.
    """

    features: Hypercolumn
    projector: SpatialProjector
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    generator: torch.Generator
    grid: tuple[int, int]
    loss_kwargs: dict
    config: dict
    source: _Source | None = None
    val_source: _Source | None = None
    train_cache: FeatureCache | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    best_state: dict | None = None
    best_epoch: int = -1
    best_score: float = math.inf
    initial: float = math.nan
    epoch: int = 0
    position: int = 0
    order: Tensor | None = None
    total: float = 0.0
    count: int = 0
    seconds: float = 0.0
    checkpoint: Path | None = None
    resumed: bool = False

    def __post_init__(self) -> None:
        if self.best_epoch < 0:
            self.best_epoch = self.epochs - 1  # what is kept without validation data: the last epoch

    @property
    def epochs(self) -> int:
        return self.config["epochs"]

    @property
    def batch_size(self) -> int:
        return self.config["batch_size"]

    @property
    def seed(self) -> int:
        return self.config["seed"]

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.source) / self.batch_size)

    @property
    def steps_done(self) -> int:
        return self.epoch * self.steps_per_epoch + self.position

    @property
    def settings(self) -> dict:
        """What a resumed fit must share with its checkpoint."""
        return {**self.config, "softmax_multiplier": self.projector.softmax_multiplier}


def _progress_bar(run: _Fit, images: int):
    from tqdm.auto import tqdm  # optional dependency, imported only when asked

    done = run.epoch * images + run.count
    return tqdm(total=run.epochs * images, initial=done, desc="fit_projector", unit="img", dynamic_ncols=True)


def _state(run: _Fit) -> dict:
    """The checkpoint of ``run`` after its last finished step."""
    return {
        "format": _FORMAT,
        "settings": run.settings,
        "projector": run.projector.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": None if run.scheduler is None else run.scheduler.state_dict(),
        "generator": run.generator.get_state(),
        "position": {"epoch": run.epoch, "batch": run.position},
        "order": run.order,
        "running": {"total": run.total, "count": run.count, "seconds": run.seconds},
        "history": run.history,
        "best": {"state": run.best_state, "epoch": run.best_epoch, "score": run.best_score},
        "initial_score": run.initial,
    }


def _restore(run: _Fit) -> None:
    """Continue ``run`` from its checkpoint (written by a fit of the same data and settings)."""
    saved = load_checkpoint(run.checkpoint)
    if saved.get("format") != _FORMAT:
        raise ValueError(f"{run.checkpoint} is not a fit_projector checkpoint of this library")
    old, new = saved["settings"], run.settings
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted({*old, *new}) if old.get(k) != new.get(k)]
    if changed:
        raise ValueError(
            f"cannot resume {run.checkpoint}: it was fitted with other settings or data ({'; '.join(changed)}); "
            "use another checkpoint, or resume=False to start afresh"
        )
    run.projector.load_state_dict(saved["projector"])
    run.optimizer.load_state_dict(saved["optimizer"])
    if run.scheduler is not None:
        run.scheduler.load_state_dict(saved["scheduler"])
    run.generator.set_state(saved["generator"])
    run.epoch, run.position, run.order = saved["position"]["epoch"], saved["position"]["batch"], saved["order"]
    run.total, run.count, run.seconds = (saved["running"][k] for k in ("total", "count", "seconds"))
    run.history = list(saved["history"])
    run.best_state, run.best_epoch, run.best_score = (saved["best"][k] for k in ("state", "epoch", "score"))
    run.initial, run.resumed = saved["initial_score"], True


def _interrupted(run: _Fit) -> ProjectorFitInterrupted:
    """Save ``run`` after Ctrl-C; the exception that says where."""
    save_checkpoint(_state(run), run.checkpoint)
    return ProjectorFitInterrupted(run.steps_done, run.checkpoint)


def _attach_sources(
    run: _Fit, data: Any, val: Any | None, device: torch.device, cache: bool | FeatureCache | None, params
) -> None:
    """The training and validation feature sources (cached unless warping or told not to), and the untrained score."""
    use_cache = params is None if cache is None else cache is not False
    run.train_cache = cache if isinstance(cache, FeatureCache) else (FeatureCache() if use_cache else None)
    run.source = _Source(run.features, data, device, run.batch_size, run.train_cache, params)
    if val is None:
        return
    val_cache = FeatureCache() if params is None and cache is not False else None
    run.val_source = _Source(run.features, val, device, run.batch_size, val_cache, params)
    if tuple(run.val_source.image_size) != tuple(run.source.image_size):
        raise ValueError(
            f"train images are {run.source.image_size} but validation images are {run.val_source.image_size}"
        )
    if not run.resumed:  # a resumed fit has the untrained projector's score in its checkpoint
        run.initial = _val_loss(run)


def _val_loss(run: _Fit) -> float:
    """The validation loss (on pairs drawn from their own fixed seed: the same every epoch)."""
    return _mean_loss(
        run.projector,
        run.features,
        run.val_source,
        run.batch_size,
        run.grid,
        run.loss_kwargs,
        run.seed + _VAL_SEED_OFFSET,
    )


def _step(run: _Fit, idx: Tensor) -> float:
    """One optimiser step on the samples at ``idx``; returns its loss."""
    loss = _loss(run.projector, run.features, run.source, idx, run.generator, run.grid, run.loss_kwargs)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    return float(loss.detach())


def _epoch(run: _Fit, bar, interrupt: StopOnInterrupt) -> dict[str, float]:
    """Train epoch ``run.epoch`` from its batch ``run.position`` on; validate; returns its history row.

    Ctrl-C (``interrupt``) stops it after a step, saved, unless that step was the fit's last.
    """
    if run.order is None:
        run.order = torch.randperm(len(run.source), generator=run.generator)
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
        _warn_if_cache_too_small(run.train_cache, len(run.source))
    row = {
        "epoch": run.epoch,
        "lr": run.optimizer.param_groups[0]["lr"],
        "train_loss": run.total / run.count,
        "seconds": seconds,
        "images_per_s": run.count / max(seconds, 1e-9),
    }
    if run.scheduler is not None:
        run.scheduler.step()
    if run.val_source is not None:
        row["val_loss"] = _val_loss(run)
        if row["val_loss"] < run.best_score:
            run.best_score, run.best_epoch = row["val_loss"], run.epoch
            run.best_state = copy.deepcopy(run.projector.state_dict())
    run.history.append(row)
    run.epoch, run.position, run.order, run.total, run.count, run.seconds = run.epoch + 1, 0, None, 0.0, 0, 0.0
    return row


def _train(run: _Fit, bar, callback: Callable[[dict[str, float]], None] | None, interrupt: StopOnInterrupt) -> None:
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
            save_checkpoint(_state(run), run.checkpoint)
            if interrupt.requested and run.epoch < run.epochs:  # Ctrl-C during the validation
                raise ProjectorFitInterrupted(run.steps_done, run.checkpoint)


def _result(run: _Fit) -> ProjectorFitResult:
    """The selected projector (the best validation epoch's weights; the last epoch's without validation)."""
    projector, best_score = run.projector, run.best_score
    if run.best_state is not None:
        projector.load_state_dict(run.best_state)
    else:
        best_score = math.nan
    projector.eval()
    return ProjectorFitResult(projector, run.best_epoch, float(best_score), float(run.initial), run.history, run.config)
