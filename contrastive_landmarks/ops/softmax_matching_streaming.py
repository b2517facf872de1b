"""The streaming (flash-style) form of :func:`~contrastive_landmarks.ops.softmax_expected_distance` and its
autograd: plain PyTorch tiles with an online softmax, and the registered custom op that runs them (or the
Triton kernels on CUDA) under ``torch.compile``.

Only ``lse_u`` and ``L_u`` are saved; backward recomputes the tiles. With ``normalize=True`` the L2
normalisation is fused. Tested against :func:`.softmax_matching_reference.softmax_expected_distance_reference`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .softmax_matching_reference import accumulation_dtype, distance_power, normalize_rows

__all__ = [
    "STREAMING_TILE_BYTES",
    "SoftmaxExpectedDistanceFunction",
    "sed",
    "sed_backward_op",
    "sed_op",
    "triton_module",
]


# --------------------------------------------------------------------------------------------------
# Streaming (flash-style) form in plain PyTorch
# --------------------------------------------------------------------------------------------------

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


def _tile_sizes(
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


def _inverse_norms(x: Tensor | None, acc: torch.dtype, normalize: bool) -> Tensor | None:
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


def _normalize_backward_(grad: Tensor, x: Tensor, inv: Tensor, acc: torch.dtype, rows: int) -> Tensor:
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


def _streaming_forward(
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
    bb, bq, bk = _tile_sizes(batch, n, m, torch.finfo(acc).bits // 8, block_q, block_k)
    inv_q = _inverse_norms(q, acc, normalize)
    inv_k = inv_q if k is None else _inverse_norms(k, acc, normalize)
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


def _streaming_backward(
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
    bb, bq, bk = _tile_sizes(batch, n, m, torch.finfo(acc).bits // 8, block_q, block_k)
    inv_q = _inverse_norms(q, acc, normalize)
    inv_k = inv_q if self_keys else _inverse_norms(k, acc, normalize)
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
        _normalize_backward_(dq, q, inv_q, acc, bq)
        if not self_keys:
            _normalize_backward_(dk, k, inv_k, acc, bq)
    return dq, (None if self_keys else dk)


class SoftmaxExpectedDistanceFunction(torch.autograd.Function):
    """The streaming form as a plain ``torch.autograd.Function`` (saves ``q``, ``k``, ``src``, ``L``, ``lse``).

    ``apply(q, k, src_xy, key_w, sx, sy, scale, power, block_q=None, block_k=None, normalize=False)
    -> L (B, N)``; arguments as :func:`softmax_expected_distance` (``k=None``: keys are the queries;
    ``key_w`` the key grid width; ``block_*`` ``None`` for automatic tiles).
    :func:`softmax_expected_distance` uses the equivalent registered custom op, which also works under
    ``torch.compile``.
    """

    @staticmethod
    def forward(ctx, q, k, src_xy, key_w, sx, sy, scale, power, block_q=None, block_k=None, normalize=False):
        out, lse = _streaming_forward(q, k, src_xy, key_w, sx, sy, scale, power, block_q, block_k, normalize)
        ctx.save_for_backward(q, k, src_xy, out, lse)
        ctx.args = (key_w, sx, sy, scale, power, block_q, block_k, normalize)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, src_xy, out, lse = ctx.saved_tensors
        dq, dk = _streaming_backward(grad, q, k, src_xy, out, lse, *ctx.args)
        dq = dq.to(q.dtype)
        dk = None if dk is None else dk.to(k.dtype)
        return dq, dk, None, None, None, None, None, None, None, None, None


# --------------------------------------------------------------------------------------------------
# Registered custom op (streaming on any device, Triton kernels on CUDA)
# --------------------------------------------------------------------------------------------------


def triton_module():
    """The Triton kernel module (imported on first use: triton is optional)."""
    from . import _triton_softmax_matching  # lazy: triton is optional

    return _triton_softmax_matching


def _triton_inputs(q: Tensor, k: Tensor | None, normalize: bool) -> tuple[Tensor, Tensor]:
    """Contiguous (normalised) ``q``, ``k`` in their dtype for the kernels."""
    qn = (normalize_rows(q.float()).to(q.dtype) if normalize else q).contiguous()
    if k is None:
        return qn, qn
    return qn, (normalize_rows(k.float()).to(k.dtype) if normalize else k).contiguous()


def _sed_forward(
    q: Tensor,
    k: Tensor | None,
    src: Tensor,
    key_w: int,
    sx: float,
    sy: float,
    scale: float,
    power: float,
    normalize: bool,
    backend: str,
    block_q: int,
    block_k: int,
    allow_tf32: bool,
) -> tuple[Tensor, Tensor]:
    """What :func:`sed_op` computes (the eager path :class:`_EagerSoftmaxExpectedDistance` calls it directly)."""
    if backend == "triton":
        qn, kn = _triton_inputs(q, k, normalize)
        return triton_module().forward(
            qn, kn, src.contiguous(), key_w, sx, sy, scale, power, block_q, block_k, allow_tf32
        )
    return _streaming_forward(q, k, src, key_w, sx, sy, scale, power, block_q or None, block_k or None, normalize)


@torch.library.custom_op("contrastive_landmarks::softmax_expected_distance", mutates_args=())
def sed_op(
    q: Tensor,
    k: Tensor | None,
    src: Tensor,
    key_w: int,
    sx: float,
    sy: float,
    scale: float,
    power: float,
    normalize: bool,
    backend: str,
    block_q: int,
    block_k: int,
    allow_tf32: bool,
) -> tuple[Tensor, Tensor]:
    """``(L, lse)``, each ``(B, N)``; ``k=None``: keys are the queries; ``block_* = 0``: automatic tiles."""
    return _sed_forward(q, k, src, key_w, sx, sy, scale, power, normalize, backend, block_q, block_k, allow_tf32)


@sed_op.register_fake
def _(q, k, src, key_w, sx, sy, scale, power, normalize, backend, block_q, block_k, allow_tf32):
    acc = accumulation_dtype(q.dtype)
    return q.new_empty(q.shape[:2], dtype=acc), q.new_empty(q.shape[:2], dtype=acc)


def _sed_backward_impl(
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
    normalize: bool,
    backend: str,
    block_q: int,
    block_k: int,
    allow_tf32: bool,
) -> tuple[Tensor, Tensor]:
    """What :func:`sed_backward_op` computes (the eager path calls it directly)."""
    if backend == "triton":
        acc = accumulation_dtype(q.dtype)
        qn, kn = _triton_inputs(q, k, normalize)
        dqn, dkn = triton_module().backward(
            grad.contiguous(),
            qn,
            kn,
            src.contiguous(),
            out.contiguous(),
            lse.contiguous(),
            key_w,
            sx,
            sy,
            scale,
            power,
            block_q,
            block_k,
            allow_tf32,
        )
        dq = torch.zeros_like(q, dtype=acc).copy_(dqn)
        dk = None
        if k is None:
            dq.add_(dkn)
        else:
            dk = torch.zeros_like(k, dtype=acc).copy_(dkn)
        if normalize:
            _normalize_backward_(dq, q, _inverse_norms(q, acc, True), acc, 4096)
            if dk is not None:
                _normalize_backward_(dk, k, _inverse_norms(k, acc, True), acc, 4096)
    else:
        dq, dk = _streaming_backward(
            grad, q, k, src, out, lse, key_w, sx, sy, scale, power, block_q or None, block_k or None, normalize
        )
    dq = dq.to(q.dtype)
    dk = q.new_empty(0) if dk is None else dk.to(k.dtype)
    return dq, dk


@torch.library.custom_op("contrastive_landmarks::softmax_expected_distance_backward", mutates_args=())
def sed_backward_op(
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
    normalize: bool,
    backend: str,
    block_q: int,
    block_k: int,
    allow_tf32: bool,
) -> tuple[Tensor, Tensor]:
    """``(dq, dk)`` in the dtypes and layouts of ``q`` and ``k`` (``dk`` empty when ``k`` is ``None``)."""
    return _sed_backward_impl(
        grad, q, k, src, out, lse, key_w, sx, sy, scale, power, normalize, backend, block_q, block_k, allow_tf32
    )


@sed_backward_op.register_fake
def _(grad, q, k, src, out, lse, key_w, sx, sy, scale, power, normalize, backend, block_q, block_k, allow_tf32):
    return torch.empty_like(q), (q.new_empty(0) if k is None else torch.empty_like(k))


def _sed_setup_context(ctx, inputs, output):
    q, k, src, *args = inputs
    out, lse = output
    ctx.save_for_backward(q, k, src, out, lse)
    ctx.args = args


def _sed_backward(ctx, grad_out, grad_lse):
    q, k, src, out, lse = ctx.saved_tensors
    dq, dk = sed_backward_op(grad_out, q, k, src, out, lse, *ctx.args)
    return dq, (None if k is None else dk), None, None, None, None, None, None, None, None, None, None, None


sed_op.register_autograd(_sed_backward, setup_context=_sed_setup_context)


class _EagerSoftmaxExpectedDistance(torch.autograd.Function):
    """:func:`sed_op` and its autograd formula without the custom-op dispatcher, for eager calls.

    A registered custom op runs its implementation under ``torch._disable_dynamo``, which imports
    ``torch._dynamo`` (and with it sympy, triton and inductor) on the first call: about 200 MB of resident
    memory in a fresh process, more than the op's own tiles (issue 31). Eager calls take this path, which runs
    the same functions (:func:`_sed_forward`, :func:`_sed_backward_impl`), so values and gradients are the
    custom op's; :func:`sed` uses the op only while ``torch.compile`` / ``torch.export`` traces.
    """

    @staticmethod
    def forward(ctx, q, k, src, *args):
        out, lse = _sed_forward(q, k, src, *args)
        ctx.save_for_backward(q, k, src, out, lse)
        ctx.args = args
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, grad_out, grad_lse):
        q, k, src, out, lse = ctx.saved_tensors
        dq, dk = _sed_backward_impl(grad_out, q, k, src, out, lse, *ctx.args)
        return (dq, None if k is None else dk, *([None] * (1 + len(ctx.args))))


def sed(
    q: Tensor,
    k: Tensor | None,
    src: Tensor,
    key_w: int,
    sx: float,
    sy: float,
    scale: float,
    power: float,
    normalize: bool,
    backend: str,
    block_q: int,
    block_k: int,
    allow_tf32: bool,
) -> tuple[Tensor, Tensor]:
    """:func:`sed_op` (arguments and result the same): the registered op under ``torch.compile`` / ``export``,
    the same functions through a plain ``autograd.Function`` in eager mode (no ``torch._dynamo`` import)."""
    args = (q, k, src, key_w, sx, sy, scale, power, normalize, backend, block_q, block_k, allow_tf32)
    if torch.compiler.is_compiling():
        return sed_op(*args)
    return _EagerSoftmaxExpectedDistance.apply(*args)
