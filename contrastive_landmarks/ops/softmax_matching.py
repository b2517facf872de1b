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
  ``lse_u`` and ``L_u`` and recomputes the tiles in backward (FlashAttention-2 style). With
  ``normalize=True`` the L2 normalisation is fused (tiles are normalised on the fly and the gradient
  is carried through it in place), strided inputs are read in place and ``q is k`` keeps one gradient
  buffer, so the extra memory is one gradient per input plus a few ``STREAMING_TILE_BYTES`` tiles.
- ``"triton"``: the same algorithm as fused Triton kernels (CUDA; the CPU interpreter in tests);
  normalisation and its backward run in PyTorch around the kernels.

Soft-argmax matching (:func:`softmax_expected_coordinates`, ``E_p[xy(v)]``) is attention with the key
coordinates as values, so it reuses ``F.scaled_dot_product_attention`` rather than a kernel of its own.

``src_xy`` is treated as data (no gradient flows to it): it is the warp ``g``, not a parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "SoftmaxExpectedDistanceFunction",
    "key_coordinates",
    "softmax_expected_coordinates",
    "softmax_expected_distance",
    "softmax_expected_distance_reference",
    "triton_available",
]

Implementation = Literal["auto", "naive", "streaming", "triton"]
CoordinatesImplementation = Literal["auto", "naive", "sdpa"]


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


def _check_inputs(q: Tensor, k: Tensor, src_xy: Tensor | None, key_size: tuple[int, int]) -> None:
    named = [("q", q), ("k", k)] + ([] if src_xy is None else [("src_xy", src_xy)])
    for name, t in named:
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
    if q.shape[1] == 0 or k.shape[1] == 0 or q.shape[0] == 0 or q.shape[2] == 0:
        raise ValueError(f"empty inputs: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if (len(key_size) != 2 or any(int(s) < 1 for s in key_size)
            or int(key_size[0]) * int(key_size[1]) != k.shape[1]):
        raise ValueError(f"key_size (h, w) must multiply to the {k.shape[1]} keys, got {tuple(key_size)}")
    if q.device != k.device:
        raise ValueError(f"q and k must be on one device, got {q.device} and {k.device}")
    if src_xy is None:
        return
    if src_xy.ndim != 3 or src_xy.shape[-1] != 2 or src_xy.shape[1] != q.shape[1] or src_xy.shape[0] not in (
        1,
        q.shape[0],
    ):
        raise ValueError(f"src_xy must be ({q.shape[0]} or 1, {q.shape[1]}, 2) (one (x, y) per query), "
                         f"got {tuple(src_xy.shape)}")
    if src_xy.device != q.device:
        raise ValueError(f"src_xy must be on the device of q ({q.device}), got {src_xy.device}")


def _distance_power(sq: Tensor, power: float) -> Tensor:
    """``sq^(power/2)`` (``sq`` a squared distance), cheap forms for the common powers; ``0^0 = 1``."""
    if power == 0.5:
        return sq.sqrt().sqrt()
    if power == 1.0:
        return sq.sqrt()
    if power == 2.0:
        return sq
    return sq.pow(power / 2)


def _normalize_rows(x: Tensor) -> Tensor:
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
    _check_inputs(q, k, src_xy, key_size)
    acc = _accumulation_dtype(q.dtype)
    qa, ka = q.to(acc), k.to(acc)
    if normalize:
        qa, ka = _normalize_rows(qa), _normalize_rows(ka)
    logits = torch.bmm(qa, ka.transpose(1, 2)) * scale  # (B, N, M)
    p = torch.softmax(logits, dim=-1)
    keys = key_coordinates(key_size, dtype=acc, device=q.device)  # (M, 2)
    (sx, sy), src = _pair_float(spacing, "spacing"), src_xy.detach().to(acc)
    dx = (src[:, :, None, 0] - keys[:, 0]) * sx  # (B|1, N, M)
    dy = (src[:, :, None, 1] - keys[:, 1]) * sy
    dist = _distance_power(dx * dx + dy * dy, power)  # (B|1, N, M)
    return (p * dist).sum(-1)


# --------------------------------------------------------------------------------------------------
# Streaming (flash-style) form in plain PyTorch
# --------------------------------------------------------------------------------------------------

#: Bytes of one ``(batch, queries, keys)`` score tile of the streaming form. Each step keeps two or
#: three such tiles alive; staying well under glibc's 32 MB mmap threshold keeps them on the heap
#: (fresh mmapped pages are zero-filled at ~4 GB/s on the dev VM, see docs/benchmarks.md).
STREAMING_TILE_BYTES = 4 << 20

_NORM_EPS = 1e-12  # F.normalize's default


def _chunk(total: int, size: int) -> int:
    """The balanced chunk length for at most ``size``-long chunks of ``total``."""
    size = max(1, min(total, size))
    count = -(-total // size)
    return -(-total // count)


def _tile_sizes(batch: int, n: int, m: int, itemsize: int, block_q: int | None, block_k: int | None,
                tile_bytes: int = STREAMING_TILE_BYTES) -> tuple[int, int, int]:
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
    return _distance_power(dx.square_().add_(dy.square_()), power)


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


def _streaming_forward(q: Tensor, k: Tensor | None, src: Tensor, key_w: int, sx: float, sy: float, scale: float,
                       power: float, block_q: int | None = None, block_k: int | None = None,
                       normalize: bool = False) -> tuple[Tensor, Tensor]:
    """Online softmax over key tiles. ``k=None``: the keys are the queries. Returns ``(L, lse)`` ``(B, N)``.

    Inputs may be strided and 16-bit: each query chunk and key tile is converted (and normalised) on the
    fly, so nothing of size ``B·N·d`` is copied.
    """
    acc = _accumulation_dtype(q.dtype)
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


def _streaming_backward(grad: Tensor, q: Tensor, k: Tensor | None, src: Tensor, out: Tensor, lse: Tensor, key_w: int,
                        sx: float, sy: float, scale: float, power: float, block_q: int | None = None,
                        block_k: int | None = None, normalize: bool = False) -> tuple[Tensor, Tensor | None]:
    """Recompute the tiles: ``dS = P ∘ (D - L_u) · scale · dL_u``, ``dq = dS k``, ``dk = dSᵀ q``.

    Gradients are accumulated in the accumulation dtype, in the memory layout of ``q`` / ``k``; with
    ``k=None`` both roles go into one buffer (returned as ``dq``, ``dk`` is ``None``). With ``normalize``
    they are carried through the normalisation in place.
    """
    acc = _accumulation_dtype(q.dtype)
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


def _triton_module():
    from . import _triton_softmax_matching  # lazy: triton is optional

    return _triton_softmax_matching


def _triton_inputs(q: Tensor, k: Tensor | None, normalize: bool) -> tuple[Tensor, Tensor]:
    """Contiguous (normalised) ``q``, ``k`` in their dtype for the kernels."""
    qn = (_normalize_rows(q.float()).to(q.dtype) if normalize else q).contiguous()
    if k is None:
        return qn, qn
    return qn, (_normalize_rows(k.float()).to(k.dtype) if normalize else k).contiguous()


@torch.library.custom_op("contrastive_landmarks::softmax_expected_distance", mutates_args=())
def _sed_op(q: Tensor, k: Tensor | None, src: Tensor, key_w: int, sx: float, sy: float, scale: float, power: float,
            normalize: bool, backend: str, block_q: int, block_k: int, allow_tf32: bool) -> tuple[Tensor, Tensor]:
    """``(L, lse)``, each ``(B, N)``; ``k=None``: keys are the queries; ``block_* = 0``: automatic tiles."""
    if backend == "triton":
        qn, kn = _triton_inputs(q, k, normalize)
        return _triton_module().forward(qn, kn, src.contiguous(), key_w, sx, sy, scale, power, block_q, block_k,
                                        allow_tf32)
    return _streaming_forward(q, k, src, key_w, sx, sy, scale, power, block_q or None, block_k or None, normalize)


@_sed_op.register_fake
def _(q, k, src, key_w, sx, sy, scale, power, normalize, backend, block_q, block_k, allow_tf32):
    acc = _accumulation_dtype(q.dtype)
    return q.new_empty(q.shape[:2], dtype=acc), q.new_empty(q.shape[:2], dtype=acc)


@torch.library.custom_op("contrastive_landmarks::softmax_expected_distance_backward", mutates_args=())
def _sed_backward_op(grad: Tensor, q: Tensor, k: Tensor | None, src: Tensor, out: Tensor, lse: Tensor, key_w: int,
                     sx: float, sy: float, scale: float, power: float, normalize: bool, backend: str, block_q: int,
                     block_k: int, allow_tf32: bool) -> tuple[Tensor, Tensor]:
    """``(dq, dk)`` in the dtypes and layouts of ``q`` and ``k`` (``dk`` empty when ``k`` is ``None``)."""
    if backend == "triton":
        acc = _accumulation_dtype(q.dtype)
        qn, kn = _triton_inputs(q, k, normalize)
        dqn, dkn = _triton_module().backward(grad.contiguous(), qn, kn, src.contiguous(), out.contiguous(),
                                             lse.contiguous(), key_w, sx, sy, scale, power, block_q, block_k,
                                             allow_tf32)
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
        dq, dk = _streaming_backward(grad, q, k, src, out, lse, key_w, sx, sy, scale, power, block_q or None,
                                     block_k or None, normalize)
    dq = dq.to(q.dtype)
    dk = q.new_empty(0) if dk is None else dk.to(k.dtype)
    return dq, dk


@_sed_backward_op.register_fake
def _(grad, q, k, src, out, lse, key_w, sx, sy, scale, power, normalize, backend, block_q, block_k, allow_tf32):
    return torch.empty_like(q), (q.new_empty(0) if k is None else torch.empty_like(k))


def _sed_setup_context(ctx, inputs, output):
    q, k, src, *args = inputs
    out, lse = output
    ctx.save_for_backward(q, k, src, out, lse)
    ctx.args = args


def _sed_backward(ctx, grad_out, grad_lse):
    q, k, src, out, lse = ctx.saved_tensors
    dq, dk = _sed_backward_op(grad_out, q, k, src, out, lse, *ctx.args)
    return dq, (None if k is None else dk), None, None, None, None, None, None, None, None, None, None, None


_sed_op.register_autograd(_sed_backward, setup_context=_sed_setup_context)


# --------------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------------

#: ``B·N·M`` at or below which ``"auto"`` uses the naive form off CUDA. Measured on the dev CPU
#: (``bench_spatial_contrastive.py --crossover``: 1 thread, fwd+bwd, x' = x, normalised, d=32-256):
#: streaming/naive time 1.1-2.0x up to 6.6e5 elements, 1.0x at 1-2e6, 0.8x at 2.7e6, 0.5x from 8.4e6.
NAIVE_MAX_ELEMENTS = 1 << 21

#: Largest descriptor dimension the Triton kernels take (one ``d`` block per tile); larger ``d`` uses
#: the streaming form on CUDA too.
TRITON_MAX_DIM = 256


def triton_available(device: torch.device) -> bool:
    """Whether the Triton kernels can run on ``device`` (CUDA, or any device under ``TRITON_INTERPRET=1``)."""
    import importlib.util
    import os

    if importlib.util.find_spec("triton") is None:
        return False
    if device.type == "cuda":
        return True
    return os.environ.get("TRITON_INTERPRET") == "1"


def _pick(implementation: str, q: Tensor, k: Tensor) -> str:
    if implementation != "auto":
        if implementation == "triton":
            if not triton_available(q.device):
                raise RuntimeError(
                    "implementation='triton' needs the triton package and a CUDA tensor (or TRITON_INTERPRET=1 "
                    f"set before import for the CPU interpreter); got a {q.device.type} tensor")
            if q.shape[-1] > TRITON_MAX_DIM:
                raise ValueError(f"the Triton kernels take d <= {TRITON_MAX_DIM}, got d={q.shape[-1]}; "
                                 "use implementation='streaming'")
            if q.dtype == torch.float64:
                raise TypeError("the Triton kernels take float32/float16/bfloat16 inputs; use "
                                "implementation='streaming' for float64")
        return implementation
    if (q.device.type == "cuda" and q.shape[-1] <= TRITON_MAX_DIM and q.dtype != torch.float64
            and triton_available(q.device)):
        return "triton"
    if q.shape[0] * q.shape[1] * k.shape[1] <= NAIVE_MAX_ELEMENTS:
        return "naive"
    return "streaming"


def softmax_expected_distance(
    q: Tensor,
    k: Tensor,
    src_xy: Tensor,
    key_size: tuple[int, int],
    *,
    scale: float = 1.0,
    power: float = 0.5,
    spacing: float | Sequence[float] = 1.0,
    normalize: bool = False,
    implementation: Implementation = "auto",
    allow_tf32: bool = False,
) -> Tensor:
    """``L_u = Σ_v softmax_v(scale·<q_u, k_v>) · ||spacing ∘ (src_u - xy(v))||^power`` for every query.

    Arguments and result as :func:`softmax_expected_distance_reference` (``src_xy`` in key-grid cells,
    no gradient to it), plus:

    Args:
        implementation: ``"naive"`` (materialise S, P, D), ``"streaming"`` (plain PyTorch, flash-style,
            any device), ``"triton"`` (fused kernels, CUDA; ``d <= 256``) or ``"auto"``: Triton on
            CUDA when available, otherwise naive up to ``B·N·M = NAIVE_MAX_ELEMENTS`` and streaming above.
        allow_tf32: let the Triton kernels run float32 dot products in TF32 (about 1e-3 relative error
            in the logits; default IEEE float32).

    Passing the same tensor as ``q`` and ``k`` (``x' = x``) is detected: the streaming form then keeps a
    single gradient buffer. Strided inputs (e.g. ``feats.flatten(2).transpose(1, 2)`` of a ``(B, d, h, w)``
    map) are read in place, and their gradients come back in the same layout.

    Returns:
        ``(B, N)``, float32 for 16-bit inputs (float64 for float64). Gradients flow to ``q`` and ``k``
        in their dtypes; all forms accumulate in float32 (or float64).
    """
    if implementation not in ("auto", "naive", "streaming", "triton"):
        raise ValueError(f"implementation must be 'auto', 'naive', 'streaming' or 'triton', got {implementation!r}")
    _check_inputs(q, k, src_xy, key_size)
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if not power >= 0:
        raise ValueError(f"power must be non-negative, got {power}")
    backend = _pick(implementation, q, k)
    if backend == "naive":
        return softmax_expected_distance_reference(q, k, src_xy, key_size, scale=scale, power=power, spacing=spacing,
                                                   normalize=normalize)
    sx, sy = _pair_float(spacing, "spacing")
    acc = _accumulation_dtype(q.dtype)
    out, _ = _sed_op(q, None if k is q else k, src_xy.detach().to(acc), int(key_size[1]), sx, sy, float(scale),
                     float(power), bool(normalize), backend, 0, 0, bool(allow_tf32))
    return out


# --------------------------------------------------------------------------------------------------
# Soft-argmax matching: expected key coordinates, through SDPA
# --------------------------------------------------------------------------------------------------


def softmax_expected_coordinates(
    q: Tensor,
    k: Tensor,
    key_size: tuple[int, int],
    *,
    scale: float = 1.0,
    implementation: CoordinatesImplementation = "auto",
) -> Tensor:
    """Soft-argmax matching: ``E_{p(v|u)}[xy(v)] = Σ_v softmax_v(scale·<q_u, k_v>) · (j_v, i_v)``.

    ``"sdpa"`` is ``F.scaled_dot_product_attention`` with the key coordinates as values, zero-padded to
    ``d`` columns (the CPU FLASH kernel, and CUDA's, need ``E_v = E``; with ``E_v = 2`` CPU falls back to
    the MATH path, which materialises the scores). Measured on the dev CPU (1 thread, d=256, 48x48 keys,
    docs/benchmarks.md) it is never faster than ``"naive"`` (1.0-1.9x its time) but does not store the
    ``B·N·M`` scores, so ``"auto"`` is naive off CUDA and SDPA on CUDA (fused flash / memory-efficient
    kernels; not measured here, no GPU was available).

    Args:
        q: ``(B, N, d)`` queries; ``k``: ``(B, M, d)`` keys, ``M = h·w`` row-major over ``key_size``.
        scale: logit multiplier (``1/τ``).
        implementation: ``"auto"``, ``"naive"`` or ``"sdpa"``.

    Returns:
        ``(B, N, 2)`` expected ``(x, y)`` in key-grid cells (the cell ``(i, j)`` is at ``(j, i)``), in the
        dtype of ``q``; differentiable in ``q`` and ``k``.
    """
    if implementation not in ("auto", "naive", "sdpa"):
        raise ValueError(f"implementation must be 'auto', 'naive' or 'sdpa', got {implementation!r}")
    _check_inputs(q, k, None, key_size)
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if implementation == "auto":
        implementation = "sdpa" if q.device.type == "cuda" else "naive"
    coords = key_coordinates(key_size, dtype=q.dtype, device=q.device)  # (M, 2)
    if implementation == "naive":
        weights = torch.softmax(torch.bmm(q, k.transpose(1, 2)) * scale, dim=-1)
        return weights @ coords
    import torch.nn.functional as F

    dim = q.shape[-1]
    values = coords if dim <= 2 else F.pad(coords, (0, dim - 2))
    values = values.expand(q.shape[0], -1, -1)
    out = F.scaled_dot_product_attention(q[:, None], k[:, None], values[:, None], scale=float(scale))
    return out[:, 0, :, :2]
