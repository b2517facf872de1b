"""Softmax matching between two descriptor sets: expected distance (Eq. 3/4) and soft-argmax.

For queries ``q_u`` (``N`` per image), keys ``k_v`` (``M`` per image, laid out on an ``(h, w)`` grid)
and a source point ``src_u`` per query::

    p(v|u) = softmax_v(scale · <q_u, k_v>)
    L_u    = Σ_v p(v|u) · ||spacing ∘ (src_u - xy(v))||^power

where ``xy(v) = (j, i)`` is computed from the key index ``v = i·w + j`` (no coordinate tensor is read):
``src_u`` is given in **key-grid cells** (column, row) and ``spacing = (s_x, s_y)`` converts cell
offsets to the distance unit (pixels per cell). Working in cells keeps ``src_u - xy(v)`` *exactly* zero
when ``src_u`` is itself a cell (``x' = x``), which matters because ``||·||^0.5`` turns a rounding error
``ε`` into ``√ε``. This is the DVE / Eq. 3 loss per query;
:func:`contrastive_landmarks.losses.spatial_contrastive_loss` builds it.

Implementations (same values, same gradients for ``q`` and ``k``):

- ``"naive"`` (:func:`softmax_expected_distance_reference`): materialises S, P and D (``B·N·M`` each).
- ``"streaming"``: plain PyTorch, tiles over queries and keys with an online softmax, saves only
  ``lse_u`` and ``L_u`` and recomputes the tiles in backward (FlashAttention-2 style); memory
  ``O(B·(N + M)·d)`` plus one tile.
- ``"triton"``: the same algorithm as fused Triton kernels (CUDA; the CPU interpreter in tests).

``src_xy`` is treated as data (no gradient flows to it): it is the warp ``g``, not a parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "key_coordinates",
    "softmax_expected_distance",
    "softmax_expected_distance_reference",
]

Implementation = Literal["auto", "naive", "streaming", "triton"]


def _pair_float(value: float | Sequence[float], name: str) -> tuple[float, float]:
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


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_inputs(q: Tensor, k: Tensor, src_xy: Tensor, key_size: tuple[int, int]) -> None:
    for name, t in (("q", q), ("k", k), ("src_xy", src_xy)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if q.ndim != 3 or k.ndim != 3:
        raise ValueError(f"q must be (B, N, d) and k (B, M, d), got {tuple(q.shape)} and {tuple(k.shape)}")
    if q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(f"q (B, N, d) and k (B, M, d) must agree on B and d, got {tuple(q.shape)} and "
                         f"{tuple(k.shape)}")
    if q.dtype != k.dtype:
        raise TypeError(f"q and k must have the same dtype, got {q.dtype} and {k.dtype}")
    if src_xy.ndim != 3 or src_xy.shape[-1] != 2 or src_xy.shape[1] != q.shape[1] or src_xy.shape[0] not in (
        1,
        q.shape[0],
    ):
        raise ValueError(f"src_xy must be ({q.shape[0]} or 1, {q.shape[1]}, 2) (one (x, y) per query), "
                         f"got {tuple(src_xy.shape)}")
    if len(key_size) != 2 or any(int(s) < 1 for s in key_size) or key_size[0] * key_size[1] != k.shape[1]:
        raise ValueError(f"key_size (h, w) must multiply to the {k.shape[1]} keys, got {tuple(key_size)}")
    if not (q.device == k.device == src_xy.device):
        raise ValueError(f"q, k and src_xy must be on one device, got {q.device}, {k.device}, {src_xy.device}")
    if q.shape[1] == 0 or k.shape[1] == 0 or q.shape[0] == 0:
        raise ValueError(f"empty inputs: q {tuple(q.shape)}, k {tuple(k.shape)}")


def _distance_power(sq: Tensor, power: float) -> Tensor:
    """``sq^(power/2)`` (``sq`` a squared distance), cheap forms for the common powers; ``0^0 = 1``."""
    if power == 0.5:
        return sq.sqrt().sqrt()
    if power == 1.0:
        return sq.sqrt()
    if power == 2.0:
        return sq
    return sq.pow(power / 2)


def softmax_expected_distance_reference(
    q: Tensor,
    k: Tensor,
    src_xy: Tensor,
    key_size: tuple[int, int],
    *,
    scale: float = 1.0,
    power: float = 0.5,
    spacing: float | Sequence[float] = 1.0,
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

    Returns:
        ``(B, N)`` expected distances ``L_u``, float32 (float64 for float64 inputs).
    """
    _check_inputs(q, k, src_xy, key_size)
    acc = _accumulation_dtype(q.dtype)
    logits = torch.bmm(q.to(acc), k.to(acc).transpose(1, 2)) * scale  # (B, N, M)
    p = torch.softmax(logits, dim=-1)
    keys = key_coordinates(key_size, dtype=acc, device=q.device)  # (M, 2)
    step = torch.tensor(_pair_float(spacing, "spacing"), dtype=acc, device=q.device)
    diff = (src_xy.detach().to(acc)[:, :, None, :] - keys) * step  # (B|1, N, M, 2)
    dist = _distance_power(diff.square().sum(-1), power)  # (B|1, N, M)
    return (p * dist).sum(-1)


def softmax_expected_distance(
    q: Tensor,
    k: Tensor,
    src_xy: Tensor,
    key_size: tuple[int, int],
    *,
    scale: float = 1.0,
    power: float = 0.5,
    spacing: float | Sequence[float] = 1.0,
    implementation: Implementation = "auto",
) -> Tensor:
    """``L_u = Σ_v softmax_v(scale·<q_u, k_v>) · ||src_u - xy(v)||^power`` for every query ``u``.

    Arguments and result as :func:`softmax_expected_distance_reference`; ``implementation`` picks
    ``"naive"``, ``"streaming"`` (plain PyTorch, flash-style), ``"triton"`` (CUDA) or ``"auto"``.
    """
    if implementation not in ("auto", "naive", "streaming", "triton"):
        raise ValueError(f"implementation must be 'auto', 'naive', 'streaming' or 'triton', got {implementation!r}")
    return softmax_expected_distance_reference(q, k, src_xy, key_size, scale=scale, power=power,
                                               spacing=spacing)
