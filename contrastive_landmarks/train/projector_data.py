"""What a spatial projector trains and is scored on (:func:`~.projector_fitting.fit_projector`): frozen features
and the Eq. 3 loss.

- :class:`FeatureSource`: batches of frozen stage maps of a dataset: cached once per image
  (:class:`~contrastive_landmarks.train.feature_cache.CachedFeatures`), or the backbone run on the images (on TPS
  pairs ``(x, g x)`` with their correspondence grid when warping);
- :func:`batch_loss` / :func:`mean_loss`: the spatially contrastive loss (Eq. 3,
  :func:`contrastive_landmarks.losses.spatial_contrastive_loss`) of a batch of projected maps, and its mean over a
  dataset; :func:`projector_loss` is that mean as a public score;
- :func:`as_dataset`, :func:`pair_size`, :func:`warp_params`: the inputs as :func:`fit_projector` takes them.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from ..device import resolve_device
from ..hypercolumn import Hypercolumn, head_maps
from ..losses import spatial_contrastive_loss
from ..projector import SpatialProjector
from ..tps import TPSParams, make_pair
from .feature_cache import CachedFeatures, FeatureCache
from .features import check_dataset, collate, eval_mode, index_batches, module_device

__all__ = [
    "FeatureSource",
    "as_dataset",
    "batch_loss",
    "eq3_options",
    "mean_loss",
    "pair_size",
    "projector_loss",
    "warn_if_cache_too_small",
    "warp_params",
]


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


def as_dataset(data: Any, what: str) -> Any:
    """``data`` as a checked dataset of sample dicts (a ``(M, 3, H, W)`` tensor wrapped); ``what`` names it."""
    if isinstance(data, Tensor):
        data = _Images(data)
    check_dataset(data, what)
    return data


def pair_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """The loss grid ``(S_h, S_w)`` of ``S`` or ``(S_h, S_w)`` (positive ints)."""
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    size = tuple(size)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"size must be a positive int or (h, w), got {size!r}")
    return size  # type: ignore[return-value]


class FeatureSource:
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
    """``(B, d, S_h, S_w)`` projected descriptors of ``(B, C_s, h_s, w_s)`` stage maps: what the projector reads
    when the fitted model predicts (the per-stage normalised hypercolumn with ``normalize=True``)."""
    return projector(head_maps([m.float() for m in maps], size, normalize=normalize), size)


def batch_loss(
    projector: SpatialProjector,
    features: Hypercolumn,
    source: FeatureSource,
    idx: Tensor,
    generator: torch.Generator | None,
    size: tuple[int, int],
    loss_kwargs: dict,
) -> Tensor:
    """The Eq. 3 loss (a scalar) of the samples at ``idx`` (``(B,)``), on a ``size`` grid; warps (when the source
    warps) drawn from ``generator``; ``loss_kwargs``: :func:`eq3_options`."""
    maps1, maps2, grid = source.batch(idx, generator)
    f1 = _project(projector, maps1, size, features.normalize)
    f2 = None if maps2 is None else _project(projector, maps2, size, features.normalize)
    return spatial_contrastive_loss(f1, f2, grid, image_size=source.image_size, **loss_kwargs)


@torch.no_grad()
def mean_loss(
    projector: SpatialProjector,
    features: Hypercolumn,
    source: FeatureSource,
    batch_size: int,
    size: tuple[int, int],
    loss_kwargs: dict,
    seed: int,
) -> float:
    """:func:`batch_loss` averaged over every sample of ``source`` (no gradients, the projector in eval mode
    meanwhile); warps drawn from ``seed``, so the same pairs every call."""
    was_training = projector.training
    projector.eval()
    generator = torch.Generator().manual_seed(seed)  # the same validation pairs every time
    total = 0.0
    for idx in index_batches(len(source), batch_size):
        total += float(batch_loss(projector, features, source, idx, generator, size, loss_kwargs)) * len(idx)
    projector.train(was_training)
    return total / len(source)


def warn_if_cache_too_small(cache: FeatureCache, count: int) -> None:
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


def warp_params(warp: bool | TPSParams) -> TPSParams | None:
    """The TPS distribution of ``warp`` (``True``: the default :class:`TPSParams`), ``None`` for ``x' = x``."""
    if warp is True:
        return TPSParams()
    if warp is False or warp is None:
        return None
    if not isinstance(warp, TPSParams):
        raise TypeError(f"warp must be a bool or TPSParams, got {type(warp).__name__}")
    return warp


def eq3_options(temperature: float, distance_power: float, implementation: str) -> dict:
    """The keyword arguments of :func:`~contrastive_landmarks.losses.spatial_contrastive_loss` a fit uses."""
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
    data = as_dataset(data, "data")
    grid = pair_size(size)
    device = module_device(features, None if device is None else resolve_device(device))
    features.to(device)
    projector.to(device)
    with eval_mode(features), eval_mode(projector):
        source = FeatureSource(features, data, device, batch_size, None, warp_params(warp))
        return mean_loss(
            projector,
            features,
            source,
            batch_size,
            grid,
            eq3_options(temperature, distance_power, implementation),
            seed,
        )
