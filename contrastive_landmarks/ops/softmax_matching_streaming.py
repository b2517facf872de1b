"""The autograd of the streaming (flash-style) form of :func:`~contrastive_landmarks.ops.softmax_expected_distance`:
:class:`SoftmaxExpectedDistanceFunction` over the plain PyTorch tiles of :mod:`.softmax_matching_tiles`, and the
registered custom op (:func:`sed_op`, :func:`sed_backward_op`) that runs them, or the Triton kernels on CUDA, under
``torch.compile``; :func:`sed` is what the dispatch calls.

Only ``lse_u`` and ``L_u`` are saved; backward recomputes the tiles. With ``normalize=True`` the L2
normalisation is fused. Tested against :func:`.softmax_matching_reference.softmax_expected_distance_reference`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .softmax_matching_reference import accumulation_dtype, normalize_rows
from .softmax_matching_tiles import (
    STREAMING_TILE_BYTES,
    inverse_norms,
    normalize_backward_,
    streaming_backward,
    streaming_forward,
)

__all__ = [
    "STREAMING_TILE_BYTES",
    "SoftmaxExpectedDistanceFunction",
    "sed",
    "sed_backward_op",
    "sed_op",
    "triton_module",
]


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
        out, lse = streaming_forward(q, k, src_xy, key_w, sx, sy, scale, power, block_q, block_k, normalize)
        ctx.save_for_backward(q, k, src_xy, out, lse)
        ctx.args = (key_w, sx, sy, scale, power, block_q, block_k, normalize)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, src_xy, out, lse = ctx.saved_tensors
        dq, dk = streaming_backward(grad, q, k, src_xy, out, lse, *ctx.args)
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
    return streaming_forward(q, k, src, key_w, sx, sy, scale, power, block_q or None, block_k or None, normalize)


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
            normalize_backward_(dq, q, inverse_norms(q, acc, True), acc, 4096)
            if dk is not None:
                normalize_backward_(dk, k, inverse_norms(k, acc, True), acc, 4096)
    else:
        dq, dk = streaming_backward(
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
