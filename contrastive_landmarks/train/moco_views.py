"""Batched MoCo view augmentations (the authors' recipe), as tensor ops on whole batches.

Every transform takes a batch ``(B, 3, H, W)`` of float images in ``[0, 1]`` and draws its random
parameters per sample from an explicit :class:`torch.Generator` (on the CPU; pixels stay on the
batch's device), so the views of a batch depend only on the generator's seed -- which is what makes a
resumed run bit-identical to an uninterrupted one, whatever the number of data workers.

The recipe (reference notes §4, "Faces"), applied to each view independently:

1. :func:`jpeg_noise` -- rescale to a random square size ``max(0.8 W, W (1 + 0.5 N(0, 1)))``,
   JPEG-compress at a quality drawn uniformly from ``[30, 98]``, resize back. The JPEG round trip is
   simulated exactly up to entropy coding (which is lossless): YCbCr, 4:2:0 chroma subsampling,
   8x8 DCT, quantisation with the IJG tables scaled by quality (as libjpeg/Pillow), inverse.
2. :func:`random_resized_crop` -- scale ``(0.2, 1)``, aspect ``(3/4, 4/3)``, torchvision's sampling.
3. :func:`color_jitter` -- brightness, contrast, saturation ``0.4`` each (no hue), random order per sample.
4. :func:`pca_lighting` -- AlexNet lighting noise, ``alpha ~ N(0, 0.1)``, ImageNet eigenvectors.
5. normalise with the preset's mean/std, then a fixed border crop (faces: 20 px, 136 -> 96).

MoCo v2's Gaussian blur is available (:func:`gaussian_blur`, ``blur=True``). There is no flip,
grayscale or TPS in the authors' recipe.

The ``animals`` preset is for a user's own footage (whole video frames of an animal, often grey): no
border crop (the animal is not centred and aligned as a face is), no PCA lighting (it tints grey frames
with ImageNet's colour axes), no JPEG noise (the frames come from one camera and codec), Gaussian blur on
(MoCo v2), ImageNet statistics, 128 px (small parts of a frame need more pixels than a face crop).
The ops themselves are :mod:`.image_ops`; this module has the recipe's presets and :class:`MoCoAugment`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..hub import CELEBA_MEAN, CELEBA_STD
from ..preprocessing import IMAGENET_MEAN, IMAGENET_STD
from .image_ops import color_jitter, gaussian_blur, jpeg_compress, jpeg_noise, pca_lighting, random_resized_crop

__all__ = [
    "PRESETS",
    "MoCoAugment",
    "Preset",
    "color_jitter",
    "gaussian_blur",
    "get_preset",
    "jpeg_compress",
    "jpeg_noise",
    "pca_lighting",
    "random_resized_crop",
]


# -- presets and the module ----------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    """Image statistics and framing of a pretraining recipe.

    Attributes:
        name: ``faces``, ``birds`` or ``generic``.
        image_size: network input side (after the border crop).
        border: pixels removed from each side after augmentation (faces: 20 at 96 px), scaled with
            ``image_size`` when that is changed.
        mean, std: normalisation (and what the exported backbone's config records).
        celeba_crop: pre-crop CelebA aligned images (178x218) to rows 30..208 before resizing.
        jpeg, blur, pca_std: the recipe's JPEG noise, Gaussian blur and PCA lighting std (0: off).
        min_scale: RandomResizedCrop's smallest area fraction (MoCo's 0.2; animals 0.7: a whole frame of one
            rig, where small crops mostly miss the animal, docs/notes/2026-12-benchmarks.md, "Milder crops").
    """

    name: str
    image_size: int
    border: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    celeba_crop: bool = False
    jpeg: bool = True
    blur: bool = False
    pca_std: float = 0.1
    min_scale: float = 0.2

    @property
    def resize(self) -> int:
        """Side images are squashed to before augmentation (faces: 136)."""
        return self.image_size + 2 * self.border


PRESETS: dict[str, Preset] = {
    "faces": Preset("faces", 96, 20, CELEBA_MEAN, CELEBA_STD, celeba_crop=True),
    "birds": Preset("birds", 96, 0, IMAGENET_MEAN, IMAGENET_STD),
    "generic": Preset("generic", 64, 0, IMAGENET_MEAN, IMAGENET_STD),
    "animals": Preset(
        "animals", 128, 0, IMAGENET_MEAN, IMAGENET_STD, jpeg=False, blur=True, pca_std=0.0, min_scale=0.7
    ),
}


def get_preset(name: str, image_size: int | None = None, border: int | None = None) -> Preset:
    """A preset, optionally at another input size (the border scales with it unless given).

    >>> get_preset("faces").resize, get_preset("faces", 64).resize
    (136, 90)
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    base = PRESETS[name]
    size = base.image_size if image_size is None else int(image_size)
    if size < 8:
        raise ValueError(f"image_size must be at least 8, got {size}")
    if border is None:
        border = round(base.border * size / base.image_size)
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    return dataclasses.replace(base, image_size=size, border=int(border))


class MoCoAugment(nn.Module):
    """Two-view augmentation of a batch for MoCo (see the module docstring for the recipe).

    Args:
        image_size: output side (after the border crop).
        border: fixed border removed after augmenting at ``image_size + 2 border``.
        mean, std: output normalisation.
        jpeg: apply :func:`jpeg_noise`.
        scale: RandomResizedCrop area range.
        jitter: brightness/contrast/saturation strength.
        pca_std: lighting noise std (0 disables).
        blur: MoCo v2 Gaussian blur (sigma ``(0.1, 2.0)`` scaled by ``size / 224``, p 0.5).

    Shape:
        - Input: ``(B, 3, R, R)`` uint8 or float in ``[0, 1]`` (``R = image_size + 2 border`` is
          expected; other sizes work, the crop resizes).
        - Output: ``(B, 3, image_size, image_size)`` normalised float32.
    """

    def __init__(
        self,
        image_size: int = 96,
        border: int = 20,
        *,
        mean: Sequence[float] = CELEBA_MEAN,
        std: Sequence[float] = CELEBA_STD,
        jpeg: bool = True,
        scale: tuple[float, float] = (0.2, 1.0),
        jitter: float = 0.4,
        pca_std: float = 0.1,
        blur: bool = False,
    ) -> None:
        super().__init__()
        self.image_size = int(image_size)
        self.border = int(border)
        self.jpeg = jpeg
        self.scale = tuple(scale)
        self.jitter = float(jitter)
        self.pca_std = float(pca_std)
        self.blur = blur
        self.register_buffer("mean", torch.tensor(tuple(mean), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(tuple(std), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_preset(cls, preset: Preset, **kwargs) -> MoCoAugment:
        """The preset's views; ``kwargs`` (e.g. ``jpeg=False``, ``scale=(0.5, 1)``) override its recipe."""
        recipe = {
            "jpeg": preset.jpeg,
            "blur": preset.blur,
            "pca_std": preset.pca_std,
            "scale": (preset.min_scale, 1.0),
            **kwargs,
        }
        return cls(preset.image_size, preset.border, mean=preset.mean, std=preset.std, **recipe)

    @property
    def resize(self) -> int:
        return self.image_size + 2 * self.border

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a (B, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        full = self.resize
        if self.jpeg:
            x = jpeg_noise(x, generator)
        x = random_resized_crop(x, full, generator, scale=self.scale)
        if self.jitter > 0:
            x = color_jitter(x, generator, brightness=self.jitter, contrast=self.jitter, saturation=self.jitter)
        if self.blur:
            x = gaussian_blur(x, generator, sigma=(0.1 * full / 224, 2.0 * full / 224))
        if self.pca_std > 0:
            x = pca_lighting(x, generator, std=self.pca_std)
        x = (x - self.mean) / self.std
        if self.border:
            x = x[..., self.border : full - self.border, self.border : full - self.border]
        return x.contiguous()

    def extra_repr(self) -> str:
        return (
            f"image_size={self.image_size}, border={self.border}, jpeg={self.jpeg}, scale={self.scale}, "
            f"jitter={self.jitter}, pca_std={self.pca_std}, blur={self.blur}"
        )
