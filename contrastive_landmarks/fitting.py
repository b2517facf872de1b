"""Fit a :class:`~contrastive_landmarks.regressor.LandmarkRegressor` on frozen hypercolumn features.

The paper's linear evaluation (§4.1; reference-notes §2): the feature extractor is frozen (eval
mode, no gradients), only the regressor trains, with Adam ``betas=(0.5, 0.999)``, weight decay and
a per-epoch cosine schedule down to ``lr · 8e-4``, the smooth-L1 loss on ``10 ×`` normalised
coordinates, and model selection on a **validation** set.

Differences from the reference, all deliberate:

- Without augmentation the backbone's stage maps are computed **once** and cached (the reference
  runs the full backbone on every sample, every epoch); the regressor trains on the cached stages
  through :func:`contrastive_landmarks.ops.project_stages`, never building the hypercolumn.
  With TPS augmentation (:meth:`~contrastive_landmarks.tps.TPSParams.few_shot`, the reference's
  ``--TPS_aug``) a new warp is drawn for every sample, every epoch, and the backbone runs each time.
- Everything random (init, shuffling, warps) comes from one seeded generator: two runs with the
  same seed give identical weights.
- ``standardize=True`` (off by default; not in the paper) trains on per-channel standardised
  features (training-set mean and std); the returned regressor has the scaling folded into its
  filters, so it works on raw features like any other (the mean only adds a constant per heatmap,
  which the spatial softmax ignores).
- The scheduler steps at the end of each epoch (the reference steps at the start, so its first
  epoch already runs at the second learning rate).

Samples follow the library's contract (``docs/design.md``): dicts with ``image`` ``(3, H, W)`` in
``[0, 1]``, ``keypoints`` ``(N, 2)`` pixels and ``visible`` ``(N,)`` bool. Any object with
``__len__`` and ``__getitem__`` (a torch ``Dataset``, a list of dicts) works; all images must share
one size.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .coords import pixels_to_normalized
from .hypercolumn import Hypercolumn
from .metrics import inter_ocular_error
from .regressor import LandmarkRegressor, regression_loss
from .tps import TPSParams, tps_augment

__all__ = ["FitResult", "extract_stages", "fit_regressor", "predict"]

Metric = Callable[[Tensor, Tensor, Tensor, tuple[int, int]], float]


@dataclass
class FitResult:
    """What :func:`fit_regressor` returns.

    Attributes:
        regressor: the selected regressor (best validation epoch; the last epoch without validation
            data), on raw (un-standardised) features, in eval mode.
        best_epoch: its epoch, counting from 0.
        best_score: its validation error (``nan`` without validation data).
        history: one dict per epoch: ``epoch``, ``lr``, ``train_loss`` and, with validation data,
            ``val_loss`` and ``val_error``.
        feature_mean, feature_std: per-channel statistics used when ``standardize=True``.
    """

    regressor: LandmarkRegressor
    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)
    feature_mean: Tensor | None = None
    feature_std: Tensor | None = None

    def __repr__(self) -> str:
        return (f"FitResult(best_epoch={self.best_epoch}, best_score={self.best_score:.4g}, "
                f"epochs={len(self.history)}, regressor={self.regressor.extra_repr()})")


# -- data ----------------------------------------------------------------------------------
def _check_dataset(data: Any, what: str) -> None:
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise TypeError(f"{what} must be a Dataset or a sequence of sample dicts, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{what} is empty")


def _collate(data: Any, indices: Sequence[int], need_keypoints: bool = True) -> dict[str, Tensor]:
    samples = [data[int(i)] for i in indices]
    for s in samples:
        if not isinstance(s, Mapping) or "image" not in s:
            raise TypeError(f"samples must be dicts with an 'image' (and 'keypoints', 'visible'), got {type(s)}")
        if need_keypoints and "keypoints" not in s:
            raise ValueError("training and validation samples need 'keypoints' ((N, 2) pixels)")
    shapes = {tuple(s["image"].shape) for s in samples}
    if len(shapes) != 1:
        raise ValueError(f"all images must share one size to be batched, got {sorted(shapes)}")
    out = {"image": torch.stack([torch.as_tensor(s["image"]) for s in samples]).float()}
    if need_keypoints:
        kp = torch.stack([torch.as_tensor(s["keypoints"], dtype=torch.float32) for s in samples])
        vis = [s.get("visible") for s in samples]
        out["keypoints"] = kp
        out["visible"] = (torch.ones(kp.shape[:2], dtype=torch.bool) if any(v is None for v in vis)
                          else torch.stack([torch.as_tensor(v, dtype=torch.bool) for v in vis]))
    return out


def _batches(n: int, batch_size: int, order: Tensor | None = None):
    idx = torch.arange(n) if order is None else order
    for start in range(0, n, batch_size):
        yield idx[start:start + batch_size]


def _modes(module: torch.nn.Module) -> list[tuple[torch.nn.Module, bool]]:
    """Every submodule's training flag, to restore exactly what the caller had."""
    return [(m, m.training) for m in module.modules()]


def _restore(modes: list[tuple[torch.nn.Module, bool]]) -> None:
    for m, flag in modes:
        m.training = flag


def _device(features: Hypercolumn, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(features.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


# -- features ------------------------------------------------------------------------------
@torch.no_grad()
def extract_stages(features: Hypercolumn, images: Tensor) -> list[Tensor]:
    """Frozen features of ``(B, 3, H, W)`` images in ``[0, 1]`` as a list of maps.

    The backbone's stage maps (for a plain hypercolumn; linear heads run on them exactly), or a
    single materialised hypercolumn when ``features.normalize`` is set (per-stage L2 normalisation
    does not commute with upsampling). Runs under ``no_grad``; the caller sets eval mode.
    """
    x = features.backbone.normalize(images)
    if features.normalize:
        return [features(x)]
    return list(features.stage_maps(x))


def _grid_size(features: Hypercolumn, image_size: tuple[int, int]) -> tuple[int, int]:
    return features.size if features.size is not None else image_size


class _Cache:
    """Stage maps (or a hypercolumn) of a whole dataset, with keypoints, on one device."""

    def __init__(self, features: Hypercolumn, data: Any, batch_size: int, device: torch.device, bar=None):
        maps: list[list[Tensor]] = []
        kps, vis = [], []
        for idx in _batches(len(data), batch_size):
            batch = _collate(data, idx.tolist())
            out = extract_stages(features, batch["image"].to(device))
            maps.append([m.contiguous() for m in out])
            kps.append(batch["keypoints"])
            vis.append(batch["visible"])
            self.image_size = tuple(batch["image"].shape[-2:])
            if bar is not None:
                bar.update(len(idx))
        self.maps = [torch.cat(parts) for parts in zip(*maps)]
        self.keypoints = torch.cat(kps).to(device)
        self.visible = torch.cat(vis).to(device)

    def __len__(self) -> int:
        return self.keypoints.shape[0]

    def take(self, idx: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        idx = idx.to(self.keypoints.device)
        return [m[idx] for m in self.maps], self.keypoints[idx], self.visible[idx]


def _stats(maps_batches, num_stages: int) -> tuple[list[Tensor], list[Tensor]]:
    """Per-channel mean and std over images and positions, accumulated in float64."""
    sums: list[Tensor | None] = [None] * num_stages
    sq: list[Tensor | None] = [None] * num_stages
    count = [0] * num_stages
    for maps in maps_batches:
        for s, m in enumerate(maps):
            m64 = m.to(torch.float64)
            a, b = m64.sum((0, 2, 3)), m64.pow(2).sum((0, 2, 3))
            sums[s] = a if sums[s] is None else sums[s] + a
            sq[s] = b if sq[s] is None else sq[s] + b
            count[s] += m.shape[0] * m.shape[2] * m.shape[3]
    means = [sums[s] / count[s] for s in range(num_stages)]
    stds = [((sq[s] / count[s] - means[s] ** 2).clamp_min(0)).sqrt().clamp_min(1e-6) for s in range(num_stages)]
    return means, stds


def _standardize(maps: list[Tensor], means: list[Tensor] | None, stds: list[Tensor] | None) -> list[Tensor]:
    if means is None or stds is None:
        return maps
    return [(m - mu.to(m.dtype).view(1, -1, 1, 1)) / sd.to(m.dtype).view(1, -1, 1, 1)
            for m, mu, sd in zip(maps, means, stds)]


def _pixel_error(pred: Tensor, target: Tensor, visible: Tensor, image_size: tuple[int, int]) -> float:
    err = (pred - target).norm(dim=-1)
    return float(err[visible].mean()) if bool(visible.any()) else float("nan")


def _resolve_metric(metric: str | Metric, eye_indices: tuple[int, int] | str) -> Metric:
    if callable(metric):
        return metric
    if metric == "pixel":
        return _pixel_error
    if metric == "iod":
        return lambda p, t, v, size: float(inter_ocular_error(p, t, eye_indices, v))
    raise ValueError(f"metric must be 'pixel', 'iod' or a callable, got {metric!r}")


# -- fitting -------------------------------------------------------------------------------
def fit_regressor(
    features: Hypercolumn,
    train: Any,
    val: Any | None = None,
    *,
    num_landmarks: int | None = None,
    heatmaps_per_landmark: int = 50,
    softmax_multiplier: float = 100.0,
    epochs: int = 100,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 5e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    cosine: bool = True,
    augment: bool | TPSParams = False,
    samples_per_epoch: int | None = None,
    cache: bool | None = None,
    standardize: bool = False,
    metric: str | Metric = "pixel",
    eye_indices: tuple[int, int] | str = (0, 1),
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> FitResult:
    """Train a landmark regressor on frozen features and select it on validation data.

    Args:
        features: a :class:`~contrastive_landmarks.Hypercolumn` (frozen: eval mode, no gradients;
            its ``size`` is the regressor's grid, 48 in the paper).
        train: training samples (see the module docstring).
        val: validation samples for model selection (never the test set); ``None`` keeps the last epoch.
        num_landmarks: ``N`` (default: from the first training sample).
        heatmaps_per_landmark, softmax_multiplier: the regressor's ``K`` (50) and multiplier (100).
        epochs, batch_size, lr, weight_decay, betas, cosine: optimisation (Adam, per-epoch cosine
            to ``lr · 8e-4``). The paper's full-data faces: lr 1e-3, wd 5e-4, batch 32; few-shot:
            lr 1e-2, wd 5e-2, TPS augmentation, ~1000 samples per epoch.
        augment: ``True`` for TPS augmentation with :meth:`TPSParams.few_shot`, or a
            :class:`~contrastive_landmarks.tps.TPSParams`; warps are redrawn every epoch.
        samples_per_epoch: tile a small training set so an epoch has about this many samples
            (the reference's ``--repeat`` with 1000).
        cache: cache the training stage maps (default: when not augmenting; validation features are
            always cached unless ``cache=False``). Costs ``Σ_s C_s h_s w_s`` floats per image
            (about 1.1 MB for ResNet-50 at 96 px).
        standardize: train on per-channel standardised features (see the module docstring).
        metric: validation error, lower is better: ``"pixel"`` (mean pixel distance over visible
            points), ``"iod"`` (inter-ocular error with ``eye_indices``) or
            ``f(pred_px, target_px, visible, image_size) -> float``.
        seed: seeds the init, the shuffling and the warps.
        device: where to train (default: the features' device; the features are moved there).
        progress: show a tqdm bar (needs the ``train`` or ``dev`` extra).

    Returns:
        :class:`FitResult`.
    """
    _check_dataset(train, "train")
    if val is not None:
        _check_dataset(val, "val")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    params = TPSParams.few_shot() if augment is True else (augment or None)
    if params is not None and not isinstance(params, TPSParams):
        raise TypeError(f"augment must be a bool or TPSParams, got {type(augment).__name__}")
    if cache and params is not None:
        raise ValueError("cache=True cannot be combined with augmentation (the warps change every epoch)")
    use_cache = params is None if cache is None else bool(cache)
    score_fn = _resolve_metric(metric, eye_indices)
    device = _device(features, device)
    features.to(device)
    modes = _modes(features)
    features.eval()
    generator = torch.Generator().manual_seed(seed)

    first = _collate(train, [0])
    image_size = tuple(first["image"].shape[-2:])
    n_landmarks = num_landmarks or first["keypoints"].shape[1]
    grid = _grid_size(features, image_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm  # optional dependency, imported only when asked

        bar = tqdm(desc="fit_regressor", unit="sample")

    try:
        train_cache = _Cache(features, train, batch_size, device, bar) if use_cache else None
        val_cache = _Cache(features, val, batch_size, device, bar) if val is not None and cache is not False else None

        def train_maps_batches():
            if train_cache is not None:
                for idx in _batches(len(train_cache), batch_size):
                    yield train_cache.take(idx)[0]
            else:
                for idx in _batches(len(train), batch_size):
                    yield extract_stages(features, _collate(train, idx.tolist())["image"].to(device))

        means = stds = None
        channels = None
        for maps in train_maps_batches():
            channels = sum(m.shape[1] for m in maps)
            break
        if standardize:
            means, stds = _stats(train_maps_batches(), len(maps))

        regressor = LandmarkRegressor(channels, n_landmarks, heatmaps_per_landmark,
                                      softmax_multiplier=softmax_multiplier, size=grid)
        regressor.reset_parameters(generator)
        regressor.to(device)
        optimizer = torch.optim.Adam(regressor.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
        scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=lr * 8e-4)
                     if cosine else None)

        n_train = len(train)
        reps = max(1, (samples_per_epoch or n_train) // n_train)
        history: list[dict[str, float]] = []
        best_state, best_epoch, best_score = None, epochs - 1, math.inf
        if bar is not None:
            bar.reset(total=epochs * n_train * reps)
        for epoch in range(epochs):
            regressor.train()
            order = torch.cat([torch.randperm(n_train, generator=generator) for _ in range(reps)])
            total, count = 0.0, 0
            for idx in _batches(len(order), batch_size, order):
                if train_cache is not None:
                    maps, kp, vis = train_cache.take(idx)
                else:
                    batch = _collate(train, idx.tolist())
                    images, kp, vis = batch["image"].to(device), batch["keypoints"].to(device), batch["visible"]
                    if params is not None:
                        images, kp = tps_augment(images, kp, params, generator=generator)
                        vis = vis.to(device) & torch.isfinite(kp).all(-1)
                    maps = extract_stages(features, images)
                    vis = vis.to(device)
                pred = regressor(_standardize(maps, means, stds))
                target = pixels_to_normalized(kp.to(pred.dtype), image_size)
                loss = regression_loss(pred, target, vis)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
                count += len(idx)
                if bar is not None:
                    bar.update(len(idx))
            row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": total / count}
            if scheduler is not None:
                scheduler.step()
            if val is not None:
                val_loss, val_pred, val_kp, val_vis = _evaluate(regressor, features, val, val_cache, means, stds,
                                                                batch_size, device, image_size)
                row["val_loss"] = val_loss
                row["val_error"] = score_fn(val_pred, val_kp, val_vis, image_size)
                if row["val_error"] < best_score:
                    best_score, best_epoch = row["val_error"], epoch
                    best_state = copy.deepcopy(regressor.state_dict())
            history.append(row)
            if bar is not None:
                bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k != "epoch"})
    finally:
        if bar is not None:
            bar.close()
        _restore(modes)

    if best_state is not None:
        regressor.load_state_dict(best_state)
    else:
        best_score = float("nan")
    if stds is not None:
        with torch.no_grad():  # fold the scaling into the filters; the mean is a per-heatmap constant
            regressor.weight.div_(torch.cat(stds).to(regressor.weight))
    regressor.eval()
    return FitResult(regressor, best_epoch, float(best_score), history,
                     None if means is None else torch.cat(means), None if stds is None else torch.cat(stds))


@torch.no_grad()
def _evaluate(regressor, features, data, cache, means, stds, batch_size, device, image_size):
    regressor.eval()
    preds, kps, viss = [], [], []
    loss_sum, n = 0.0, 0
    source = cache if cache is not None else data
    for idx in _batches(len(source), batch_size):
        if cache is not None:
            maps, kp, vis = cache.take(idx)
        else:
            batch = _collate(data, idx.tolist())
            maps = extract_stages(features, batch["image"].to(device))
            kp, vis = batch["keypoints"].to(device), batch["visible"].to(device)
        pred = regressor(_standardize(maps, means, stds))
        loss_sum += float(regression_loss(pred, pixels_to_normalized(kp.to(pred.dtype), image_size), vis)) * len(idx)
        n += len(idx)
        preds.append(regressor.to_pixels(pred, image_size).float().cpu())
        kps.append(kp.float().cpu())
        viss.append(vis.cpu())
    regressor.train()
    return loss_sum / n, torch.cat(preds), torch.cat(kps), torch.cat(viss)


@torch.no_grad()
def predict(
    features: Hypercolumn,
    regressor: LandmarkRegressor,
    data: Any,
    *,
    batch_size: int = 32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Pixel predictions ``(M, N, 2)`` for a dataset, a list of sample dicts, or ``(M, 3, H, W)`` images.

    Images are in ``[0, 1]``; the features' own normalisation is applied.
    """
    device = _device(features, device)
    features.to(device)
    regressor.to(device)
    modes = _modes(features) + _modes(regressor)
    features.eval()
    regressor.eval()
    out = []
    try:
        if isinstance(data, Tensor):
            if data.ndim != 4:
                raise ValueError(f"images must be (M, 3, H, W), got {tuple(data.shape)}")
            batches = (data[idx] for idx in _batches(data.shape[0], batch_size))
        else:
            _check_dataset(data, "data")
            batches = (_collate(data, idx.tolist(), need_keypoints=False)["image"]
                       for idx in _batches(len(data), batch_size))
        for images in batches:
            images = images.to(device, torch.float32)
            size = tuple(images.shape[-2:])
            maps = extract_stages(features, images)
            out.append(regressor.predict_pixels(maps, size, _grid_size(features, size)).cpu())
    finally:
        _restore(modes)
    return torch.cat(out)
