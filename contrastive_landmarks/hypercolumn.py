"""Hypercolumns: stage maps upsampled to one grid and stacked per pixel (paper §3.1).

Interpolation follows the authors: bilinear with ``align_corners=False``. Optional per-stage L2
normalisation (the authors' ``layer_wise_normalize``, used for matching) normalises each stage's
channel block at every location, so a dot product becomes a sum of per-stage cosines.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import Backbone
from .check import size_pair
from .configurable import Configurable
from .coords import pixels_to_normalized

__all__ = ["Hypercolumn", "head_maps", "hypercolumn", "normalize_stages", "sample_stages"]


def normalize_stages(features: Tensor, channels: Sequence[int], dim: int = 1, eps: float = 1e-12) -> Tensor:
    """L2-normalise each stage's block of channels separately.

    Args:
        features: hypercolumn features with the stacked channels in dimension ``dim``
            (e.g. ``(B, C, H, W)`` with ``dim=1`` or ``(B, K, C)`` with ``dim=-1``).
        channels: the block sizes ``C_s``, summing to ``C``.
    """
    if features.shape[dim] != sum(channels):
        raise ValueError(f"{features.shape[dim]} channels in dim {dim} do not split into {list(channels)}")
    blocks = torch.split(features, list(channels), dim=dim)
    return torch.cat([F.normalize(b, dim=dim, eps=eps) for b in blocks], dim=dim)


def hypercolumn(maps: Sequence[Tensor], size: int | Sequence[int] = 48, *, normalize: bool = False) -> Tensor:
    """Upsample every stage map to ``size`` and concatenate.

    Args:
        maps: ``(B, C_s, h_s, w_s)`` stage maps, in concatenation order.
        size: output grid ``S`` or ``(S_h, S_w)``.
        normalize: L2-normalise each stage block per location.

    Returns:
        ``(B, ΣC_s, S_h, S_w)``.
    """
    size = size_pair(size)
    blocks = []
    for m in maps:
        up = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        blocks.append(F.normalize(up, dim=1) if normalize else up)
    return torch.cat(blocks, dim=1)


def head_maps(maps: Sequence[Tensor], size: int | Sequence[int], *, normalize: bool) -> list[Tensor]:
    """What a linear head (projector, regressor) reads from a hypercolumn's stage maps, fitting and predicting.

    The stage maps themselves (the head upsamples them to its grid without building the hypercolumn), except
    with per-stage L2 normalisation (``normalize=True``): normalising each stage at every location does not
    commute with upsampling, so the normalised hypercolumn is built at ``size`` and given as the one map,
    ``[(B, ΣC_s, S_h, S_w)]``.
    """
    if normalize is True:
        return [hypercolumn(maps, size, normalize=True)]
    return list(maps)


def sample_stages(maps: Sequence[Tensor], points: Tensor, *, normalize: bool = False) -> Tensor:
    """Hypercolumn descriptors at arbitrary points, sampling each stage directly.

    Equal to bilinearly upsampling to any grid and reading the cells centred on ``points`` (the
    ``align_corners=False`` frame has the same normalised coordinates at every resolution), but
    never materialises a map.

    Args:
        maps: ``(B, C_s, h_s, w_s)`` stage maps.
        points: ``(B, K, 2)`` normalised ``(x, y)`` in ``[-1, 1]`` (see :mod:`contrastive_landmarks.coords`).
        normalize: L2-normalise each stage block.

    Returns:
        ``(B, K, ΣC_s)``.
    """
    if points.ndim != 3 or points.shape[-1] != 2 or points.shape[0] != maps[0].shape[0]:
        raise ValueError(f"points must be (B={maps[0].shape[0]}, K, 2), got {tuple(points.shape)}")
    grid = points.to(maps[0].dtype).unsqueeze(2)  # (B, K, 1, 2)
    blocks = []
    for m in maps:
        sampled = F.grid_sample(m, grid, mode="bilinear", padding_mode="border", align_corners=False)
        sampled = sampled.squeeze(-1).transpose(1, 2)  # (B, K, C_s)
        blocks.append(F.normalize(sampled, dim=-1) if normalize else sampled)
    return torch.cat(blocks, dim=-1)


def check_points(points: Tensor, image_size: tuple[int, int], batch: int, what: str = "points") -> None:
    """Raise a clear error for points of the wrong shape or outside the image."""
    if not isinstance(points, Tensor) or points.ndim != 3 or points.shape[-1] != 2:
        shape = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise ValueError(f"{what} must be a (B, K, 2) tensor of (x, y) pixels, got {shape}")
    if points.shape[0] != batch:
        raise ValueError(f"{what} has batch size {points.shape[0]} but the images have {batch}")
    height, width = image_size
    x, y = points[..., 0], points[..., 1]
    outside = (x < -0.5) | (x > width - 0.5) | (y < -0.5) | (y > height - 0.5) | ~torch.isfinite(points).all(-1)
    if bool(outside.any()):
        bad = points[outside][:3].tolist()
        raise ValueError(
            f"{int(outside.sum())} {what} lie outside the {width}x{height} image "
            f"(valid x in [-0.5, {width - 0.5}], y in [-0.5, {height - 0.5}]), e.g. {bad}"
        )


class Hypercolumn(Configurable, nn.Module):
    """A backbone's stage maps as a per-pixel hypercolumn.

    Args:
        backbone: a :class:`~contrastive_landmarks.Backbone` (see :func:`~contrastive_landmarks.load_backbone`).
        size: output grid, ``S`` or ``(S_h, S_w)`` (default 48, as in the paper); ``None`` gives
            the input resolution.
        normalize: L2-normalise each stage block per location (the authors' matching features).

    Shape:
        - Input: ``(B, 3, H, W)`` normalised images, any ``H, W`` the backbone accepts.
        - Output: ``(B, C, S_h, S_w)`` with ``C = Σ_s C_s`` (:attr:`channels`).

    Example:
        >>> from contrastive_landmarks import load_backbone, Hypercolumn
        >>> hc = Hypercolumn(load_backbone("test_resnet"), size=48)
        >>> hc.channels, tuple(hc(torch.randn(2, 3, 100, 100)).shape)
        (368, (2, 368, 48, 48))
    """

    config_fields = ("size", "normalize")  # besides the backbone, which has its own config

    def __init__(self, backbone: Backbone, size: int | Sequence[int] | None = 48, *, normalize: bool = False):
        super().__init__()
        self.backbone = backbone
        self.size = None if size is None else size_pair(size)
        self.normalize = normalize

    @property
    def channels(self) -> int:
        """Total number of channels ``Σ_s C_s`` (3840 for resnet50 conv2_x..conv5_x, 960 for resnet18)."""
        return sum(self.backbone.channels)

    @property
    def stage_channels(self) -> tuple[int, ...]:
        return tuple(self.backbone.channels)

    def output_size(self, images: Tensor) -> tuple[int, int]:
        return self.size if self.size is not None else (images.shape[-2], images.shape[-1])

    def stage_maps(self, images: Tensor) -> list[Tensor]:
        """The backbone's stage maps of *normalised* images, ``[(B, C_s, h_s, w_s)]``.

        A building block after normalisation; for ``[0, 1]`` images use :meth:`image_stage_maps`.
        """
        return self.backbone(images)

    def image_stage_maps(self, images: Tensor) -> list[Tensor]:
        """The library's one way from ``[0, 1]`` images to stage maps: the backbone's normalisation, then its stages.

        Args:
            images: ``(B, 3, H, W)`` in ``[0, 1]`` (any float dtype, or ``uint8`` in ``0..255``); normalised
                with the backbone's :attr:`~contrastive_landmarks.Backbone.preprocessing` mean and std
                (:meth:`~contrastive_landmarks.Backbone.normalize`, which refuses already-normalised input).

        Returns:
            one ``(B, C_s, h_s, w_s)`` map per stage, in the backbone's stage order (``C_s`` =
            :attr:`stage_channels`; ``h_s, w_s`` = ``H, W`` over the stage's stride, rounded up), not upsampled
            and not L2-normalised whatever :attr:`normalize` says; :func:`hypercolumn` stacks them.
            Gradients flow as usual (wrap in ``torch.no_grad()`` for frozen features).
        """
        return self.stage_maps(self.backbone.normalize(images))

    def forward(self, images: Tensor) -> Tensor:
        return hypercolumn(self.stage_maps(images), self.output_size(images), normalize=self.normalize)

    def sample(self, images: Tensor, points: Tensor) -> Tensor:
        """Hypercolumn descriptors at pixel ``points`` without materialising the full map.

        Args:
            images: ``(B, 3, H, W)``.
            points: ``(B, K, 2)`` ``(x, y)`` pixel coordinates in the input images.

        Returns:
            ``(B, K, C)``.
        """
        check_points(points, (images.shape[-2], images.shape[-1]), images.shape[0])
        normalized = pixels_to_normalized(points.to(images.dtype), (images.shape[-2], images.shape[-1]))
        return sample_stages(self.stage_maps(images), normalized, normalize=self.normalize)
