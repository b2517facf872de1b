"""Frozen-backbone features for the training code: its one place for "images -> stage maps".

- :func:`regressor_maps`: what a regressor on frozen features consumes: the stage maps of ``[0, 1]`` images
  (:meth:`~contrastive_landmarks.Hypercolumn.image_stage_maps`), or, for a hypercolumn with per-stage L2
  normalisation, the materialised hypercolumn (:func:`~contrastive_landmarks.hypercolumn.head_maps`).
- :class:`StageMapBank`: the stage maps, keypoints and visibility of a labelled set of *views* (each
  image ``copies`` times, each view augmented), as contiguous in-memory tensors: what
  :func:`~contrastive_landmarks.train.fit_regressor` trains on.
- :func:`collate`, :func:`index_batches`, :func:`eval_mode`, :func:`check_dataset`, :func:`module_device`:
  the batching and set-up helpers the fitting loops share.

Per-image stage maps under a byte budget, spilling to disk (:class:`FeatureCache`,
:class:`CachedFeatures`), are :mod:`.feature_cache`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..hypercolumn import head_maps

__all__ = ["StageMapBank", "check_dataset", "collate", "eval_mode", "index_batches", "module_device", "regressor_maps"]


@contextlib.contextmanager
def eval_mode(module: nn.Module | None) -> Iterator[None]:
    """Put ``module`` (and every submodule) in eval mode, restoring each one's own flag afterwards."""
    if module is None:
        yield
        return
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in modes:
            m.training = flag


def check_dataset(data: Any, what: str) -> None:
    """Raise a named error unless ``data`` is a non-empty indexable collection of samples."""
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise TypeError(f"{what} must be a Dataset or a sequence of sample dicts, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{what} is empty")


def module_device(module: nn.Module, device: torch.device | str | None = None) -> torch.device:
    """``device`` if given, else where ``module``'s parameters live (the CPU for a module without any)."""
    if device is not None:
        return torch.device(device)
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def index_batches(n: int, batch_size: int, order: Tensor | None = None) -> Iterator[Tensor]:
    """Consecutive ``batch_size`` slices of ``order`` (default ``arange(n)``)."""
    idx = torch.arange(n) if order is None else order
    for start in range(0, n, batch_size):
        yield idx[start : start + batch_size]


def collate(data: Any, indices: Sequence[int], *, labels: bool = True) -> dict[str, Tensor]:
    """Stack samples ``data[i]`` into ``{"image": (B, 3, H, W)[, "keypoints": (B, N, 2), "visible": (B, N)]}``.

    Raises:
        TypeError: a sample is not a dict with an ``image``.
        ValueError: labels are asked for and missing, or the images differ in size.
    """
    samples = [data[int(i)] for i in indices]
    for s in samples:
        if not isinstance(s, Mapping) or "image" not in s:
            raise TypeError(f"samples must be dicts with an 'image' (and 'keypoints', 'visible'), got {type(s)}")
        if labels and "keypoints" not in s:
            raise ValueError("training and validation samples need 'keypoints' ((N, 2) pixels)")
    shapes = {tuple(s["image"].shape) for s in samples}
    if len(shapes) != 1:
        raise ValueError(f"all images must share one size to be batched, got {sorted(shapes)}")
    out = {"image": torch.stack([torch.as_tensor(s["image"]) for s in samples]).float()}
    if labels:
        kp = torch.stack([torch.as_tensor(s["keypoints"], dtype=torch.float32) for s in samples])
        vis = [s.get("visible") for s in samples]
        out["keypoints"] = kp
        out["visible"] = (
            torch.ones(kp.shape[:2], dtype=torch.bool)
            if any(v is None for v in vis)
            else torch.stack([torch.as_tensor(v, dtype=torch.bool) for v in vis])
        )
    return out


@torch.no_grad()
def regressor_maps(features: nn.Module, images: Tensor) -> list[Tensor]:
    """What a regressor on frozen ``features`` trains and predicts on, for ``(B, 3, H, W)`` images in ``[0, 1]``.

    Normally the stage maps, ``features.image_stage_maps(images)`` (``[(B, C_s, h_s, w_s)]``, the library's one
    way from images to stage maps): the regressor upsamples them itself. The exception
    (:func:`~contrastive_landmarks.hypercolumn.head_maps`, which :class:`~contrastive_landmarks.LandmarkModel`
    calls too): a hypercolumn with per-stage L2 normalisation (``normalize=True``) gives the one materialised
    hypercolumn, ``[(B, ΣC_s, S_h, S_w)]`` at ``features.output_size``, because normalising each stage at every
    location does not commute with upsampling.

    ``features`` is a :class:`~contrastive_landmarks.Hypercolumn` (or anything with ``image_stage_maps``,
    ``normalize`` and ``output_size``, e.g. :class:`~contrastive_landmarks.evaluation.regression.StageSubset`).
    Runs under ``no_grad``; the caller sets eval mode.
    """
    return head_maps(features.image_stage_maps(images), features.output_size(images), normalize=features.normalize)


class StageMapBank:
    """Stage maps with keypoints of a set of labelled views, stacked in memory (float32).

    Attributes:
        maps: ``[(V, C_s, h_s, w_s)]`` per stage (channels-last), ``keypoints`` ``(V, N, 2)`` pixels,
        visible ``(V, N)``, image_size ``(H, W)``.
    """

    def __init__(self, maps: list[Tensor], keypoints: Tensor, visible: Tensor, image_size: tuple[int, int]):
        self.maps, self.keypoints, self.visible, self.image_size = maps, keypoints, visible, image_size

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        extract: Callable[[Tensor], list[Tensor]],
        data: Any,
        *,
        copies: int = 1,
        batch_size: int = 64,
        device: torch.device | str = "cpu",
        augment: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]] | None = None,
        augment_first: bool = True,
        bar=None,
    ) -> StageMapBank:
        """Views of every sample of ``data``: ``copies`` passes, each reading the samples again (a random
        dataset transform draws anew) and applying ``augment`` (all passes but the first unless
        ``augment_first``) before ``extract``."""
        if len(data) == 0:
            raise ValueError("no samples to compute features for")
        parts: list[list[Tensor]] = []
        kps, viss = [], []
        size = None
        for copy_index in range(copies):
            for idx in index_batches(len(data), batch_size):
                batch = collate(data, idx.tolist())
                images, kp, vis = batch["image"].to(device), batch["keypoints"].to(device), batch["visible"].to(device)
                if augment is not None and (copy_index > 0 or augment_first):
                    images, kp, vis = augment(images, kp, vis)
                if size is not None and tuple(images.shape[-2:]) != size:
                    raise ValueError(f"all images must share one size, got {size} and {tuple(images.shape[-2:])}")
                size = tuple(images.shape[-2:])
                parts.append([m.float() for m in extract(images)])
                kps.append(kp.float())
                viss.append(vis.bool() & torch.isfinite(kp).all(-1))
                if bar is not None:
                    bar.update(len(idx))
        maps = [
            torch.cat(stage).contiguous(memory_format=torch.channels_last) if stage[0].ndim == 4 else torch.cat(stage)
            for stage in zip(*parts)
        ]
        return cls(maps, torch.nan_to_num(torch.cat(kps)), torch.cat(viss), size)

    def __len__(self) -> int:
        return self.keypoints.shape[0]

    @property
    def channels(self) -> int:
        return sum(m.shape[1] for m in self.maps)

    @property
    def num_landmarks(self) -> int:
        return self.keypoints.shape[1]

    def take(self, idx: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """``(maps, keypoints, visible)`` of the views at ``idx``."""
        idx = idx.to(self.keypoints.device)
        return [m[idx] for m in self.maps], self.keypoints[idx], self.visible[idx]

    def channel_stats(
        self,
        batch_size: int = 64,
        *,
        transform: Callable[[list[Tensor]], list[Tensor] | Tensor] | None = None,
        limit: int | None = None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Per-map, per-channel mean and std over views and positions (accumulated in float64).

        Of the stage maps, or of ``transform(maps)`` (e.g. a projector's ``(B, d, S, S)`` output) on the first
        ``limit`` views.
        """
        sums: list[Tensor] = []
        squares: list[Tensor] = []
        counts: list[int] = []
        for idx in index_batches(len(self) if limit is None else min(limit, len(self)), batch_size):
            maps = self.take(idx)[0] if transform is None else transform(self.take(idx)[0])
            for s, m in enumerate([maps] if isinstance(maps, Tensor) else maps):
                block = m.double()
                if s == len(sums):
                    sums.append(torch.zeros(m.shape[1], dtype=torch.float64, device=m.device))
                    squares.append(torch.zeros_like(sums[s]))
                    counts.append(0)
                sums[s] += block.sum((0, 2, 3))
                squares[s] += block.pow(2).sum((0, 2, 3))
                counts[s] += m.shape[0] * m.shape[2] * m.shape[3]
        means = [total / count for total, count in zip(sums, counts)]
        stds = [
            (sq / count - mu**2).clamp_min(0).sqrt().clamp_min(1e-4) for sq, count, mu in zip(squares, counts, means)
        ]
        return [mu.float() for mu in means], [sd.float() for sd in stds]
