"""The batched image ops training views are made of: simulated JPEG, random resized crops, colour jitter, PCA
lighting and Gaussian blur, as tensor ops on whole ``(B, 3, H, W)`` batches in ``[0, 1]``.

Each op draws its random parameters per sample from an explicit CPU :class:`torch.Generator` (pixels stay on
the batch's device). The recipe that chains them into MoCo's views, and its presets, is :mod:`.moco_views`;
the views of both labelled recipes (:mod:`.keypoint_views`) use the colour jitter, blur and grey ones.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "color_jitter",
    "gaussian_blur",
    "jpeg_compress",
    "jpeg_noise",
    "pca_lighting",
    "random_resized_crop",
    "resized_crop",
    "rgb_to_grayscale",
]

# IJG (JPEG Annex K) quantisation tables, luminance and chrominance.
_LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    *((99,) * 8 for _ in range(4)),
)
# AlexNet PCA lighting: eigenvalues and eigenvectors (columns) of ImageNet RGB covariance.
_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))
_GRAY = (0.2989, 0.587, 0.114)


def _check_batch(images: Tensor, name: str = "images") -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be floating point in [0, 1], got {images.dtype}")


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64) * (high - low) + low


# -- JPEG ------------------------------------------------------------------------------------
def _quant_tables(quality: Tensor) -> tuple[Tensor, Tensor]:
    """libjpeg's ``jpeg_quality_scaling``: quality ``(B,)`` in 1..100 -> ``(B, 8, 8)`` luma, chroma tables."""
    q = quality.to(torch.float64).clamp(1, 100)
    scale = torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q).view(-1, 1, 1)
    tables = []
    for base in (_LUMA_TABLE, _CHROMA_TABLE):
        t = torch.tensor(base, dtype=torch.float64)
        tables.append(torch.floor((t * scale + 50.0) / 100.0).clamp(1, 255))
    return tables[0], tables[1]


def _dct_matrix(dtype: torch.dtype, device: torch.device) -> Tensor:
    k = torch.arange(8, dtype=torch.float64).view(-1, 1)
    n = torch.arange(8, dtype=torch.float64).view(1, -1)
    d = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    d[0] = math.sqrt(1 / 8)
    return torch.kron(d, d).to(dtype=dtype, device=device)  # (64, 64) acting on row-major 8x8 blocks


def _blockwise(plane: Tensor, table: Tensor, dct: Tensor) -> Tensor:
    """Quantise ``(B, C, H, W)`` (H, W multiples of 8, level-shifted) through the 8x8 DCT with ``(B, 8, 8)`` tables."""
    b, c, h, w = plane.shape
    # one GEMM with the 64x64 separable transform kron(D, D) instead of many tiny 8x8 matmuls
    blocks = plane.reshape(b, c, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(b, -1, 64)
    coef = blocks @ dct.T
    table = table.to(plane).view(b, 1, 64)
    coef = torch.round(coef / table) * table
    blocks = (coef @ dct).view(b, c, h // 8, w // 8, 8, 8)
    return blocks.permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)


def jpeg_compress(images: Tensor, quality: Tensor | int) -> Tensor:
    """Simulate a baseline JPEG round trip (4:2:0, IJG tables) of a batch, per-sample quality.

    Matches Pillow's ``save(format="JPEG", quality=q)`` + decode up to the rounding of libjpeg's
    integer DCT and its chroma filters (a small fraction of the compression error itself).

    Args:
        images: ``(B, 3, H, W)`` float in ``[0, 1]`` (any size; padded internally by edge replication).
        quality: an int, or ``(B,)`` ints in ``1..100``.

    Returns:
        ``(B, 3, H, W)`` float in ``[0, 1]``, quantised to 1/255 steps like a decoded image.
    """
    _check_batch(images)
    b, _, h, w = images.shape
    quality = torch.as_tensor(quality)
    if quality.numel() == 1:
        quality = quality.reshape(1).expand(b)
    if quality.shape != (b,):
        raise ValueError(f"quality must be an int or have shape ({b},), got {tuple(quality.shape)}")
    compute = torch.float32 if images.dtype in (torch.float16, torch.bfloat16) else images.dtype
    x = torch.round(images.to(compute).clamp(0, 1) * 255.0)
    ph, pw = (-h) % 16, (-w) % 16
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    r, g, bl = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    cb = -0.168736 * r - 0.331264 * g + 0.5 * bl + 128.0
    cr = 0.5 * r - 0.418688 * g - 0.081312 * bl + 128.0
    luma_t, chroma_t = _quant_tables(quality.cpu())
    dct = _dct_matrix(compute, x.device)
    y = _blockwise(y.unsqueeze(1) - 128.0, luma_t, dct) + 128.0
    chroma = F.avg_pool2d(torch.stack([cb, cr], 1), 2)
    chroma = _blockwise(chroma - 128.0, chroma_t, dct) + 128.0
    y = torch.round(y).clamp(0, 255)
    chroma = torch.round(chroma).clamp(0, 255)
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False) - 128.0
    cb, cr = chroma.unbind(1)
    y = y.squeeze(1)
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    rgb = torch.round(rgb).clamp(0, 255)[..., :h, :w] / 255.0
    return rgb.to(images.dtype)


def jpeg_noise(
    images: Tensor,
    generator: torch.Generator | None = None,
    *,
    quality: tuple[int, int] = (30, 98),
    rescale_std: float = 0.5,
    min_rescale: float = 0.8,
    chunk: int = 16,
) -> Tensor:
    """DVE's ``JPEGNoise``: random square rescale, JPEG at a random quality, resize back.

    Per sample: size ``s = max(min_rescale W, W (1 + rescale_std N(0, 1)))``, quality uniform in
    ``quality`` (inclusive). Resizes are bilinear with antialiasing, like Pillow's. ``chunk`` is how
    many samples (of similar size) are compressed together; it does not change the result.

    Shape:
        ``(B, 3, H, W)`` -> ``(B, 3, H, W)``, float in ``[0, 1]``.
    """
    _check_batch(images)
    b, _, h, w = images.shape
    sizes = (
        torch.maximum(
            torch.full((b,), min_rescale * w, dtype=torch.float64),
            w * (1 + rescale_std * torch.randn(b, generator=generator, dtype=torch.float64)),
        )
        .round()
        .long()
        .clamp(min=8)
    )
    q = torch.randint(quality[0], quality[1] + 1, (b,), generator=generator)
    out = torch.empty_like(images)
    # Samples sorted by size and compressed in chunks on a canvas of the chunk's largest size (edge-
    # replicated, so the JPEG blocks of each image are those of the image alone): batched work without
    # paying the batch's largest size for every sample.
    order = torch.argsort(sizes).tolist()
    for start in range(0, b, chunk):
        members = order[start : start + chunk]
        side = int(sizes[members].max())
        side += (-side) % 16
        canvas = images.new_empty(len(members), 3, side, side)
        for k, i in enumerate(members):
            s = int(sizes[i])
            scaled = F.interpolate(images[i : i + 1], size=(s, s), mode="bilinear", align_corners=False, antialias=True)
            canvas[k : k + 1] = F.pad(scaled, (0, side - s, 0, side - s), mode="replicate")
        canvas = jpeg_compress(canvas, q[members])
        for k, i in enumerate(members):
            s = int(sizes[i])
            out[i : i + 1] = F.interpolate(
                canvas[k : k + 1, :, :s, :s], size=(h, w), mode="bilinear", align_corners=False, antialias=True
            )
    return out.clamp_(0, 1)


# -- geometry --------------------------------------------------------------------------------
def _crop_boxes(
    b: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None,
    attempts: int = 10,
) -> Tensor:
    """torchvision's ``RandomResizedCrop.get_params``, batched: ``(B, 4)`` boxes ``(left, top, w, h)`` in pixels."""
    area = height * width
    target = area * _uniform(b * attempts, scale[0], scale[1], generator).view(b, attempts)
    log_ratio = _uniform(b * attempts, math.log(ratio[0]), math.log(ratio[1]), generator).view(b, attempts)
    aspect = torch.exp(log_ratio)
    cw = torch.round(torch.sqrt(target * aspect))
    ch = torch.round(torch.sqrt(target / aspect))
    ok = (cw > 0) & (cw <= width) & (ch > 0) & (ch <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((b,), -1))
    u = torch.rand(b, 2, generator=generator, dtype=torch.float64)
    # fallback: whole image with the aspect clamped into range (torchvision's central crop)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    idx = first.clamp(min=0).view(-1, 1)
    w_sel = torch.where(first >= 0, cw.gather(1, idx).squeeze(1), torch.full((b,), float(fw), dtype=torch.float64))
    h_sel = torch.where(first >= 0, ch.gather(1, idx).squeeze(1), torch.full((b,), float(fh), dtype=torch.float64))
    left = torch.where(first >= 0, torch.floor(u[:, 0] * (width - w_sel + 1)), torch.floor((width - w_sel) / 2))
    top = torch.where(first >= 0, torch.floor(u[:, 1] * (height - h_sel + 1)), torch.floor((height - h_sel) / 2))
    return torch.stack([left, top, w_sel, h_sel], 1)


def resized_crop(images: Tensor, boxes: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Crop per-sample pixel boxes ``(B, 4)`` ``(left, top, w, h)`` and resize to ``size`` (bilinear).

    Box edges are pixel edges (a box ``(0, 0, W, H)`` is the whole image), as torchvision.

    Shape:
        ``(B, C, H, W)`` -> ``(B, C, size, size)``.
    """
    b, _, h, w = images.shape
    out_h, out_w = (size, size) if isinstance(size, int) else size
    boxes = boxes.to(torch.float64)
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = boxes[:, 2] / w
    theta[:, 0, 2] = (2 * boxes[:, 0] + boxes[:, 2]) / w - 1
    theta[:, 1, 1] = boxes[:, 3] / h
    theta[:, 1, 2] = (2 * boxes[:, 1] + boxes[:, 3]) / h - 1
    dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    grid = F.affine_grid(theta.to(dtype), [b, 1, out_h, out_w], align_corners=False).to(images.device)
    return F.grid_sample(images.to(dtype), grid, mode="bilinear", padding_mode="border", align_corners=False).to(
        images.dtype
    )


def random_resized_crop(
    images: Tensor,
    size: int | tuple[int, int],
    generator: torch.Generator | None = None,
    *,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Tensor:
    """``RandomResizedCrop(size, scale, ratio)`` for each sample of a batch.

    Shape:
        ``(B, C, H, W)`` -> ``(B, C, size, size)``.
    """
    _check_batch(images)
    if not (0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
    boxes = _crop_boxes(images.shape[0], images.shape[2], images.shape[3], scale, ratio, generator)
    return resized_crop(images, boxes, size)


# -- photometric -------------------------------------------------------------------------------
def rgb_to_grayscale(images: Tensor) -> Tensor:
    """``(B, 1, H, W)`` luma of ``(B, 3, H, W)`` RGB images (ITU-R BT.601 weights, as torchvision)."""
    weights = images.new_tensor(_GRAY).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def color_jitter(
    images: Tensor,
    generator: torch.Generator | None = None,
    *,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
) -> Tensor:
    """torchvision's ``ColorJitter(brightness, contrast, saturation)`` (no hue), per sample.

    Factors are uniform in ``[1 - s, 1 + s]``; the three operations run in a random order per sample
    and clamp to ``[0, 1]`` after each, as torchvision.

    Shape:
        ``(B, 3, H, W)`` -> ``(B, 3, H, W)``.
    """
    _check_batch(images)
    b = images.shape[0]
    strengths = (brightness, contrast, saturation)
    factors = torch.stack([_uniform(b, max(0.0, 1 - s), 1 + s, generator) for s in strengths], 1)
    order = torch.argsort(torch.rand(b, 3, generator=generator), dim=1)
    factors = factors.to(images).view(b, 3, 1, 1, 1)
    # group the samples by their order (at most 6 groups): each operation then runs once per sample
    keys = (order * torch.tensor([9, 3, 1])).sum(1)
    out = torch.empty_like(images)
    for key in torch.unique(keys).tolist():
        members = (keys == key).nonzero().squeeze(1).to(images.device)
        x = images.index_select(0, members)
        f = factors.index_select(0, members)
        for op in order[int((keys == key).nonzero()[0, 0])].tolist():
            if op == 0:
                x = (x * f[:, 0]).clamp_(0, 1)
            elif op == 1:
                mean = rgb_to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
                x = (f[:, 1] * x + (1 - f[:, 1]) * mean).clamp_(0, 1)
            else:
                x = (f[:, 2] * x + (1 - f[:, 2]) * rgb_to_grayscale(x)).clamp_(0, 1)
        out.index_copy_(0, members, x)
    return out


def pca_lighting(images: Tensor, generator: torch.Generator | None = None, *, std: float = 0.1) -> Tensor:
    """AlexNet PCA lighting noise: add ``eigvec @ (alpha * eigval)``, ``alpha ~ N(0, std)``, per sample.

    Shape:
        ``(B, 3, H, W)`` -> ``(B, 3, H, W)`` (not clamped, as the authors' ``PcaAug``).
    """
    _check_batch(images)
    b = images.shape[0]
    alpha = torch.randn(b, 3, generator=generator, dtype=torch.float64) * std
    eigvec = torch.tensor(_PCA_EIGVEC, dtype=torch.float64)
    eigval = torch.tensor(_PCA_EIGVAL, dtype=torch.float64)
    rgb = (alpha * eigval) @ eigvec.T  # (B, 3): rgb[c] = sum_k eigvec[c, k] alpha[k] eigval[k]
    return images + rgb.to(images).view(b, 3, 1, 1)


def gaussian_blur(
    images: Tensor, generator: torch.Generator | None = None, *, sigma: tuple[float, float] = (0.1, 2.0), p: float = 0.5
) -> Tensor:
    """MoCo v2's random Gaussian blur: with probability ``p``, sigma uniform in ``sigma`` (pixels).

    Shape:
        ``(B, 3, H, W)`` -> ``(B, 3, H, W)``.
    """
    _check_batch(images)
    b, c, h, w = images.shape
    sigmas = _uniform(b, sigma[0], sigma[1], generator)
    apply = torch.rand(b, generator=generator, dtype=torch.float64) < p
    radius = max(1, min(math.ceil(3 * sigma[1]), (min(h, w) - 1) // 2))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets.view(1, -1) / sigmas.view(-1, 1)) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)
    identity = (offsets == 0).to(torch.float64).expand(b, -1)
    kernel = torch.where(apply.view(-1, 1), kernel, identity).to(images)
    weight = kernel.repeat_interleave(c, 0)  # (B*C, k)
    x = images.reshape(1, b * c, h, w)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), weight.view(b * c, 1, 1, -1), groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), weight.view(b * c, 1, -1, 1), groups=b * c)
    return x.view(b, c, h, w)
