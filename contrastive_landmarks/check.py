"""Checks of what users pass in, raising errors that name the argument or the file (as ``kornia.core.check``).

Images everywhere in this library are RGB, channels first, in ``[0, 1]``:

- ``float32`` (or ``float16`` / ``bfloat16`` / ``float64``: cast to the model's dtype);
- ``uint8`` (0..255): converted to float and divided by 255;
- other integer or bool dtypes: refused (:class:`TypeError`), the scale is unknown;
- NaN or infinite values: refused (:class:`ValueError`);
- float values clearly outside ``[0, 1]`` (below ``-0.5`` or above ``1.5``): refused (:class:`ValueError`)
  with the likely fix in the message (0..255 images: divide by 255; images already normalised with a
  mean and std: pass the raw ones, the model normalises them itself). Small overshoots (interpolation,
  colour jitter) are accepted as they are.

The checks that read values (finiteness, range) are skipped while ``torch.compile`` traces.

:func:`content_problem` recognises inputs that cannot show an object at all (a single colour; pixels
that do not correlate with their neighbours, as uniform noise) so that ``detect`` can say so instead of
returning a plausible layout without a word.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "IMAGE_RANGE_TOLERANCE",
    "WEIGHT_SUFFIXES",
    "as_image_list",
    "check_image_values",
    "check_images",
    "content_problem",
    "looks_like_path",
    "size_pair",
    "to_float_images",
]

#: How far outside ``[0, 1]`` float images may stray before they are refused as mis-scaled.
IMAGE_RANGE_TOLERANCE = 0.5
#: Images whose values span less than this (in ``[0, 1]`` units) are one colour: blank.
BLANK_RANGE = 2 / 255
#: Below this correlation of horizontally or vertically adjacent pixels an image is noise: natural images
#: give 0.67 or more (the lowest of 1,500 faces, animals and frames of the development data; 0.81 for a
#: face at 16x16), uniform noise about 0.
NOISE_CORRELATION = 0.25
#: File suffixes that make a name a path rather than a model or repository name.
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".tar", ".bin", ".ckpt", ".json")


def _shape(images: object) -> str:
    return str(tuple(images.shape)) if isinstance(images, Tensor) else type(images).__name__


def check_images(images: object, name: str = "images", *, ndim: int = 4, allow_uint8: bool = True) -> None:
    """Type, rank, channels and dtype of an image batch ``(B, 3, H, W)`` (or one image ``(3, H, W)``, ``ndim=3``).

    Raises:
        TypeError: not a tensor, or a dtype that is neither floating point nor (if allowed) ``uint8``.
        ValueError: wrong number of dimensions or channels; an empty image.
    """
    layout = "(B, 3, H, W)" if ndim == 4 else "(3, H, W)"
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(images).__name__}")
    if images.ndim != ndim:
        hint = ""
        if ndim == 4 and images.ndim == 3:
            hint = f"; for one image pass {name}[None] (or a list of (3, H, W) images to LandmarkModel)"
        elif ndim == 4 and images.ndim == 2:
            hint = "; a grayscale image needs a channel and a batch dimension: x[None, None].expand(-1, 3, -1, -1)"
        raise ValueError(f"{name} must have shape {layout}, got {tuple(images.shape)} ({images.ndim}-D){hint}")
    channels = images.shape[-3]
    if channels != 3:
        hint = ""
        if images.shape[-1] == 3:
            hint = (
                f"; it looks channels-last (H, W, 3): use {name}.permute(0, 3, 1, 2)"
                if ndim == 4
                else (f"; it looks channels-last (H, W, 3): use {name}.permute(2, 0, 1)")
            )
        elif channels == 1:
            hint = "; convert grayscale with .expand(-1, 3, -1, -1)" if ndim == 4 else "; use .expand(3, -1, -1)"
        elif channels == 4:
            hint = "; drop the alpha channel"
        raise ValueError(
            f"{name} must have 3 channels (RGB) in dim {ndim - 3}, got {channels} in shape {tuple(images.shape)}{hint}"
        )
    if images.shape[-1] == 0 or images.shape[-2] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(images.shape)}")
    if images.is_floating_point():
        return
    if images.dtype == torch.uint8 and allow_uint8:
        return
    accepted = "floating point or uint8 (0..255)" if allow_uint8 else "floating point"
    raise TypeError(f"{name} must be {accepted}, got {images.dtype}; scale integer images to [0, 1] floats")


def _compiling() -> bool:
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)  # torch >= 2.3
    return bool(is_compiling()) if is_compiling is not None else False


def check_image_values(images: Tensor, name: str = "images") -> None:
    """Refuse NaN / infinite values and float images that are not in ``[0, 1]`` (see the module docs)."""
    if _compiling() or not images.is_floating_point() or images.numel() == 0:
        return
    finite = torch.isfinite(images)
    if not bool(finite.all()):
        nan = int(torch.isnan(images).sum())
        inf = int((~finite).sum()) - nan
        first = tuple(int(i) for i in (~finite).nonzero()[0].tolist())
        raise ValueError(
            f"{name} contains {nan} NaN and {inf} infinite values (the first at index {first}); "
            "check the image decoding / preprocessing or drop those images"
        )
    low, high = (float(v) for v in torch.aminmax(images.detach()))
    if low >= -IMAGE_RANGE_TOLERANCE and high <= 1 + IMAGE_RANGE_TOLERANCE:
        return
    message = f"{name} must be float images in [0, 1], got values in [{low:.4g}, {high:.4g}]"
    if low >= 0 and high > 1 + IMAGE_RANGE_TOLERANCE:
        message += f": they look like 0..255 pixel values; divide by 255 ({name} / 255) or pass uint8 images"
    else:
        message += (
            ": if they were normalised with a mean and std already, pass the unnormalised [0, 1] images "
            "(the model applies its own mean/std); if they are 0..255 pixel values, divide by 255"
        )
    raise ValueError(message)


def to_float_images(images: Tensor, dtype: torch.dtype, name: str = "images") -> Tensor:
    """Checked ``[0, 1]`` images in ``dtype``: ``uint8`` divided by 255, other floats cast.

    Args:
        images: ``(..., 3, H, W)`` float images in ``[0, 1]`` or ``uint8`` images in ``0..255``.
        dtype: the model's floating dtype.
        name: the argument's name, for error messages.
    """
    if images.dtype == torch.uint8:
        return images.to(dtype) / 255
    check_image_values(images, name)
    return images if images.dtype == dtype else images.to(dtype)


def content_problem(image: Tensor) -> str | None:
    """Why a ``(3, H, W)`` image cannot show an object, or None when it can.

    Returns:
        ``"blank (a single colour)"`` when its values span less than :data:`BLANK_RANGE`,
        ``"noise (neighbouring pixels uncorrelated)"`` when the correlation of adjacent pixels of its
        grey image is below :data:`NOISE_CORRELATION` along either axis, else ``None``.
    """
    grey = (image.float() / 255 if image.dtype == torch.uint8 else image.float()).mean(0)
    if float(grey.amax() - grey.amin()) < BLANK_RANGE:
        return "blank (a single colour)"
    grey = grey - grey.mean()
    for a, b in ((grey[:, 1:], grey[:, :-1]), (grey[1:], grey[:-1])):
        norm = ((a * a).sum() * (b * b).sum()).sqrt().clamp_min(1e-12)
        if a.numel() and float((a * b).sum() / norm) < NOISE_CORRELATION:
            return "noise (neighbouring pixels uncorrelated)"
    return None


def looks_like_path(name: str | os.PathLike, *, repo_ids: bool = False) -> bool:
    """Whether ``name`` was meant as a local path (rather than a model name or a Hub repo id).

    ``/``, ``./``, ``../``, ``~`` prefixes, backslashes, a weights / JSON suffix and (unless
    ``repo_ids``) any ``/`` make it a path. With ``repo_ids=True`` an ``org/name`` with one slash counts
    as a path only when ``org`` is an existing local directory.
    """
    if isinstance(name, os.PathLike):
        return True
    text = str(name)
    if text.startswith(("/", ".", "~")) or "\\" in text or text.lower().endswith(WEIGHT_SUFFIXES):
        return True
    if "/" not in text:
        return False
    if not repo_ids or text.count("/") > 1:
        return True
    return Path(text.split("/")[0]).is_dir()


def as_image_list(images: Tensor | Sequence[Tensor], name: str = "images") -> list[Tensor] | Tensor:
    """A batch tensor checked as ``(B, 3, H, W)``, or a list of tensors each checked as ``(3, H, W)``."""
    if isinstance(images, Tensor):
        check_images(images, name)
        return images
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError(f"{name} is an empty list; pass at least one (3, H, W) image")
        for index, image in enumerate(images):
            check_images(image, f"{name}[{index}]", ndim=3)
        return list(images)
    raise TypeError(f"{name} must be a (B, 3, H, W) tensor or a list of (3, H, W) tensors, got {_shape(images)}")


def size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``S`` -> ``(S, S)``; ``(H, W)`` -> ``(H, W)`` as ints; anything else raises a :class:`ValueError`."""
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"size must be an int or (H, W), got {size}")
    return size
