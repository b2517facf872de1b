"""Augmentation of the labelled views :func:`~contrastive_landmarks.train.fit_regressor` caches: warps and flips
that move the keypoints exactly with the pixels, on image batches before the frozen backbone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..tps import TPSParams, tps_augment

__all__ = ["Augment"]


@dataclass(frozen=True)
class Augment:
    """Random augmentation of each training view, applied to image batches before the backbone.

    Attributes:
        warp: a TPS + affine warp (:class:`~contrastive_landmarks.tps.TPSParams`), or ``None``.
        flip: mirror half the views horizontally, swapping the dataset's ``flip_pairs`` (only where the
            dataset defines them; a keypoint set without left/right names is never flipped).
    """

    warp: TPSParams | None = field(
        default_factory=lambda: TPSParams(
            warpsd_all=0.0005,
            warpsd_subset=0.0,
            transsd=0.05,
            scalesd=0.05,
            rotsd=5.0,
            im1_multiplier=1.0,
            im1_multiplier_aff=1.0,
        )
    )
    flip: bool = True

    @classmethod
    def none(cls) -> Augment:
        return cls(warp=None, flip=False)

    def __call__(
        self,
        images: Tensor,
        keypoints: Tensor,
        visible: Tensor,
        flip_pairs: Sequence[Sequence[int]] | None,
        generator: torch.Generator,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Augment ``(B, 3, H, W)`` images with their ``(B, N, 2)`` pixel keypoints and ``(B, N)`` visibility."""
        if self.flip and flip_pairs:
            flip = torch.rand(images.shape[0], generator=generator) < 0.5
            if bool(flip.any()):
                order = list(range(keypoints.shape[1]))
                for a, b in flip_pairs:
                    order[a], order[b] = order[b], order[a]
                images, keypoints, visible = images.clone(), keypoints.clone(), visible.clone()
                images[flip] = images[flip].flip(-1)
                mirrored = keypoints[flip][:, order]
                mirrored[..., 0] = images.shape[-1] - 1 - mirrored[..., 0]
                keypoints[flip] = mirrored
                visible[flip] = visible[flip][:, order]
        if self.warp is not None:
            images, keypoints = tps_augment(images, keypoints, self.warp, generator=generator)
            visible = visible & torch.isfinite(keypoints).all(-1)
            keypoints = torch.nan_to_num(keypoints)
        return images, keypoints, visible
