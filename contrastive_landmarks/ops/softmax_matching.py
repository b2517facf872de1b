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

Layout: the naive form and the shared input checks are :mod:`.softmax_matching_reference`, the streaming
form's tiles :mod:`.softmax_matching_tiles`, its autograd and the registered custom op
:mod:`.softmax_matching_streaming`, the Triton kernels ``_triton_softmax_matching``; this module picks one
(:func:`softmax_expected_distance`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from .softmax_matching_reference import (
    accumulation_dtype,
    check_inputs,
    key_coordinates,
    softmax_expected_distance_reference,
    spacing_pair,
)
from .softmax_matching_streaming import SoftmaxExpectedDistanceFunction, sed

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
                    f"set before import for the CPU interpreter); got a {q.device.type} tensor"
                )
            if q.shape[-1] > TRITON_MAX_DIM:
                raise ValueError(
                    f"the Triton kernels take d <= {TRITON_MAX_DIM}, got d={q.shape[-1]}; "
                    "use implementation='streaming'"
                )
            if q.dtype == torch.float64:
                raise TypeError(
                    "the Triton kernels take float32/float16/bfloat16 inputs; use "
                    "implementation='streaming' for float64"
                )
        return implementation
    if (
        q.device.type == "cuda"
        and q.shape[-1] <= TRITON_MAX_DIM
        and q.dtype != torch.float64
        and triton_available(q.device)
    ):
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
    check_inputs(q, k, src_xy, key_size)
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if not power >= 0:
        raise ValueError(f"power must be non-negative, got {power}")
    backend = _pick(implementation, q, k)
    if backend == "naive":
        return softmax_expected_distance_reference(
            q, k, src_xy, key_size, scale=scale, power=power, spacing=spacing, normalize=normalize
        )
    sx, sy = spacing_pair(spacing, "spacing")
    acc = accumulation_dtype(q.dtype)
    out, _ = sed(
        q,
        None if k is q else k,
        src_xy.detach().to(acc),
        int(key_size[1]),
        sx,
        sy,
        float(scale),
        float(power),
        bool(normalize),
        backend,
        0,
        0,
        bool(allow_tf32),
    )
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
    docs/performance.md) it is never faster than ``"naive"`` (1.07-1.44x its time) but does not store the
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
    check_inputs(q, k, None, key_size)
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
