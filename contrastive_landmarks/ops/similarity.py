"""Similarity of query descriptors with every location of a hypercolumn, per-stage normalised or not.

Per-stage L2 normalisation sits between the upsampling and the dot product, so the two cannot be
commuted the way :func:`~contrastive_landmarks.ops.project_stages` does. Three implementations:

- :func:`stage_similarity_reference`: materialise the (normalised) hypercolumn and ``bmm``: the
  definition.
- ``"torch"`` (CPU, and CUDA without triton): exact, and never at ``ΣC_s`` channels × output
  resolution. The numerator commutes, ``<q_s, up(F_s)(p)> = up(q_s·F_s)(p)``, so it is a ``K``-channel
  map upsampled; the norm does not (the norm of an interpolated vector is not the interpolation of
  norms), but ``u = Σ_t w_t f_t`` over the four taps gives ``‖u‖² = Σ_t Σ_t' w_t w_t' <f_t, f_t'>``,
  and the five neighbour inner products it needs (self, right, down, and both diagonals of each
  2×2 cell, with PyTorch's edge clamp) are computed once at native resolution and gathered per
  output location. Cost ``O(B·h·w·C)`` + ``O(B·K·(h·w·C + S_h·S_w))`` per stage instead of
  ``O(B·K·C·S_h·S_w)``. Differentiable (plain PyTorch). In floating point, ``‖u‖²`` from the
  expansion loses relative accuracy only when the taps nearly cancel (``‖u‖ ≪ Σ_t w_t‖f_t‖``);
  post-ReLU backbone features are non-negative, so they never do.
- ``"triton"`` (CUDA): per output location, gathers the four taps of every stage, normalises and
  dots with the queries in registers, writing only ``(B, K, S_h·S_w)``. **Forward only**: when
  gradients are required the dispatch uses the ``"torch"`` form instead (and an explicit
  ``backend="triton"`` raises).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .upsampling import Backend, check_stage_maps, grid_size, select_backend

__all__ = ["stage_similarity", "stage_similarity_reference"]

_EPS = 1e-12  # F.normalize's default: u / max(‖u‖, eps)


def triton_kernels():
    """The stage-similarity Triton kernel module (imported on first use: triton is optional)."""
    from . import _triton_stage_similarity

    return _triton_stage_similarity


def stage_similarity_reference(
    queries: Tensor, maps: Sequence[Tensor], size: tuple[int, int], *, normalize: bool = True
) -> Tensor:
    """``<q_k, h(p)>`` for every query ``k`` and hypercolumn location ``p`` (materialised).

    With ``normalize=True`` each stage block of the hypercolumn is L2-normalised per location
    (the authors' matching), so with per-stage normalised queries the score is a sum of per-stage
    cosines, in ``[-n_stages, n_stages]``.

    Args:
        queries: ``(B, K, ΣC_s)`` descriptors, channels in the order of ``maps``.
        maps: ``(B, C_s, h_s, w_s)`` stage maps.
        size: hypercolumn ``(S_h, S_w)``.

    Returns:
        ``(B, K, S_h * S_w)`` scores, row-major over the ``S_h × S_w`` grid.
    """
    channels = [m.shape[1] for m in maps]
    if queries.ndim != 3 or queries.shape[-1] != sum(channels):
        raise ValueError(f"queries must be (B, K, {sum(channels)}), got {tuple(queries.shape)}")
    blocks = []
    for m in maps:
        up = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        blocks.append(F.normalize(up, dim=1) if normalize else up)
    hyper = torch.cat(blocks, dim=1).flatten(2)  # (B, C, S*S)
    return torch.bmm(queries, hyper)


# ----------------------------------------------------------------------------------------------------------------------
# exact PyTorch form without the hypercolumn


def _taps(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """PyTorch's align_corners=False bilinear taps of each output index: ``(i0, i1, w0, w1)``, ``(n_out,)`` each."""
    src = ((torch.arange(n_out, dtype=dtype, device=device) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w1 = (src - i0.to(dtype)).clamp(0, 1)
    return i0, i1, 1 - w1, w1


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1)


def _upsampled_sq_norm(f: Tensor, size: tuple[int, int]) -> Tensor:
    """``‖up(f)(p)‖²`` for every output location ``p``, ``(B, S_h, S_w)``, from native-resolution inner products.

    ``f`` is ``(B, C, h, w)``. With taps ``f00, f01, f10, f11`` (rows ``y0, y1 = min(y0+1, h-1)``,
    columns ``x0, x1``) and weights ``a0, a1`` (rows), ``b0, b1`` (columns),
    ``u = a0(b0 f00 + b1 f01) + a1(b0 f10 + b1 f11)``, so ``‖u‖²`` needs, at each source pixel
    ``(y, x)``: ``‖f(y,x)‖²``, ``<f(y,x), f(y,x1)>``, ``<f(y,x), f(y1,x)>`` and the two diagonals
    ``<f(y,x), f(y1,x1)> + <f(y,x1), f(y1,x)>`` (at the last row/column the clamped neighbour is the
    pixel itself).
    """
    _, _, h, w = f.shape
    g = f.permute(0, 2, 3, 1).contiguous()  # (B, h, w, C); a view when f is channels-last
    n = _dot(g, g)
    hor, ver = n.clone(), n.clone()
    if w > 1:
        hor[:, :, :-1] = _dot(g[:, :, :-1], g[:, :, 1:])
    if h > 1:
        ver[:, :-1] = _dot(g[:, :-1], g[:, 1:])
    diag = 2 * ver  # last column (x1 = x): 2<f(y,x), f(y1,x)>
    diag[:, -1] = 2 * hor[:, -1]  # last row (y1 = y): 2<f(y,x), f(y,x1)>
    if h > 1 and w > 1:
        diag[:, :-1, :-1] = _dot(g[:, :-1, :-1], g[:, 1:, 1:]) + _dot(g[:, :-1, 1:], g[:, 1:, :-1])
    # n2 = R_n (N M_n + H M_h) + R_v V M_n + R_d D M_h with sparse (≤2 entries per row) weight matrices:
    # rows R_n = a0²[y0] + a1²[y1], R_v = 2 a0 a1 [y0], R_d = a0 a1 [y0]; columns likewise (transposed)
    r_n, r_v, r_d = _weight_matrices(h, size[0], f.dtype, f.device)
    c_n, c_h, _ = _weight_matrices(w, size[1], f.dtype, f.device)
    c_n, c_h = c_n.T, c_h.T  # (w, S_w)
    return r_n @ (n @ c_n + hor @ c_h) + r_v @ (ver @ c_n) + r_d @ (diag @ c_h)


def _weight_matrices(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """``(n_out, n_in)`` matrices with ``w0²[i0] + w1²[i1]``, ``2 w0 w1 [i0]`` and ``w0 w1 [i0]`` in row ``i``."""
    i0, i1, w0, w1 = _taps(n_in, n_out, dtype, device)
    rows = torch.arange(n_out, device=device)
    sq = torch.zeros(n_out, n_in, dtype=dtype, device=device)
    sq.index_put_((rows, i0), w0 * w0, accumulate=True)
    sq.index_put_((rows, i1), w1 * w1, accumulate=True)
    two = torch.zeros_like(sq).index_put_((rows, i0), 2 * w0 * w1)
    one = torch.zeros_like(sq).index_put_((rows, i0), w0 * w1)
    return sq, two, one


def _stage_similarity_torch(queries: Tensor, maps: Sequence[Tensor], size: tuple[int, int], normalize: bool) -> Tensor:
    out_dtype = queries.dtype
    dtype = torch.float32 if out_dtype in (torch.float16, torch.bfloat16) else out_dtype
    batch, k, _ = queries.shape
    out = None
    start = 0
    for m in maps:
        c = m.shape[1]
        f = m.to(dtype)
        q = queries[..., start : start + c].to(dtype)
        start += c
        num = torch.matmul(q, f.flatten(2)).view(batch, k, m.shape[2], m.shape[3])  # <q, f> at native resolution
        if k >= 16:  # channels-last interpolation wins for many channels on the CPU
            num = num.contiguous(memory_format=torch.channels_last)
        up = F.interpolate(num, size=size, mode="bilinear", align_corners=False)
        if normalize:
            norm = _upsampled_sq_norm(f, size).clamp(min=0).sqrt().clamp(min=_EPS)
            up = up / norm[:, None]
        out = up if out is None else out + up
    return out.reshape(batch, k, size[0] * size[1]).to(out_dtype)


# ----------------------------------------------------------------------------------------------------------------------
# custom op (forward only) and dispatch


@torch.library.custom_op("contrastive_landmarks::stage_similarity", mutates_args=())
def _stage_similarity_op(queries: Tensor, maps: list[Tensor], size: list[int], normalize: bool, backend: str) -> Tensor:
    grid = (size[0], size[1])
    if select_backend(queries.device, queries.dtype, backend) == "triton":
        return triton_kernels().stage_similarity_triton(queries, maps, grid, normalize, _EPS)
    return _stage_similarity_torch(queries, maps, grid, normalize)


@_stage_similarity_op.register_fake
def _(queries: Tensor, maps: list[Tensor], size: list[int], normalize: bool, backend: str) -> Tensor:
    return queries.new_empty((queries.shape[0], queries.shape[1], size[0] * size[1]))


def _no_backward(ctx, grad: Tensor):
    raise RuntimeError(
        "contrastive_landmarks::stage_similarity is forward-only (matching is inference); call "
        "contrastive_landmarks.ops.stage_similarity, which uses differentiable PyTorch when gradients are needed"
    )


torch.library.register_autograd("contrastive_landmarks::stage_similarity", _no_backward)


def stage_similarity(
    queries: Tensor,
    maps: Sequence[Tensor],
    size: int | Sequence[int],
    *,
    normalize: bool = True,
    backend: Backend = "auto",
) -> Tensor:
    """Dispatching form of :func:`stage_similarity_reference` (same arguments, same result).

    Args:
        queries: ``(B, K, ΣC_s)`` descriptors (per-stage normalised for cosines), channels in the order of ``maps``.
        maps: ``(B, C_s, h_s, w_s)`` stage maps, any layout.
        size: hypercolumn ``S`` or ``(S_h, S_w)``.
        normalize: L2-normalise each stage block of the hypercolumn per location.
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` (see :func:`~contrastive_landmarks.ops.select_backend`).
            The Triton kernel is forward only: with gradients required, ``"auto"`` uses the
            (differentiable) ``"torch"`` form and ``"triton"`` raises.

    Returns:
        ``(B, K, S_h * S_w)`` scores in the dtype of ``queries`` (fp32 accumulation for fp16/bf16).
    """
    check_stage_maps(maps)
    size = grid_size(size)
    channels = [m.shape[1] for m in maps]
    if not isinstance(queries, Tensor) or queries.ndim != 3 or queries.shape[-1] != sum(channels):
        shape = tuple(queries.shape) if isinstance(queries, Tensor) else type(queries).__name__
        raise ValueError(f"queries must be (B, K, {sum(channels)}) for stages with {channels} channels, got {shape}")
    if queries.shape[0] != maps[0].shape[0]:
        raise ValueError(f"{queries.shape[0]} query sets but the stage maps have batch size {maps[0].shape[0]}")
    if queries.device != maps[0].device:
        raise ValueError(f"queries are on {queries.device} but the maps are on {maps[0].device}")
    dtype = queries.dtype
    for m in maps:
        dtype = torch.promote_types(dtype, m.dtype)
    if not dtype.is_floating_point:
        raise TypeError(f"stage_similarity needs floating-point inputs, got {dtype}")
    queries, maps = queries.to(dtype), [m.to(dtype) for m in maps]
    needs_grad = torch.is_grad_enabled() and (queries.requires_grad or any(m.requires_grad for m in maps))
    if needs_grad:
        if backend == "triton":
            raise RuntimeError(
                "the Triton stage_similarity kernel is forward-only; use backend='auto' or 'torch' when "
                "gradients are required (or run under torch.no_grad())"
            )
        select_backend(queries.device, dtype, backend)
        return _stage_similarity_torch(queries, maps, size, normalize)
    select_backend(queries.device, dtype, backend)
    return torch.ops.contrastive_landmarks.stage_similarity(queries, maps, list(size), normalize, backend)
