"""Multi-stage bilinear upsample-and-sum, and linear heads applied to stages at native resolution.

``upsample_sum`` is one ``torch.library`` custom op (``contrastive_landmarks::upsample_sum``, with a
fake kernel and an autograd formula, so ``torch.compile`` sees one opaque node) with two
implementations behind one dispatch:

- ``"triton"``: fused kernels (:mod:`._triton_upsample`): every stage's four bilinear taps are
  gathered and summed with the bias in one pass that writes only the output; the backward is the
  transpose ``dY_s = A_sᵀ dZ`` as a deterministic gather. Picked for CUDA tensors (fp32/bf16/fp16)
  when ``triton`` is importable.
- ``"torch"``: ``F.interpolate`` in channels-last, summed in place, one batch element at a time on
  the CPU so the temporaries stay in cache and on the reused heap (no large first-touch
  allocations besides the output); the backward is ``aten.upsample_bilinear2d_backward`` on
  channels-last chunks. Everything else (CPU, float64, no triton).

Both accumulate in fp32 for fp16/bf16 inputs and return channels-last ``(B, d, S_h, S_w)``.
:func:`upsample_sum_reference` (interpolate each map and add) stays the definition they are tested
against.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Backend",
    "project_stages",
    "project_stages_reference",
    "select_backend",
    "upsample_sum",
    "upsample_sum_reference",
]

Backend = Literal["auto", "torch", "triton"]
_BACKENDS = ("auto", "torch", "triton")
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_CPU_CHUNK_BYTES = 4 << 20  # per-chunk temporaries of the CPU path (fits L2/L3, below glibc's mmap threshold)


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported (it is optional)."""
    return importlib.util.find_spec("triton") is not None


def select_backend(device: torch.device, dtype: torch.dtype, backend: str = "auto") -> str:
    """The implementation a call will use: ``"triton"`` or ``"torch"``.

    ``"auto"`` picks Triton for CUDA tensors of fp32/bf16/fp16 when triton is importable, PyTorch
    otherwise. ``"triton"`` forces the kernels (on the CPU only under ``TRITON_INTERPRET=1``, set
    before the kernels are imported, as the tests do) and raises if they cannot run.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch"
    usable = device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("backend='triton' needs the triton package (pip install triton)")
        if not usable:
            raise RuntimeError(
                f"the Triton kernels run on CUDA tensors (or on the CPU under TRITON_INTERPRET=1), got device {device}"
            )
        if dtype not in _TRITON_DTYPES:
            raise TypeError(f"the Triton kernels support float32/float16/bfloat16, got {dtype}")
        return "triton"
    if device.type == "cuda" and dtype in _TRITON_DTYPES and triton_available():
        return "triton"
    return "torch"


def triton_kernels():
    """The Triton kernel module (imported on first use: triton is optional)."""
    from . import _triton_upsample

    return _triton_upsample


def grid_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``S`` or ``(S_h, S_w)`` as a pair of positive ints; anything else raises a :class:`ValueError`."""
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be a positive int or (S_h, S_w), got {size}")
    return size


def check_stage_maps(maps: Sequence[Tensor]) -> None:
    """Raise a ValueError unless ``maps`` is a non-empty list of ``(B, C, h, w)`` maps on one batch and device."""
    if isinstance(maps, Tensor) or not isinstance(maps, Sequence) or not maps:
        raise ValueError("expected a non-empty list of (B, C, h, w) stage maps")
    for m in maps:
        if not isinstance(m, Tensor) or m.ndim != 4:
            shape = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
            raise ValueError(f"stage maps must be (B, C, h, w) tensors, got {shape}")
        if m.shape[0] != maps[0].shape[0]:
            raise ValueError(f"stage maps disagree on the batch size: {[tuple(x.shape) for x in maps]}")
        if m.device != maps[0].device:
            raise ValueError(f"stage maps are on different devices: {[str(x.device) for x in maps]}")
        if min(m.shape[2:]) < 1:
            raise ValueError(f"stage maps must have a non-empty spatial size, got {tuple(m.shape)}")


def upsample_sum_reference(maps: Sequence[Tensor], size: tuple[int, int], bias: Tensor | None = None) -> Tensor:
    """``Σ_s up(maps[s]) (+ bias)`` with ``F.interpolate(bilinear, align_corners=False)``.

    Args:
        maps: ``(B, d, h_s, w_s)`` maps with the same ``d``.
        size: output ``(S_h, S_w)``.
        bias: optional ``(d,)``.

    Returns:
        ``(B, d, S_h, S_w)`` (channels-last memory format).
    """
    check_stage_maps(maps)
    out = None
    for m in maps:
        up = F.interpolate(
            m.contiguous(memory_format=torch.channels_last), size=size, mode="bilinear", align_corners=False
        )
        out = up if out is None else out + up
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# PyTorch implementation (CPU, and CUDA without triton)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _batch_chunk(t: Tensor, per_item_elems: int) -> int:
    if t.device.type != "cpu":
        return max(t.shape[0], 1)  # one launch per stage on accelerators
    return max(1, _CPU_CHUNK_BYTES // max(per_item_elems * 4, 1))


def _cl(t: Tensor, dtype: torch.dtype) -> Tensor:
    return t.to(dtype).contiguous(memory_format=torch.channels_last)


def _upsample_sum_torch(maps: Sequence[Tensor], size: Sequence[int], bias: Tensor | None) -> Tensor:
    batch, d = maps[0].shape[:2]
    s_h, s_w = size
    dtype = maps[0].dtype
    acc_dtype = _acc_dtype(dtype)
    out = torch.empty((batch, d, s_h, s_w), dtype=dtype, device=maps[0].device, memory_format=torch.channels_last)
    bias_acc = None if bias is None else bias.to(acc_dtype).view(1, -1, 1, 1)
    step = _batch_chunk(out, d * s_h * s_w)
    direct = acc_dtype == dtype and len(maps) > 1  # the last addition writes straight into the output
    for start in range(0, batch, step):
        rows = slice(start, start + step)
        acc = None
        for m in maps[:-1] if direct else maps:
            up = F.interpolate(_cl(m[rows], acc_dtype), size=(s_h, s_w), mode="bilinear", align_corners=False)
            acc = up if acc is None else acc.add_(up)
        if bias_acc is not None:
            acc.add_(bias_acc)
        if direct:
            last = F.interpolate(_cl(maps[-1][rows], acc_dtype), size=(s_h, s_w), mode="bilinear", align_corners=False)
            torch.add(acc, last, out=out[rows])
        else:
            out[rows].copy_(acc)
    return out


def _upsample_sum_backward_torch(grad: Tensor, shapes: Sequence[tuple[int, int]]) -> list[Tensor]:
    batch, d, s_h, s_w = grad.shape
    acc_dtype = _acc_dtype(grad.dtype)
    outs = [
        torch.empty((batch, d, h, w), dtype=grad.dtype, device=grad.device, memory_format=torch.channels_last)
        for h, w in shapes
    ]
    step = _batch_chunk(grad, d * s_h * s_w)
    for start in range(0, batch, step):
        rows = slice(start, start + step)
        g = _cl(grad[rows], acc_dtype)
        for out, (h, w) in zip(outs, shapes):
            out[rows].copy_(torch.ops.aten.upsample_bilinear2d_backward(g, [s_h, s_w], [g.shape[0], d, h, w], False))
    return outs


# ----------------------------------------------------------------------------------------------------------------------
# custom ops: forward, backward (itself differentiable: its transpose is the forward), fake kernels


@torch.library.custom_op("contrastive_landmarks::upsample_sum", mutates_args=())
def _upsample_sum_op(maps: list[Tensor], size: list[int], bias: Tensor | None, backend: str) -> Tensor:
    if select_backend(maps[0].device, maps[0].dtype, backend) == "triton":
        return triton_kernels().upsample_sum_triton(maps, (size[0], size[1]), bias)
    return _upsample_sum_torch(maps, size, bias)


@_upsample_sum_op.register_fake
def _(maps: list[Tensor], size: list[int], bias: Tensor | None, backend: str) -> Tensor:
    batch, d = maps[0].shape[:2]
    return torch.empty(
        (batch, d, size[0], size[1]), dtype=maps[0].dtype, device=maps[0].device, memory_format=torch.channels_last
    )


@torch.library.custom_op("contrastive_landmarks::upsample_sum_backward", mutates_args=())
def _upsample_sum_backward_op(grad: Tensor, heights: list[int], widths: list[int], backend: str) -> list[Tensor]:
    shapes = list(zip(heights, widths))
    if select_backend(grad.device, grad.dtype, backend) == "triton":
        return triton_kernels().upsample_sum_backward_triton(grad, shapes)
    return _upsample_sum_backward_torch(grad, shapes)


@_upsample_sum_backward_op.register_fake
def _(grad: Tensor, heights: list[int], widths: list[int], backend: str) -> list[Tensor]:
    return [
        torch.empty(
            (grad.shape[0], grad.shape[1], h, w),
            dtype=grad.dtype,
            device=grad.device,
            memory_format=torch.channels_last,
        )
        for h, w in zip(heights, widths)
    ]


def _fwd_setup(ctx, inputs, output) -> None:
    maps, _size, bias, backend = inputs
    ctx.heights = [m.shape[2] for m in maps]
    ctx.widths = [m.shape[3] for m in maps]
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.backend = backend


def _fwd_backward(ctx, grad: Tensor):
    grads = torch.ops.contrastive_landmarks.upsample_sum_backward(grad, ctx.heights, ctx.widths, ctx.backend)
    grad_bias = None
    if ctx.bias_dtype is not None:
        grad_bias = grad.sum(dim=(0, 2, 3), dtype=_acc_dtype(grad.dtype)).to(ctx.bias_dtype)
    return list(grads), None, grad_bias, None


def _bwd_setup(ctx, inputs, output) -> None:
    grad, _heights, _widths, backend = inputs
    ctx.size = [grad.shape[2], grad.shape[3]]
    ctx.shape = grad.shape
    ctx.backend = backend
    ctx.options = {"dtype": grad.dtype, "device": grad.device}


def _bwd_backward(ctx, grads: list[Tensor]):
    grads = [g for g in grads if g is not None]
    if not grads:
        return torch.zeros(ctx.shape, **ctx.options), None, None, None
    return torch.ops.contrastive_landmarks.upsample_sum(grads, ctx.size, None, ctx.backend), None, None, None


torch.library.register_autograd("contrastive_landmarks::upsample_sum", _fwd_backward, setup_context=_fwd_setup)
torch.library.register_autograd("contrastive_landmarks::upsample_sum_backward", _bwd_backward, setup_context=_bwd_setup)


def upsample_sum(
    maps: Sequence[Tensor], size: int | Sequence[int], bias: Tensor | None = None, *, backend: Backend = "auto"
) -> Tensor:
    """Dispatching form of :func:`upsample_sum_reference` (same arguments, same result).

    Args:
        maps: ``(B, d, h_s, w_s)`` maps with the same ``d`` (any number of stages, any layout;
            mixed dtypes are promoted).
        size: output ``S`` or ``(S_h, S_w)``.
        bias: optional ``(d,)``.
        backend: ``"auto"`` (see :func:`select_backend`), ``"torch"`` or ``"triton"``.

    Returns:
        ``(B, d, S_h, S_w)`` in channels-last memory format. Differentiable (twice) in ``maps`` and ``bias``.
    """
    check_stage_maps(maps)
    size = grid_size(size)
    d = maps[0].shape[1]
    if any(m.shape[1] != d for m in maps):
        raise ValueError(f"upsample_sum needs maps with the same channel count, got {[m.shape[1] for m in maps]}")
    dtype = maps[0].dtype
    for t in [*maps[1:], *([bias] if bias is not None else [])]:
        dtype = torch.promote_types(dtype, t.dtype)
    if not dtype.is_floating_point:
        raise TypeError(f"upsample_sum needs floating-point maps, got {dtype}")
    if bias is not None:
        if bias.shape != (d,):
            raise ValueError(f"bias must have shape ({d},), got {tuple(bias.shape)}")
        if bias.device != maps[0].device:
            raise ValueError(f"bias is on {bias.device} but the maps are on {maps[0].device}")
        bias = bias.to(dtype)
    select_backend(maps[0].device, dtype, backend)  # validate early, with a clear message
    return torch.ops.contrastive_landmarks.upsample_sum([m.to(dtype) for m in maps], list(size), bias, backend)


# ----------------------------------------------------------------------------------------------------------------------
# linear heads on the hypercolumn


def _split_weight(weight: Tensor, maps: Sequence[Tensor]) -> list[Tensor]:
    channels = [m.shape[1] for m in maps]
    if weight.ndim == 4:
        weight = weight.flatten(1)
    if weight.ndim != 2 or weight.shape[1] != sum(channels):
        raise ValueError(
            f"head weight of shape {tuple(weight.shape)} does not fit stages with {channels} channels "
            f"(expected (d, {sum(channels)}))"
        )
    return list(torch.split(weight, channels, dim=1))


def project_stages_reference(
    maps: Sequence[Tensor], weight: Tensor, bias: Tensor | None, size: tuple[int, int]
) -> Tensor:
    """The materialised definition: ``conv1x1(concat_s up(maps[s]), weight, bias)``.

    Args:
        maps: ``(B, C_s, h_s, w_s)`` stage maps.
        weight: ``(d, ΣC_s)`` or ``(d, ΣC_s, 1, 1)``, input channels in the order of ``maps``.
        bias: ``(d,)`` or ``None``.
        size: output ``(S_h, S_w)``.

    Returns:
        ``(B, d, S_h, S_w)``.
    """
    check_stage_maps(maps)
    _split_weight(weight, maps)
    hyper = torch.cat([F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps], dim=1)
    return F.conv2d(hyper, weight.reshape(weight.shape[0], -1, 1, 1), bias)


def project_stages(
    maps: Sequence[Tensor], weight: Tensor, bias: Tensor | None, size: int | Sequence[int], *, backend: Backend = "auto"
) -> Tensor:
    """A 1×1 linear head on the hypercolumn of ``maps``, computed without the hypercolumn.

    Projects each stage at its native resolution with its slice of ``weight`` (a 1×1 convolution,
    channels-last when the maps are), then upsamples and sums (:func:`upsample_sum`, fused with the
    bias). Exact, because bilinear interpolation weights sum to one. Same arguments and result as
    :func:`project_stages_reference`; ``backend`` is passed to :func:`upsample_sum`.

    Returns:
        ``(B, d, S_h, S_w)`` in channels-last memory format.
    """
    check_stage_maps(maps)
    parts = _split_weight(weight, maps)
    projected = [F.conv2d(m, w[:, :, None, None]) for m, w in zip(maps, parts)]
    return upsample_sum(projected, size, bias, backend=backend)
