"""The naive reference of :func:`~contrastive_landmarks.ops.softmax_expected_distance` (materialises S, P and D),
and the input checks and definitions every implementation shares.

Every faster form (:mod:`.softmax_matching_streaming`, the Triton kernels) is tested against
:func:`softmax_expected_distance_reference`; :mod:`.softmax_matching` dispatches between them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "accumulation_dtype",
    "check_inputs",
    "distance_power",
    "key_coordinates",
    "normalize_rows",
    "softmax_expected_distance_reference",
    "spacing_pair",
]


def spacing_pair(value: float | Sequence[float], name: str) -> tuple[float, float]:
    """``s`` -> ``(s, s)``, ``(s_x, s_y)`` -> floats; anything else raises a :class:`ValueError` naming ``name``."""
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    value = tuple(float(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be a float or an (x, y) pair, got {value}")
    return value


def key_coordinates(
    key_size: tuple[int, int], *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """``(h·w, 2)`` ``(x, y) = (j, i)`` cell coordinates of the keys of an ``(h, w)`` grid, row-major.

    A cell ``(x_c, y_c)`` of an ``(h, w)`` map covering an ``(H, W)`` image is at image pixel
    ``((x_c + 1/2) W/w - 1/2, (y_c + 1/2) H/h - 1/2)`` (:func:`contrastive_landmarks.coords.cell_centers`);
    ``coords.normalized_to_pixels(points, (h, w))`` gives cell coordinates of normalised points.
    """
    h, w = key_size
    xs = torch.arange(w, dtype=dtype, device=device)
    ys = torch.arange(h, dtype=dtype, device=device)
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 inputs, float32 for everything else (16-bit inputs accumulate in float32)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_inputs(q: Tensor, k: Tensor, src_xy: Tensor | None, key_size: tuple[int, int]) -> None:
    """Raise a TypeError / ValueError naming the argument unless ``q``, ``k`` (and ``src_xy``) fit ``key_size``."""
    named = [("q", q), ("k", k)] + ([] if src_xy is None else [("src_xy", src_xy)])
    for name, t in named:
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if q.ndim != 3 or k.ndim != 3:
        raise ValueError(f"q must be (B, N, d) and k (B, M, d), got {tuple(q.shape)} and {tuple(k.shape)}")
    if q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(
            f"q (B, N, d) and k (B, M, d) must agree on B and d, got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if q.dtype != k.dtype:
        raise TypeError(f"q and k must have the same dtype, got {q.dtype} and {k.dtype}")
    if q.shape[1] == 0 or k.shape[1] == 0 or q.shape[0] == 0 or q.shape[2] == 0:
        raise ValueError(f"empty inputs: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if len(key_size) != 2 or any(int(s) < 1 for s in key_size) or int(key_size[0]) * int(key_size[1]) != k.shape[1]:
        raise ValueError(f"key_size (h, w) must multiply to the {k.shape[1]} keys, got {tuple(key_size)}")
    if q.device != k.device:
        raise ValueError(f"q and k must be on one device, got {q.device} and {k.device}")
    if src_xy is None:
        return
    if (
        src_xy.ndim != 3
        or src_xy.shape[-1] != 2
        or src_xy.shape[1] != q.shape[1]
        or src_xy.shape[0] not in (1, q.shape[0])
    ):
        raise ValueError(
            f"src_xy must be ({q.shape[0]} or 1, {q.shape[1]}, 2) (one (x, y) per query), got {tuple(src_xy.shape)}"
        )
    if src_xy.device != q.device:
        raise ValueError(f"src_xy must be on the device of q ({q.device}), got {src_xy.device}")


def distance_power(sq: Tensor, power: float) -> Tensor:
    """``sq^(power/2)`` (``sq`` a squared distance), cheap forms for the common powers; ``0^0 = 1``."""
    if power == 0.5:
        return sq.sqrt().sqrt()
    if power == 1.0:
        return sq.sqrt()
    if power == 2.0:
        return sq
    return sq.pow(power / 2)


def normalize_rows(x: Tensor) -> Tensor:
    """``F.normalize(x, dim=-1)`` (the definition the fused normalisation is tested against)."""
    import torch.nn.functional as F

    return F.normalize(x, dim=-1)


def softmax_expected_distance_reference(
    q: Tensor,
    k: Tensor,
    src_xy: Tensor,
    key_size: tuple[int, int],
    *,
    scale: float = 1.0,
    power: float = 0.5,
    spacing: float | Sequence[float] = 1.0,
    normalize: bool = False,
) -> Tensor:
    """Naive :func:`softmax_expected_distance`: materialises S, P and D (``(B, N, M)`` each).

    Computes in float32 for 16-bit inputs (float64 for float64); ``src_xy`` gets no gradient.

    Args:
        q: ``(B, N, d)`` query descriptors.
        k: ``(B, M, d)`` key descriptors, ``M = h·w`` row-major over ``key_size``.
        src_xy: ``(B, N, 2)`` or ``(1, N, 2)`` source ``(x, y)`` of each query in key-grid cells
            (key ``(i, j)`` is at ``(j, i)``).
        key_size: ``(h, w)`` of the key grid.
        scale: logit multiplier (``1/τ``).
        power: distance exponent ``γ`` (0.5: the DVE / authors' square root).
        spacing: ``(s_x, s_y)`` distance units per cell (e.g. ``(W/w, H/h)`` for image pixels).
        normalize: L2-normalise ``q`` and ``k`` along ``d`` first (``F.normalize``), so logits are
            ``scale · cos``.

    Returns:
        ``(B, N)`` expected distances ``L_u``, float32 (float64 for float64 inputs).
    """
    check_inputs(q, k, src_xy, key_size)
    acc = accumulation_dtype(q.dtype)
    qa, ka = q.to(acc), k.to(acc)
    if normalize:
        qa, ka = normalize_rows(qa), normalize_rows(ka)
    logits = torch.bmm(qa, ka.transpose(1, 2)) * scale  # (B, N, M)
    p = torch.softmax(logits, dim=-1)
    keys = key_coordinates(key_size, dtype=acc, device=q.device)  # (M, 2)
    (sx, sy), src = spacing_pair(spacing, "spacing"), src_xy.detach().to(acc)
    dx = (src[:, :, None, 0] - keys[:, 0]) * sx  # (B|1, N, M)
    dy = (src[:, :, None, 1] - keys[:, 1]) * sy
    dist = distance_power(dx * dx + dy * dy, power)  # (B|1, N, M)
    return (p * dist).sum(-1)
