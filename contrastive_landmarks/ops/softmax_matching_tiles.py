"""The streaming (flash-style) form of :func:`~contrastive_landmarks.ops.softmax_expected_distance` in plain
PyTorch: key tiles with an online softmax (:func:`streaming_forward`) and a backward that recomputes them
(:func:`streaming_backward`), with the L2 normalisation fused (:func:`inverse_norms`, :func:`normalize_backward_`).

Tiles are sized to :data:`STREAMING_TILE_BYTES` (:func:`tile_sizes`); only ``lse_u`` and ``L_u`` are kept for the
backward. Their autograd and the registered custom op are in :mod:`.softmax_matching_streaming`. Tested against
:func:`.softmax_matching_reference.softmax_expected_distance_reference`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .softmax_matching_reference import accumulation_dtype, distance_power

__all__ = [
    "STREAMING_TILE_BYTES",
    "inverse_norms",
    "normalize_backward_",
    "streaming_backward",
    "streaming_forward",
    "tile_sizes",
]

#: Bytes of one ``(batch, queries, keys)`` score tile of the streaming form. Each step keeps two or
#: three such tiles alive; staying well under glibc's 32 MB mmap threshold keeps them on the heap
#: (fresh mmapped pages are zero-filled at ~4 GB/s on the dev VM, see docs/performance.md, "Hypercolumn heads and
#: per-stage matching").
STREAMING_TILE_BYTES = 4 << 20

_NORM_EPS = 1e-12  # F.normalize's default


def _chunk(total: int, size: int) -> int:
    """The balanced chunk length for at most ``size``-long chunks of ``total``."""
    size = max(1, min(total, size))
    count = -(-total // size)
    return -(-total // count)


def tile_sizes(
    batch: int,
    n: int,
    m: int,
    itemsize: int,
    block_q: int | None,
    block_k: int | None,
    tile_bytes: int = STREAMING_TILE_BYTES,
) -> tuple[int, int, int]:
    """``(batch chunk, query chunk, key tile)`` with ``bb·bq·bk·itemsize <= tile_bytes`` (at least 1 each).

    Full key rows are preferred (no online-softmax rescaling) while they leave room for 64 queries.
    """
    budget = max(1, tile_bytes // itemsize)
    bk = _chunk(m, block_k if block_k else max(1, budget // 64))
    bq = _chunk(n, block_q if block_q else max(1, budget // bk))
    bb = _chunk(batch, max(1, budget // (bq * bk)))
    return bb, bq, bk


def _distance_tile(src: Tensor, kx: Tensor, ky: Tensor, sx: float, sy: float, power: float) -> Tensor:
    """``||(sx, sy) ∘ (src - (kx, ky))||^power`` for ``src`` ``(b, q, 2)`` and a key tile: ``(b, q, k)``."""
    dx = (src[..., 0:1] - kx) * sx
    dy = (src[..., 1:2] - ky) * sy
    return distance_power(dx.square_().add_(dy.square_()), power)


def _key_axes(m: int, key_w: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    index = torch.arange(m, device=device)
    return (index % key_w).to(dtype), torch.div(index, key_w, rounding_mode="floor").to(dtype)


def inverse_norms(x: Tensor | None, acc: torch.dtype, normalize: bool) -> Tensor | None:
    """``1 / max(||x_r||, eps)`` per row ``(B, R)`` (``F.normalize``'s scaling), or ``None``."""
    if x is None or not normalize:
        return None
    return torch.linalg.vector_norm(x, dim=-1, dtype=acc).clamp_min_(_NORM_EPS).reciprocal_()


def _rows(x: Tensor, inv: Tensor | None, b: slice, r: slice, acc: torch.dtype) -> Tensor:
    """Rows ``x[b, r]`` in the accumulation dtype, normalised on the fly when ``inv`` is given."""
    rows = x[b, r]
    if inv is not None:
        return rows * inv[b, r, None]  # promotes 16-bit rows to acc
    return rows.to(acc)


def normalize_backward_(grad: Tensor, x: Tensor, inv: Tensor, acc: torch.dtype, rows: int) -> Tensor:
    """In place: the gradient wrt ``x`` of ``y = x / max(||x||, eps)`` from ``grad`` (wrt ``y``), ``(B, R, d)``.

    ``(g - y (y·g)) / ||x||`` (only ``g / eps`` where the norm was clamped), ``rows`` rows at a time.
    """
    whole = slice(None)
    for r0 in range(0, x.shape[1], rows):
        r = slice(r0, min(x.shape[1], r0 + rows))
        y = _rows(x, inv, whole, r, acc)
        g = grad[:, r]
        dot = (g * y).sum(-1, keepdim=True)
        dot.mul_(inv[:, r, None] < 1 / _NORM_EPS)  # clamped rows: no projection
        g.sub_(y.mul_(dot)).mul_(inv[:, r, None])
    return grad


def streaming_forward(
    q: Tensor,
    k: Tensor | None,
    src: Tensor,
    key_w: int,
    sx: float,
    sy: float,
    scale: float,
    power: float,
    block_q: int | None = None,
    block_k: int | None = None,
    normalize: bool = False,
) -> tuple[Tensor, Tensor]:
    """Online softmax over key tiles. ``k=None``: the keys are the queries. Returns ``(L, lse)`` ``(B, N)``.

    Inputs may be strided and 16-bit: each query chunk and key tile is converted (and normalised) on the
    fly, so nothing of size ``B·N·d`` is copied.
    """
    acc = accumulation_dtype(q.dtype)
    keys = q if k is None else k
    batch, n, _ = q.shape
    m = keys.shape[1]
    bb, bq, bk = tile_sizes(batch, n, m, torch.finfo(acc).bits // 8, block_q, block_k)
    inv_q = inverse_norms(q, acc, normalize)
    inv_k = inv_q if k is None else inverse_norms(k, acc, normalize)
    src = src.to(acc)
    kx, ky = _key_axes(m, key_w, acc, q.device)
    shared_src = src.shape[0] == 1
    whole = slice(None)
    out = torch.empty(batch, n, dtype=acc, device=q.device)
    lse = torch.empty(batch, n, dtype=acc, device=q.device)
    for n0 in range(0, n, bq):
        rows = slice(n0, min(n, n0 + bq))
        q_chunk = _rows(q, inv_q, whole, rows, acc)  # (B, bq, d)
        run_max = torch.full(q_chunk.shape[:2], -torch.inf, dtype=acc, device=q.device)
        run_sum = torch.zeros(q_chunk.shape[:2], dtype=acc, device=q.device)
        run_dist = torch.zeros(q_chunk.shape[:2], dtype=acc, device=q.device)
        for m0 in range(0, m, bk):
            cols = slice(m0, min(m, m0 + bk))
            dist = _distance_tile(src[:, rows], kx[cols], ky[cols], sx, sy, power) if shared_src else None
            for b0 in range(0, batch, bb):
                bs = slice(b0, min(batch, b0 + bb))
                k_tile = _rows(keys, inv_k, bs, cols, acc)
                tile = torch.bmm(q_chunk[bs], k_tile.transpose(1, 2))
                if scale != 1.0:
                    tile.mul_(scale)
                d_tile = dist if shared_src else _distance_tile(src[bs, rows], kx[cols], ky[cols], sx, sy, power)
                new_max = torch.maximum(run_max[bs], tile.amax(-1))
                alpha = (run_max[bs] - new_max).exp_()
                tile.sub_(new_max[..., None]).exp_()
                run_sum[bs].mul_(alpha).add_(tile.sum(-1))
                run_dist[bs].mul_(alpha).add_(tile.mul_(d_tile).sum(-1))
                run_max[bs] = new_max
        out[:, rows] = run_dist / run_sum
        lse[:, rows] = run_max + run_sum.log()
    return out, lse


def streaming_backward(
    grad: Tensor,
    q: Tensor,
    k: Tensor | None,
    src: Tensor,
    out: Tensor,
    lse: Tensor,
    key_w: int,
    sx: float,
    sy: float,
    scale: float,
    power: float,
    block_q: int | None = None,
    block_k: int | None = None,
    normalize: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Recompute the tiles: ``dS = P ∘ (D - L_u) · scale · dL_u``, ``dq = dS k``, ``dk = dSᵀ q``.

    Gradients are accumulated in the accumulation dtype, in the memory layout of ``q`` / ``k``; with
    ``k=None`` both roles go into one buffer (returned as ``dq``, ``dk`` is ``None``). With ``normalize``
    they are carried through the normalisation in place.
    """
    acc = accumulation_dtype(q.dtype)
    self_keys = k is None
    keys = q if self_keys else k
    batch, n, _ = q.shape
    m = keys.shape[1]
    bb, bq, bk = tile_sizes(batch, n, m, torch.finfo(acc).bits // 8, block_q, block_k)
    inv_q = inverse_norms(q, acc, normalize)
    inv_k = inv_q if self_keys else inverse_norms(k, acc, normalize)
    src, grad, out, lse = src.to(acc), grad.to(acc), out.to(acc), lse.to(acc)
    kx, ky = _key_axes(m, key_w, acc, q.device)
    shared_src = src.shape[0] == 1
    whole = slice(None)
    dq = torch.zeros_like(q, dtype=acc)  # keeps q's strides (e.g. a transposed (B, d, N) feature map)
    dk = dq if self_keys else torch.zeros_like(k, dtype=acc)
    row_scale = grad * scale  # (B, N): dS rows are scaled by it, applied to q / dq rows instead of tiles
    for n0 in range(0, n, bq):
        rows = slice(n0, min(n, n0 + bq))
        q_chunk = _rows(q, inv_q, whole, rows, acc)
        q_scaled = q_chunk * row_scale[:, rows, None]
        dq_chunk = torch.zeros_like(q_chunk)
        for m0 in range(0, m, bk):
            cols = slice(m0, min(m, m0 + bk))
            dist = _distance_tile(src[:, rows], kx[cols], ky[cols], sx, sy, power) if shared_src else None
            for b0 in range(0, batch, bb):
                bs = slice(b0, min(batch, b0 + bb))
                k_tile = _rows(keys, inv_k, bs, cols, acc)
                tile = torch.bmm(q_chunk[bs], k_tile.transpose(1, 2))
                if scale != 1.0:
                    tile.mul_(scale)
                p = tile.sub_(lse[bs, rows, None]).exp_()
                d_tile = dist if shared_src else _distance_tile(src[bs, rows], kx[cols], ky[cols], sx, sy, power)
                w = p.mul_(d_tile - out[bs, rows, None])  # P ∘ (D - L), rows not yet scaled
                dq_chunk[bs].baddbmm_(w, k_tile)
                dk[bs, cols].baddbmm_(w.transpose(1, 2), q_scaled[bs])
        dq[:, rows].add_(dq_chunk.mul_(row_scale[:, rows, None]))
    if normalize:
        normalize_backward_(dq, q, inv_q, acc, bq)
        if not self_keys:
            normalize_backward_(dk, k, inv_k, acc, bq)
    return dq, (None if self_keys else dk)
