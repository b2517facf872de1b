"""Triton kernels of :func:`contrastive_landmarks.ops.softmax_expected_distance` (imported lazily).

Forward: one program per ``(query block, image)`` keeps its ``Q`` block and loops over key blocks with an
online softmax (log2 domain), computing each key's ``(j, i)`` from its index; it writes only
``L_u`` and ``lse_u`` (8 bytes per query).

Backward: two atomic-free kernels, FlashAttention-2 style with ``D - L_u`` in the role of ``dP - Δ``:

- ``dq``: one program per query block loops over key blocks: ``dq += (P ∘ (D - L)) k``, rows scaled by
  ``scale · dL_u`` at the end;
- ``dk``: one program per key block loops over query blocks: ``dk += (P ∘ (D - L))ᵀ (scale · dL ∘ q)``.

Two kernels instead of one with an fp32 ``atomic_add`` into ``dq``: each recomputes ``QKᵀ`` (5 GEMM
equivalents instead of 4), but the gradients are deterministic (bit-reproducible runs and resumes,
which the library's training code tests), there is no atomic contention on ``dq`` and no zero-init
pass, and each kernel has one accumulator in registers.

Float32 inputs use ``input_precision="ieee"`` unless ``allow_tf32`` (then expect ~1e-3 relative error
in the logits); 16-bit inputs use tensor-core dots with float32 accumulation, and ``P ∘ (D - L)`` is
rounded to the input dtype before its dots (as FlashAttention). ``d <= 256`` (one ``d`` block).
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["backward", "forward"]

_LOG2E = 1.4426950408889634

# power modes (constexpr): general, 0 (constant 1), 0.5, 1, 2
_GENERAL, _ZERO, _HALF, _ONE, _TWO = 0, 1, 2, 3, 4


def _power_mode(power: float) -> int:
    return {0.0: _ZERO, 0.5: _HALF, 1.0: _ONE, 2.0: _TWO}.get(float(power), _GENERAL)


@triton.jit
def _power(sq, half_power, POWER_MODE: tl.constexpr):
    """``sq ** (power / 2)`` for squared distances, with exact forms for the common powers."""
    if POWER_MODE == 1:
        dist = tl.full(sq.shape, 1.0, tl.float32)
    elif POWER_MODE == 2:
        dist = tl.sqrt(tl.sqrt(sq))
    elif POWER_MODE == 3:
        dist = tl.sqrt(sq)
    elif POWER_MODE == 4:
        dist = sq
    else:
        dist = tl.where(sq > 0, tl.exp2(half_power * tl.log2(tl.where(sq > 0, sq, 1.0))), 0.0)
    return dist


@triton.jit
def _distance(src_x, src_y, offs_key, key_w, sx, sy, half_power, POWER_MODE: tl.constexpr):
    """``(BLOCK_Q, BLOCK_K)`` distances ``||(sx, sy) ∘ (src - (j, i))||^power`` (keys from their index).

    The general power guards ``log2(0)`` with ``where(sq > 0, sq, 1)``, not ``maximum(sq, 1e-38)``: Triton
    types a literal below float32's normal range as float64, which would promote the whole tile.
    """
    kx = (offs_key % key_w).to(tl.float32)
    ky = (offs_key // key_w).to(tl.float32)
    dx = (src_x[:, None] - kx[None, :]) * sx
    dy = (src_y[:, None] - ky[None, :]) * sy
    sq = dx * dx + dy * dy
    return _power(sq, half_power, POWER_MODE)


@triton.jit
def _distance_t(src_x, src_y, offs_key, key_w, sx, sy, half_power, POWER_MODE: tl.constexpr):
    """Transposed :func:`_distance`: ``(BLOCK_K, BLOCK_Q)``."""
    kx = (offs_key % key_w).to(tl.float32)
    ky = (offs_key // key_w).to(tl.float32)
    dx = (src_x[None, :] - kx[:, None]) * sx
    dy = (src_y[None, :] - ky[:, None]) * sy
    sq = dx * dx + dy * dy
    return _power(sq, half_power, POWER_MODE)


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``a @ b`` with float32 accumulation; ``UPCAST`` computes 16-bit operands in float32 (interpreter only)."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _fwd_kernel(
    Q,
    K,
    SRC,
    OUT,
    LSE,
    N,
    M,
    DIM,
    key_w,
    src_batch_stride,
    sx,
    sy,
    scale_log2,
    half_power,
    POWER_MODE: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_q = pid * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_d = tl.arange(0, BLOCK_D)
    mask_q = offs_q < N
    mask_d = offs_d < DIM
    q = tl.load(
        Q + b * N * DIM + offs_q[:, None] * DIM + offs_d[None, :], mask=mask_q[:, None] & mask_d[None, :], other=0.0
    )
    src = SRC + b * src_batch_stride + offs_q * 2
    src_x = tl.load(src, mask=mask_q, other=0.0).to(tl.float32)
    src_y = tl.load(src + 1, mask=mask_q, other=0.0).to(tl.float32)
    run_max = tl.full((BLOCK_Q,), float("-inf"), tl.float32)
    run_sum = tl.zeros((BLOCK_Q,), tl.float32)
    run_dist = tl.zeros((BLOCK_Q,), tl.float32)
    k_base = K + b * M * DIM
    for start in range(0, M, BLOCK_K):
        offs_k = start + tl.arange(0, BLOCK_K)
        mask_k = offs_k < M
        k = tl.load(k_base + offs_k[:, None] * DIM + offs_d[None, :], mask=mask_k[:, None] & mask_d[None, :], other=0.0)
        s = _dot(q, tl.trans(k), PRECISION, UPCAST) * scale_log2
        s = tl.where(mask_k[None, :], s, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(s, 1))
        alpha = tl.exp2(run_max - new_max)
        p = tl.exp2(s - new_max[:, None])
        dist = _distance(src_x, src_y, offs_k, key_w, sx, sy, half_power, POWER_MODE)
        run_sum = run_sum * alpha + tl.sum(p, 1)
        run_dist = run_dist * alpha + tl.sum(p * dist, 1)
        run_max = new_max
    out = run_dist / run_sum
    lse = (run_max + tl.log2(run_sum)) * 0.6931471805599453  # natural log
    tl.store(OUT + b * N + offs_q, out, mask=mask_q)
    tl.store(LSE + b * N + offs_q, lse, mask=mask_q)


@triton.jit
def _bwd_dq_kernel(
    Q,
    K,
    SRC,
    OUT,
    LSE,
    GRAD,
    DQ,
    N,
    M,
    DIM,
    key_w,
    src_batch_stride,
    sx,
    sy,
    scale,
    scale_log2,
    half_power,
    POWER_MODE: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_q = pid * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_d = tl.arange(0, BLOCK_D)
    mask_q = offs_q < N
    mask_d = offs_d < DIM
    q = tl.load(
        Q + b * N * DIM + offs_q[:, None] * DIM + offs_d[None, :], mask=mask_q[:, None] & mask_d[None, :], other=0.0
    )
    src = SRC + b * src_batch_stride + offs_q * 2
    src_x = tl.load(src, mask=mask_q, other=0.0).to(tl.float32)
    src_y = tl.load(src + 1, mask=mask_q, other=0.0).to(tl.float32)
    out = tl.load(OUT + b * N + offs_q, mask=mask_q, other=0.0)
    lse_log2 = tl.load(LSE + b * N + offs_q, mask=mask_q, other=0.0) * 1.4426950408889634
    grad = tl.load(GRAD + b * N + offs_q, mask=mask_q, other=0.0).to(tl.float32)
    acc = tl.zeros((BLOCK_Q, BLOCK_D), tl.float32)
    k_base = K + b * M * DIM
    for start in range(0, M, BLOCK_K):
        offs_k = start + tl.arange(0, BLOCK_K)
        mask_k = offs_k < M
        k = tl.load(k_base + offs_k[:, None] * DIM + offs_d[None, :], mask=mask_k[:, None] & mask_d[None, :], other=0.0)
        s = _dot(q, tl.trans(k), PRECISION, UPCAST) * scale_log2
        p = tl.where(mask_k[None, :], tl.exp2(s - lse_log2[:, None]), 0.0)
        dist = _distance(src_x, src_y, offs_k, key_w, sx, sy, half_power, POWER_MODE)
        w = p * (dist - out[:, None])
        acc += _dot(w.to(k.dtype), k, PRECISION, UPCAST)
    acc = acc * (grad * scale)[:, None]
    tl.store(
        DQ + b * N * DIM + offs_q[:, None] * DIM + offs_d[None, :],
        acc.to(DQ.dtype.element_ty),
        mask=mask_q[:, None] & mask_d[None, :],
    )


@triton.jit
def _bwd_dk_kernel(
    Q,
    K,
    SRC,
    OUT,
    LSE,
    GRAD,
    DK,
    N,
    M,
    DIM,
    key_w,
    src_batch_stride,
    sx,
    sy,
    scale,
    scale_log2,
    half_power,
    POWER_MODE: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_k = pid * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_d = tl.arange(0, BLOCK_D)
    mask_k = offs_k < M
    mask_d = offs_d < DIM
    k = tl.load(
        K + b * M * DIM + offs_k[:, None] * DIM + offs_d[None, :], mask=mask_k[:, None] & mask_d[None, :], other=0.0
    )
    acc = tl.zeros((BLOCK_K, BLOCK_D), tl.float32)
    q_base = Q + b * N * DIM
    src_base = SRC + b * src_batch_stride
    for start in range(0, N, BLOCK_Q):
        offs_q = start + tl.arange(0, BLOCK_Q)
        mask_q = offs_q < N
        q = tl.load(q_base + offs_q[:, None] * DIM + offs_d[None, :], mask=mask_q[:, None] & mask_d[None, :], other=0.0)
        src_x = tl.load(src_base + offs_q * 2, mask=mask_q, other=0.0).to(tl.float32)
        src_y = tl.load(src_base + offs_q * 2 + 1, mask=mask_q, other=0.0).to(tl.float32)
        out = tl.load(OUT + b * N + offs_q, mask=mask_q, other=0.0)
        lse_log2 = tl.load(LSE + b * N + offs_q, mask=mask_q, other=0.0) * 1.4426950408889634
        row = tl.load(GRAD + b * N + offs_q, mask=mask_q, other=0.0).to(tl.float32) * scale
        st = _dot(k, tl.trans(q), PRECISION, UPCAST) * scale_log2  # (BLOCK_K, BLOCK_Q)
        pt = tl.where(mask_q[None, :], tl.exp2(st - lse_log2[None, :]), 0.0)
        dist = _distance_t(src_x, src_y, offs_k, key_w, sx, sy, half_power, POWER_MODE)
        wt = pt * (dist - out[None, :]) * row[None, :]
        acc += _dot(wt.to(q.dtype), q, PRECISION, UPCAST)
    tl.store(
        DK + b * M * DIM + offs_k[:, None] * DIM + offs_d[None, :],
        acc.to(DK.dtype.element_ty),
        mask=mask_k[:, None] & mask_d[None, :],
    )


def _config(q: Tensor, block_q: int, block_k: int) -> dict:
    dim = q.shape[-1]
    if dim > 256:
        raise ValueError(f"the Triton kernels take d <= 256, got {dim}")
    block_d = max(16, triton.next_power_of_2(dim))
    if q.dtype == torch.float64:
        raise TypeError("the Triton kernels take float32/float16/bfloat16; use the streaming form for float64")
    # Tiles: 64x64 for 16-bit; float32 with d > 128 halves the key block to fit registers / shared memory.
    default_k = 32 if (q.dtype == torch.float32 and block_d > 128) else 64
    bq = block_q or 64
    bk = block_k or default_k
    for name, value in (("block_q", bq), ("block_k", bk)):
        if value < 16 or value & (value - 1):
            raise ValueError(f"{name} must be a power of two >= 16 for tl.dot, got {value}")
    return {"BLOCK_Q": bq, "BLOCK_K": bk, "BLOCK_D": block_d, "num_warps": 8 if block_d >= 128 else 4}


def _precision(q: Tensor, allow_tf32: bool) -> str:
    """IEEE float32 dots unless TF32 is allowed; 16-bit operands keep Triton's default (it only concerns fp32)."""
    if q.dtype == torch.float32:
        return "tf32" if allow_tf32 else "ieee"
    return "tf32"


def _common(q: Tensor, src: Tensor, power: float, scale: float) -> tuple[int, dict]:
    src_batch_stride = 0 if src.shape[0] == 1 else src.shape[1] * 2
    # Triton 3.8's CPU interpreter multiplies bfloat16 dot operands as their uint16 storage: there (and
    # only there) 16-bit operands are upcast to float32 before tl.dot (they are exact in float32).
    upcast = os.environ.get("TRITON_INTERPRET") == "1" and q.dtype != torch.float32
    return src_batch_stride, {
        "POWER_MODE": _power_mode(power),
        "half_power": float(power) / 2,
        "scale_log2": float(scale) * _LOG2E,
        "UPCAST": upcast,
    }


def forward(
    q: Tensor,
    k: Tensor,
    src: Tensor,
    key_w: int,
    sx: float,
    sy: float,
    scale: float,
    power: float,
    block_q: int = 0,
    block_k: int = 0,
    allow_tf32: bool = False,
) -> tuple[Tensor, Tensor]:
    """``(L, lse)`` ``(B, N)`` float32 for contiguous ``q (B, N, d)``, ``k (B, M, d)``, ``src (B|1, N, 2)`` float32."""
    batch, n, dim = q.shape
    m = k.shape[1]
    cfg = _config(q, block_q, block_k)
    src_stride, extra = _common(q, src, power, scale)
    out = torch.empty(batch, n, dtype=torch.float32, device=q.device)
    lse = torch.empty(batch, n, dtype=torch.float32, device=q.device)
    grid = (math.ceil(n / cfg["BLOCK_Q"]), batch)
    _fwd_kernel[grid](
        q,
        k,
        src.to(torch.float32),
        out,
        lse,
        n,
        m,
        dim,
        key_w,
        src_stride,
        float(sx),
        float(sy),
        PRECISION=_precision(q, allow_tf32),
        **extra,
        **cfg,
    )
    return out, lse


def backward(
    grad: Tensor,
    q: Tensor,
    k: Tensor,
    src: Tensor,
    out: Tensor,
    lse: Tensor,
    key_w: int,
    sx: float,
    sy: float,
    scale: float,
    power: float,
    block_q: int = 0,
    block_k: int = 0,
    allow_tf32: bool = False,
) -> tuple[Tensor, Tensor]:
    """``(dq, dk)`` in the dtypes of ``q`` / ``k`` (all inputs contiguous)."""
    batch, n, dim = q.shape
    m = k.shape[1]
    cfg = _config(q, block_q, block_k)
    src_stride, extra = _common(q, src, power, scale)
    src = src.to(torch.float32)
    out, lse, grad = out.to(torch.float32), lse.to(torch.float32), grad.to(torch.float32).contiguous()
    dq = torch.empty_like(q)
    dk = torch.empty_like(k)
    args = (n, m, dim, key_w, src_stride, float(sx), float(sy), float(scale))
    precision = _precision(q, allow_tf32)
    _bwd_dq_kernel[(math.ceil(n / cfg["BLOCK_Q"]), batch)](
        q, k, src, out, lse, grad, dq, *args, PRECISION=precision, **extra, **cfg
    )
    _bwd_dk_kernel[(math.ceil(m / cfg["BLOCK_K"]), batch)](
        q, k, src, out, lse, grad, dk, *args, PRECISION=precision, **extra, **cfg
    )
    return dq, dk
