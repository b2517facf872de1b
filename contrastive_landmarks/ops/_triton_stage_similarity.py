"""Triton kernel of :func:`~contrastive_landmarks.ops.stage_similarity` (imported lazily: needs ``triton``).

Per output location, gathers the four taps of every stage,
  L2-normalises each stage's interpolated vector and dots it with the queries (``tl.dot``), writing
  only ``(B, K, S_h·S_w)`` scores. Forward only.

The bilinear tap rule and the helpers are :mod:`._triton_upsample`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._triton_upsample import MAX_STAGES, block_size, check_dtype, nhwc, pad_stages, tap_sum

__all__ = ["stage_similarity_triton"]


@triton.jit
def _stage_score(
    acc,
    q_rows,
    k_mask,
    ptr,
    b,
    h,
    w,
    C,
    oi,
    oj,
    S_H,
    S_W,
    p_mask,
    eps,
    NORMALIZE: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """``acc + <q_k, up(map)(p) / ‖up(map)(p)‖>`` for a block of pixels ``p`` and queries ``k``.

    ``q_rows`` points at this stage's first channel of each query row ``k`` (``(BLOCK_K, 1)`` pointers).
    """
    dots = tl.zeros_like(acc)
    sq = tl.zeros((BLOCK_P,), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        c_mask = offs_c < C
        u = tap_sum(ptr, b, h, w, oi, oj, S_H, S_W, offs_c, c_mask, p_mask, C)  # (BLOCK_P, BLOCK_C)
        if NORMALIZE:
            sq += tl.sum(u * u, axis=1)
        q = tl.load(q_rows + offs_c[None, :], mask=k_mask[:, None] & c_mask[None, :], other=0.0).to(tl.float32)
        dots += tl.dot(u, tl.trans(q), input_precision="ieee")  # (BLOCK_P, BLOCK_K)
    if NORMALIZE:
        dots = dots / tl.maximum(tl.sqrt(sq), eps)[:, None]
    return acc + dots


@triton.jit
def _stage_similarity_kernel(
    q_ptr,
    out_ptr,
    p0,
    p1,
    p2,
    p3,
    h0,
    w0,
    c0,
    o0,
    h1,
    w1,
    c1,
    o1,
    h2,
    w2,
    c2,
    o2,
    h3,
    w3,
    c3,
    o3,
    K,
    C_TOTAL,
    S_H,
    S_W,
    eps,
    N_STAGES: tl.constexpr,
    NORMALIZE: tl.constexpr,
    ACCUMULATE: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid_p = tl.program_id(0)
    pid_k = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    P = S_H * S_W
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    p_mask = offs_p < P
    k_mask = offs_k < K
    oi = offs_p // S_W
    oj = offs_p % S_W
    q_rows = q_ptr + b * K * C_TOTAL + offs_k[:, None] * C_TOTAL  # (BLOCK_K, 1): each query's first channel
    acc = tl.zeros((BLOCK_P, BLOCK_K), dtype=tl.float32)
    acc = _stage_score(
        acc, q_rows + o0, k_mask, p0, b, h0, w0, c0, oi, oj, S_H, S_W, p_mask, eps, NORMALIZE, BLOCK_P, BLOCK_C
    )
    if N_STAGES > 1:
        acc = _stage_score(
            acc, q_rows + o1, k_mask, p1, b, h1, w1, c1, oi, oj, S_H, S_W, p_mask, eps, NORMALIZE, BLOCK_P, BLOCK_C
        )
    if N_STAGES > 2:
        acc = _stage_score(
            acc, q_rows + o2, k_mask, p2, b, h2, w2, c2, oi, oj, S_H, S_W, p_mask, eps, NORMALIZE, BLOCK_P, BLOCK_C
        )
    if N_STAGES > 3:
        acc = _stage_score(
            acc, q_rows + o3, k_mask, p3, b, h3, w3, c3, oi, oj, S_H, S_W, p_mask, eps, NORMALIZE, BLOCK_P, BLOCK_C
        )
    out_offs = (b * K + offs_k)[None, :] * P + offs_p[:, None]  # (BLOCK_P, BLOCK_K) into (B, K, P)
    m = p_mask[:, None] & k_mask[None, :]
    if ACCUMULATE:
        acc += tl.load(out_ptr + out_offs, mask=m, other=0.0)
    tl.store(out_ptr + out_offs, acc, mask=m)


def stage_similarity_triton(
    queries: Tensor, maps: Sequence[Tensor], size: tuple[int, int], normalize: bool = True, eps: float = 1e-12
) -> Tensor:
    """``<q_k, h(p)>`` per location ``p`` of the (per-stage normalised) hypercolumn, never materialised.

    Forward only (no autograd formula): matching is inference.

    Args:
        queries: ``(B, K, ΣC_s)``, same dtype as ``maps`` (fp32/bf16/fp16).
        maps: ``(B, C_s, h_s, w_s)`` stage maps (any layout, made channels-last).
        size: grid ``(S_h, S_w)``.
        normalize: L2-normalise each stage's interpolated vector (``max(‖·‖, eps)``, as ``F.normalize``).

    Returns:
        ``(B, K, S_h·S_w)`` scores in the dtype of ``queries`` (accumulated in fp32).
    """
    check_dtype(queries, "stage_similarity")
    batch, k, c_total = queries.shape
    s_h, s_w = size
    q = queries.contiguous()
    data = [nhwc(m) for m in maps]
    offsets = [0]
    for m in maps[:-1]:
        offsets.append(offsets[-1] + m.shape[1])
    out = torch.empty((batch, k, s_h * s_w), dtype=torch.float32, device=queries.device)
    block_k = block_size(k, 16, 64)
    grid = (triton.cdiv(s_h * s_w, 64), triton.cdiv(k, block_k), batch)
    for start in range(0, len(data), MAX_STAGES):
        chunk = data[start : start + MAX_STAGES]
        args = [v for t, o in zip(chunk, offsets[start:]) for v in (t.shape[1], t.shape[2], t.shape[3], o)]
        _stage_similarity_kernel[grid](
            q,
            out,
            *pad_stages(chunk, chunk[0]),
            *(args + [1, 1, 1, 0] * (MAX_STAGES - len(chunk))),
            k,
            c_total,
            s_h,
            s_w,
            eps,
            N_STAGES=len(chunk),
            NORMALIZE=normalize,
            ACCUMULATE=start > 0,
            BLOCK_P=64,
            BLOCK_K=block_k,
            BLOCK_C=32,
            num_warps=4,
        )
    return out if queries.dtype == torch.float32 else out.to(queries.dtype)
