"""Triton kernels for the hypercolumn hot paths (imported lazily: needs ``triton``).

Two kernels (the stage-similarity kernel, which shares the tap rule, is in :mod:`._triton_stage_similarity`),
on channels-last (NHWC) data so every bilinear tap reads a contiguous run of channels:

- :func:`upsample_sum_triton`: ``Σ_s up(Y_s) + b`` for up to four stages per launch, one pass,
  writing only the ``(B, d, S_h, S_w)`` output (more stages: further launches that add into it).
- :func:`upsample_sum_backward_triton`: the transpose, ``dY_s = A_sᵀ dZ`` for each stage, as a
  *gather*: each program owns a block of source pixels and sums the output pixels whose taps hit
  them (a window of ``⌈2 S/h⌉ + 3`` rows and columns, weights recomputed with the forward's
  rule, zero outside). Deterministic, no atomics, no zero-filled fp32 workspace, and every gradient
  element is written once in the input dtype; a scatter with atomics would make fp32 sums
  order-dependent and need an fp32 buffer for bf16/fp16 gradients.

Source index rule (PyTorch's ``align_corners=False`` bilinear, in fp32 as PyTorch's kernels for
fp32/bf16/fp16): ``src = max((i + ½)·h/S − ½, 0)``, ``i₀ = min(⌊src⌋, h−1)``, ``i₁ = min(i₀+1, h−1)``,
``λ = src − i₀``. Accumulation is fp32 for every input dtype. Works on CUDA tensors, and on CPU
tensors under ``TRITON_INTERPRET=1`` (which must be set before this module is imported).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = [
    "MAX_STAGES",
    "SUPPORTED_DTYPES",
    "block_size",
    "check_dtype",
    "interpreted",
    "nhwc",
    "pad_stages",
    "tap_sum",
    "taps",
    "upsample_sum_backward_triton",
    "upsample_sum_triton",
]

MAX_STAGES = 4  # stages fused per launch; more are handled by further launches that accumulate
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def taps(i, n_in, n_out):
    """Bilinear source taps of output indices ``i`` (PyTorch's align_corners=False rule)."""
    scale = (n_in * 1.0) / n_out  # not n_in.to(): Triton specialises integer arguments equal to 1 as constexprs
    src = scale * (i.to(tl.float32) + 0.5) - 0.5
    src = tl.maximum(src, 0.0)
    i0 = tl.minimum(src.to(tl.int32), n_in - 1)
    i1 = tl.minimum(i0 + 1, n_in - 1)
    lam = tl.minimum(tl.maximum(src - i0.to(tl.float32), 0.0), 1.0)
    return i0, i1, lam


@triton.jit
def tap_sum(ptr, b, h, w, oi, oj, S_H, S_W, offs_c, c_mask, p_mask, C):
    """``up(map)[b, oi, oj, offs_c]`` (fp32) for a block of output pixels and channels, NHWC map."""
    y0, y1, ly = taps(oi, h, S_H)
    x0, x1, lx = taps(oj, w, S_W)
    base = ptr + b * h * w * C
    m = p_mask[:, None] & c_mask[None, :]
    cc = offs_c[None, :]
    v00 = tl.load(base + ((y0 * w + x0) * C)[:, None] + cc, mask=m, other=0.0).to(tl.float32)
    v01 = tl.load(base + ((y0 * w + x1) * C)[:, None] + cc, mask=m, other=0.0).to(tl.float32)
    v10 = tl.load(base + ((y1 * w + x0) * C)[:, None] + cc, mask=m, other=0.0).to(tl.float32)
    v11 = tl.load(base + ((y1 * w + x1) * C)[:, None] + cc, mask=m, other=0.0).to(tl.float32)
    top = v00 + (v01 - v00) * lx[:, None]
    bot = v10 + (v11 - v10) * lx[:, None]
    return top + (bot - top) * ly[:, None]


@triton.jit
def _upsample_sum_fwd_kernel(
    out_ptr,
    bias_ptr,
    p0,
    p1,
    p2,
    p3,
    h0,
    w0,
    h1,
    w1,
    h2,
    w2,
    h3,
    w3,
    D,
    S_H,
    S_W,
    N_STAGES: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ACCUMULATE: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_p = tl.program_id(0)
    pid_d = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    p_mask = offs_p < S_H * S_W
    c_mask = offs_c < D
    oi = offs_p // S_W
    oj = offs_p % S_W
    acc = tap_sum(p0, b, h0, w0, oi, oj, S_H, S_W, offs_c, c_mask, p_mask, D)
    if N_STAGES > 1:
        acc += tap_sum(p1, b, h1, w1, oi, oj, S_H, S_W, offs_c, c_mask, p_mask, D)
    if N_STAGES > 2:
        acc += tap_sum(p2, b, h2, w2, oi, oj, S_H, S_W, offs_c, c_mask, p_mask, D)
    if N_STAGES > 3:
        acc += tap_sum(p3, b, h3, w3, oi, oj, S_H, S_W, offs_c, c_mask, p_mask, D)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
    out_offs = (b * S_H * S_W + offs_p)[:, None] * D + offs_c[None, :]
    m = p_mask[:, None] & c_mask[None, :]
    if ACCUMULATE:
        acc += tl.load(out_ptr + out_offs, mask=m, other=0.0).to(tl.float32)
    tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _tap_weight(src_idx, out_idx, n_in, n_out):
    """Weight of source index ``src_idx`` in the interpolation of output index ``out_idx`` (0 if none)."""
    i0, i1, lam = taps(out_idx, n_in, n_out)
    return tl.where(i0 == src_idx, 1.0 - lam, 0.0) + tl.where(i1 == src_idx, lam, 0.0)


@triton.jit
def _window_start(y, n_in, n_out):
    """First output index whose taps may include source index ``y`` (one index early, for rounding)."""
    num = (2 * y - 1) * n_out - n_in
    start = tl.where(num > 0, (num + 2 * n_in - 1) // (2 * n_in) - 1, 0)
    return tl.maximum(start, 0)


@triton.jit
def _upsample_bwd_kernel(
    grad_ptr,
    out_ptr,
    h,
    w,
    D,
    S_H,
    S_W,
    WIN_H,
    WIN_W,
    BLOCK_P: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_p = tl.program_id(0)
    pid_d = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    p_mask = offs_p < h * w
    c_mask = offs_c < D
    y = offs_p // w
    x = offs_p % w
    i_start = _window_start(y, h, S_H)
    j_start = _window_start(x, w, S_W)
    base = grad_ptr + b * S_H * S_W * D
    cc = offs_c[None, None, :]
    acc = tl.zeros((BLOCK_P, BLOCK_D), dtype=tl.float32)
    for r in range(0, WIN_H):  # output rows of the window
        i = i_start + r
        wy = tl.where(i < S_H, _tap_weight(y, i, h, S_H), 0.0)  # (BLOCK_P,)
        for s0 in range(0, WIN_W, BLOCK_W):  # output columns, BLOCK_W at a time
            j = j_start[:, None] + s0 + tl.arange(0, BLOCK_W)[None, :]  # (BLOCK_P, BLOCK_W)
            wx = tl.where(j < S_W, _tap_weight(x[:, None], j, w, S_W), 0.0)
            hit = p_mask[:, None] & (wy[:, None] != 0.0) & (wx != 0.0)
            g = tl.load(
                base + ((i[:, None] * S_W + j) * D)[:, :, None] + cc,
                mask=hit[:, :, None] & c_mask[None, None, :],
                other=0.0,
            ).to(tl.float32)
            acc += wy[:, None] * tl.sum(wx[:, :, None] * g, axis=1)
    out_offs = (b * h * w + offs_p)[:, None] * D + offs_c[None, :]
    tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=p_mask[:, None] & c_mask[None, :])


def nhwc(t: Tensor) -> Tensor:
    """``(B, C, h, w)`` -> its ``(B, h, w, C)`` contiguous view (a copy only if not channels-last already)."""
    return t.permute(0, 2, 3, 1).contiguous()


def pad_stages(items: list, fill) -> list:
    return items + [fill] * (MAX_STAGES - len(items))


def check_dtype(t: Tensor, what: str) -> None:
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"the Triton {what} kernel supports float32/float16/bfloat16, got {t.dtype}")


def block_size(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(n, 1))))


def interpreted(t: Tensor) -> bool:
    """CPU tensors run under the interpreter, whose cost grows with programs × ops: larger blocks there."""
    return t.device.type != "cuda"


def upsample_sum_triton(maps: Sequence[Tensor], size: tuple[int, int], bias: Tensor | None = None) -> Tensor:
    """``Σ_s up(maps[s]) (+ bias)`` in one fused pass (four stages per launch).

    Args:
        maps: ``(B, d, h_s, w_s)`` maps of one dtype (fp32/bf16/fp16), any layout (made channels-last).
        size: output ``(S_h, S_w)``.
        bias: optional ``(d,)``.

    Returns:
        ``(B, d, S_h, S_w)`` in channels-last memory format, the dtype of ``maps``.
    """
    check_dtype(maps[0], "upsample_sum")
    batch, d = maps[0].shape[:2]
    s_h, s_w = size
    dtype = maps[0].dtype
    data = [nhwc(m) for m in maps]
    out = torch.empty((batch, s_h, s_w, d), dtype=dtype, device=maps[0].device)
    chunks = [data[i : i + MAX_STAGES] for i in range(0, len(data), MAX_STAGES)]
    # several launches accumulate in fp32 so low-precision outputs are rounded once
    work = out if len(chunks) == 1 or dtype == torch.float32 else torch.empty_like(out, dtype=torch.float32)
    block_d = block_size(d, 16, 64)
    block_p = 64 if interpreted(out) else 32  # 4 taps of (BLOCK_P, BLOCK_D) fp32 live in registers
    grid = (triton.cdiv(s_h * s_w, block_p), triton.cdiv(d, block_d), batch)
    bias_arg = bias.contiguous() if bias is not None else work
    for n, chunk in enumerate(chunks):
        dims = [v for t in chunk for v in (t.shape[1], t.shape[2])]
        _upsample_sum_fwd_kernel[grid](
            work,
            bias_arg,
            *pad_stages(chunk, chunk[0]),
            *(dims + [1] * (2 * MAX_STAGES - len(dims))),
            d,
            s_h,
            s_w,
            N_STAGES=len(chunk),
            HAS_BIAS=bias is not None and n == 0,
            ACCUMULATE=n > 0,
            BLOCK_P=block_p,
            BLOCK_D=block_d,
            num_warps=4,
        )
    if work is not out:
        out.copy_(work)
    return out.permute(0, 3, 1, 2)


def _window(n_in: int, n_out: int) -> int:
    """Output indices whose taps can include one source index, with margin (see ``_window_start``)."""
    return math.ceil(2 * n_out / n_in) + 3


def upsample_sum_backward_triton(grad: Tensor, shapes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """The transpose of :func:`upsample_sum_triton` without bias: ``dY_s = A_sᵀ grad`` for each stage.

    Args:
        grad: ``(B, d, S_h, S_w)`` (any layout, made channels-last).
        shapes: the stages' ``(h_s, w_s)``.

    Returns:
        ``[(B, d, h_s, w_s)]`` channels-last, the dtype of ``grad``.
    """
    check_dtype(grad, "upsample_sum backward")
    batch, d, s_h, s_w = grad.shape
    g = nhwc(grad)
    block_d = block_size(d, 16, 32)
    # the (BLOCK_P, BLOCK_W, BLOCK_D) window tile lives in registers on a GPU: 16 x 8 x 32 there
    big = interpreted(grad)
    outs = []
    for h, w in shapes:
        out = torch.empty((batch, h, w, d), dtype=grad.dtype, device=grad.device)
        block_p = block_size(h * w, 16, 32 if big else 16)
        win_w = _window(w, s_w)
        grid = (triton.cdiv(h * w, block_p), triton.cdiv(d, block_d), batch)
        _upsample_bwd_kernel[grid](
            g,
            out,
            h,
            w,
            d,
            s_h,
            s_w,
            _window(h, s_h),
            win_w,
            BLOCK_P=block_p,
            BLOCK_W=block_size(win_w, 4, 16 if big else 8),
            BLOCK_D=block_d,
            num_warps=4,
        )
        outs.append(out.permute(0, 3, 1, 2))
    return outs
