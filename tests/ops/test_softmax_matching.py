"""softmax_expected_distance (naive / streaming / Triton) and softmax_expected_coordinates (naive / SDPA)."""

from __future__ import annotations

import importlib.util
import math
import os

import pytest
import torch

import contrastive_landmarks.ops.softmax_matching as sm
import contrastive_landmarks.ops.softmax_matching_streaming as sms
from contrastive_landmarks.ops import (
    softmax_expected_coordinates,
    softmax_expected_distance,
    softmax_expected_distance_reference,
)
from contrastive_landmarks.ops.softmax_matching import SoftmaxExpectedDistanceFunction, key_coordinates

HAS_TRITON = importlib.util.find_spec("triton") is not None
# Real kernels on CUDA; on the CPU the interpreter (tests/conftest.py sets TRITON_INTERPRET=1 before imports).
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(
    not (HAS_TRITON and (TRITON_DEVICE == "cuda" or os.environ.get("TRITON_INTERPRET") == "1")),
    reason="triton is not installed (or neither CUDA nor TRITON_INTERPRET=1)",
)


def _inputs(batch, h, w, dim, *, shared=False, dtype=torch.float64, n=None, spread=3.0, seed=0):
    """Queries (``n`` of them, default ``h·w``), keys on an ``(h, w)`` grid and source points in cells."""
    g = torch.Generator().manual_seed(seed)
    n = h * w if n is None else n
    q = (torch.randn(batch, n, dim, generator=g, dtype=torch.float64) / math.sqrt(dim) * spread).to(dtype)
    k = (torch.randn(batch, h * w, dim, generator=g, dtype=torch.float64) / math.sqrt(dim) * spread).to(dtype)
    if shared and n == h * w:
        src = key_coordinates((h, w), dtype=torch.float64)[None]
    else:
        src = torch.rand(1 if shared else batch, n, 2, generator=g, dtype=torch.float64) * torch.tensor(
            [w - 1.0, h - 1.0], dtype=torch.float64
        )
    return q, k, src


def _loops(q, k, src, key_size, scale, power, spacing):
    """Element-by-element definition (independent of every implementation), float64."""
    h, w = key_size
    out = torch.zeros(q.shape[0], q.shape[1], dtype=torch.float64)
    for b in range(q.shape[0]):
        for u in range(q.shape[1]):
            logits = [scale * float(q[b, u].double() @ k[b, v].double()) for v in range(h * w)]
            top = max(logits)
            weights = [math.exp(s - top) for s in logits]
            total = sum(weights)
            s_xy = src[b if src.shape[0] > 1 else 0, u].double()
            acc = 0.0
            for v in range(h * w):
                dx = (float(s_xy[0]) - v % w) * spacing[0]
                dy = (float(s_xy[1]) - v // w) * spacing[1]
                acc += weights[v] / total * (dx * dx + dy * dy) ** (power / 2)
            out[b, u] = acc
    return out


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("power", [0.5, 1.0, 1.3])
def test_reference_matches_elementwise_definition(power):
    q, k, src = _inputs(2, 3, 4, 5, n=7)
    got = softmax_expected_distance_reference(q, k, src, (3, 4), scale=1.7, power=power, spacing=(2.0, 0.5))
    want = _loops(q, k, src, (3, 4), 1.7, power, (2.0, 0.5))
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


def test_shared_source_is_exactly_zero_on_the_diagonal():
    # x' = x: source points are the key cells themselves, so a query matching only itself costs 0.
    q = torch.eye(12, dtype=torch.float64)[None] * 50
    src = key_coordinates((3, 4), dtype=torch.float64)[None]
    for impl in ("naive", "streaming"):
        out = softmax_expected_distance(q, q, src, (3, 4), power=0.5, implementation=impl)
        assert out.abs().max() < 1e-200, impl


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("power", [0.5, 1.0, 2.0, 1.3, 0.0])
@pytest.mark.parametrize("blocks", [(None, None), (5, 7), (64, 3)])
def test_streaming_matches_naive_float64(shared, power, blocks):
    q, k, src = _inputs(3, 4, 6, 8, shared=shared, n=24)
    q.requires_grad_(True)
    k.requires_grad_(True)
    kw = dict(scale=2.5, power=power, spacing=(1.5, 2.0))
    ref = softmax_expected_distance_reference(q, k, src, (4, 6), **kw)
    got = SoftmaxExpectedDistanceFunction.apply(q, k, src, 6, 1.5, 2.0, 2.5, power, *blocks)
    grad = torch.randn_like(ref)
    ref_g = torch.autograd.grad(ref, (q, k), grad)
    got_g = torch.autograd.grad(got, (q, k), grad)
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(got_g, ref_g):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("self_keys", [False, True])
def test_streaming_fused_normalization_matches_naive_float64(self_keys):
    q, k, src = _inputs(2, 4, 5, 6, shared=self_keys, spread=4.0)
    q = q.requires_grad_(True)
    k = q if self_keys else k.requires_grad_(True)
    leaves = (q,) if self_keys else (q, k)
    kw = dict(scale=4.0, power=0.5, spacing=(2.0, 1.0), normalize=True)
    ref = softmax_expected_distance_reference(q, k, src, (4, 5), **kw)
    grad = torch.randn_like(ref)
    ref_g = torch.autograd.grad(ref, leaves, grad)
    # tiny tiles: several query chunks, key tiles and chunked normalisation backward
    got = SoftmaxExpectedDistanceFunction.apply(q, None if self_keys else k, src, 5, 2.0, 1.0, 4.0, 0.5, 3, 7, True)
    got_g = torch.autograd.grad(got, leaves, grad)
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(got_g, ref_g):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    op = softmax_expected_distance(q, k, src, (4, 5), implementation="streaming", **kw)
    op_g = torch.autograd.grad(op, leaves, grad)
    assert torch.allclose(op, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(op_g, ref_g):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda a: (
            SoftmaxExpectedDistanceFunction.apply(a, None, src, 5, 2.0, 1.0, 4.0, 0.5, 6, 4, True)
            if self_keys
            else SoftmaxExpectedDistanceFunction.apply(a, k.detach(), src, 5, 2.0, 1.0, 4.0, 0.5, 6, 4, True)
        ),
        (q,),
    )


def test_gradients_come_back_in_the_input_layout():
    # the loss passes (B, d, h, w).flatten(2).transpose(1, 2) views: gradients keep that layout, no copies
    feats = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    view = feats.flatten(2).transpose(1, 2)
    src = key_coordinates((3, 4), dtype=torch.float64)[None]
    out = sms.sed_op(view, None, src, 4, 1.0, 1.0, 2.0, 0.5, True, "streaming", 0, 0, False)[0]
    dq, dk = sms.sed_backward_op(
        torch.ones_like(out), view, None, src, out, out, 4, 1.0, 1.0, 2.0, 0.5, True, "streaming", 0, 0, False
    )
    assert dq.stride() == view.stride() and dk.numel() == 0
    softmax_expected_distance(
        view, view, src, (3, 4), scale=2.0, normalize=True, implementation="streaming"
    ).sum().backward()
    assert feats.grad.is_contiguous()


def test_streaming_more_queries_than_keys_and_op_path():
    q, k, src = _inputs(2, 3, 5, 6, n=40)
    q.requires_grad_(True)
    k.requires_grad_(True)
    ref = softmax_expected_distance_reference(q, k, src, (3, 5), scale=3.0)
    got = softmax_expected_distance(q, k, src, (3, 5), scale=3.0, implementation="streaming")
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)
    g_ref = torch.autograd.grad(ref.sum(), (q, k))
    g_got = torch.autograd.grad(got.sum(), (q, k))
    for a, b in zip(g_got, g_ref):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_gradcheck_streaming_function():
    q, k, src = _inputs(2, 3, 4, 5, n=9)
    q.requires_grad_(True)
    k.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: SoftmaxExpectedDistanceFunction.apply(a, b, src, 4, 1.0, 2.0, 1.5, 0.5, 4, 5), (q, k)
    )
    # x' = x: the same tensor as queries and keys (gradients from both roles add up)
    x = q[:, :12].detach().clone().requires_grad_(True)
    shared = key_coordinates((3, 4), dtype=torch.float64)[None]
    assert torch.autograd.gradcheck(
        lambda a: SoftmaxExpectedDistanceFunction.apply(a, a, shared, 4, 1.0, 1.0, 2.0, 0.5, 5, 3), (x,)
    )


def test_gradcheck_custom_op():
    q, k, src = _inputs(1, 3, 3, 4, n=5)
    q.requires_grad_(True)
    k.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: softmax_expected_distance(a, b, src, (3, 3), scale=2.0, implementation="streaming"), (q, k)
    )


@pytest.mark.parametrize("peaked", [False, True])
def test_streaming_float32_against_float64(peaked):
    # Tolerances from kernel-notes §2(e): fp32 gradients of a peaked softmax are ill-conditioned for every
    # implementation (dS = p (d - L) cancels at the peak), so compare both fp32 forms with fp64.
    q64, k64, src = _inputs(2, 8, 8, 16, shared=True, spread=12.0 if peaked else 2.0)
    kw = dict(scale=7.0 if peaked else 1.0, power=0.5, spacing=4.0)
    ref = softmax_expected_distance_reference(q64.requires_grad_(), k64.requires_grad_(), src, (8, 8), **kw)
    ref_g = torch.autograd.grad(ref.sum(), (q64, k64))
    q32, k32 = q64.detach().float().requires_grad_(), k64.detach().float().requires_grad_()
    grad_tol = 2e-2 if peaked else 1e-4
    for impl in ("naive", "streaming"):
        out = softmax_expected_distance(q32, k32, src.float(), (8, 8), implementation=impl, **kw)
        grads = torch.autograd.grad(out.sum(), (q32, k32))
        assert out.dtype == torch.float32
        assert _rel(out, ref) < 1e-5, impl
        for a, b in zip(grads, ref_g):
            assert _rel(a, b) < grad_tol, impl


def test_noncontiguous_and_expanded_inputs():
    q, k, src = _inputs(2, 4, 4, 6, n=16)
    q_t = q.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_(True)  # (B, N, d) with stride(-1) != 1
    k_t = k.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_(True)
    assert not q_t.is_contiguous()
    src_b = src[:1].expand(2, -1, -1)  # stride-0 batch
    ref = softmax_expected_distance_reference(q, k, src_b.contiguous(), (4, 4), scale=2.0)
    got = softmax_expected_distance(q_t, k_t, src_b, (4, 4), scale=2.0, implementation="streaming")
    assert torch.allclose(got, ref, atol=1e-12)
    # an expanded upstream gradient (stride 0), as .mean() produces
    got.mean().backward()
    q2, k2 = q.clone().requires_grad_(True), k.clone().requires_grad_(True)
    softmax_expected_distance_reference(q2, k2, src_b.contiguous(), (4, 4), scale=2.0).mean().backward()
    assert torch.allclose(q_t.grad, q2.grad, atol=1e-12) and torch.allclose(k_t.grad, k2.grad, atol=1e-12)


def test_opcheck_custom_op():
    q, k, src = _inputs(2, 3, 4, 8, dtype=torch.float32, n=12)
    q.requires_grad_(True)
    k.requires_grad_(True)
    for keys, normalize in ((k, False), (None, True)):
        args = (q, keys, src.float(), 4, 1.0, 2.0, 3.0, 0.5, normalize, "streaming", 0, 0, False)
        torch.library.opcheck(sms.sed_op, args)
        out, lse = sms.sed_op(*args)
        grad = torch.randn_like(out)
        torch.library.opcheck(
            sms.sed_backward_op,
            (
                grad,
                q.detach(),
                None if keys is None else keys.detach(),
                src.float(),
                out.detach(),
                lse.detach(),
                *args[3:],
            ),
        )


def test_torch_compile_fullgraph():
    # aot_eager traces through the fake (meta) functions and the registered autograd formula.
    q, k, src = _inputs(2, 4, 4, 8, dtype=torch.float32, n=16)
    q.requires_grad_(True)
    k.requires_grad_(True)

    def loss(a, b):
        return softmax_expected_distance(a, b, src.float(), (4, 4), scale=2.0, implementation="streaming").mean()

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    got = compiled(q, k)
    got_g = torch.autograd.grad(got, (q, k))
    want = loss(q, k)
    want_g = torch.autograd.grad(want, (q, k))
    assert torch.allclose(got, want, rtol=1e-6)
    for a, b in zip(got_g, want_g):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_dtypes_of_outputs_and_gradients():
    q, k, src = _inputs(1, 4, 4, 8, dtype=torch.bfloat16)
    q.requires_grad_(True)
    k.requires_grad_(True)
    out = softmax_expected_distance(q, k, src.float(), (4, 4), implementation="streaming")
    assert out.dtype == torch.float32
    dq, dk = torch.autograd.grad(out.sum(), (q, k))
    assert dq.dtype == torch.bfloat16 and dk.dtype == torch.bfloat16
    ref = softmax_expected_distance_reference(q.double(), k.double(), src, (4, 4))
    assert _rel(out, ref) < 1e-5


def test_dispatch(monkeypatch):
    small = _inputs(2, 4, 4, 8, dtype=torch.float32)
    big_q = torch.zeros(8, 32 * 32, 4)
    assert sm._pick("auto", small[0], small[1]) == "naive"
    assert sm._pick("auto", big_q, big_q) == "streaming"
    assert sm._pick("streaming", small[0], small[1]) == "streaming"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="needs the triton package and a CUDA tensor"):
        softmax_expected_distance(small[0].float(), small[1].float(), small[2].float(), (4, 4), implementation="triton")


def test_input_errors():
    q, k, src = _inputs(2, 3, 4, 5)
    with pytest.raises(ValueError, match="key_size"):
        softmax_expected_distance(q, k, src, (4, 4))
    with pytest.raises(ValueError, match="must agree on B and d"):
        softmax_expected_distance(q, k[..., :4], src, (3, 4))
    with pytest.raises(ValueError, match="src_xy must be"):
        softmax_expected_distance(q, k, src[..., :1], (3, 4))
    with pytest.raises(ValueError, match="src_xy must be"):
        softmax_expected_distance(q, k, src[:, :5], (3, 4))
    with pytest.raises(ValueError, match=r"q must be \(B, N, d\)"):
        softmax_expected_distance(q[0], k, src, (3, 4))
    with pytest.raises(TypeError, match="same dtype"):
        softmax_expected_distance(q, k.float(), src, (3, 4))
    with pytest.raises(TypeError, match="floating-point"):
        softmax_expected_distance(q, k, src.long(), (3, 4))
    with pytest.raises(ValueError, match="scale must be positive"):
        softmax_expected_distance(q, k, src, (3, 4), scale=0.0)
    with pytest.raises(ValueError, match="power must be non-negative"):
        softmax_expected_distance(q, k, src, (3, 4), power=-1.0)
    with pytest.raises(ValueError, match="implementation must be"):
        softmax_expected_distance(q, k, src, (3, 4), implementation="fast")


# ------------------------------------------------------------------------------------------ soft-argmax


@pytest.mark.parametrize("n", [5, 16])
def test_expected_coordinates_sdpa_matches_naive(n):
    q, k, _ = _inputs(2, 4, 4, 8, dtype=torch.float32, n=n)
    q.requires_grad_(True)
    k.requires_grad_(True)
    naive = softmax_expected_coordinates(q, k, (4, 4), scale=3.0, implementation="naive")
    sdpa = softmax_expected_coordinates(q, k, (4, 4), scale=3.0, implementation="sdpa")
    weights = torch.softmax(3.0 * q.double() @ k.double().transpose(1, 2), -1)
    want = weights @ key_coordinates((4, 4), dtype=torch.float64)
    assert naive.shape == (2, n, 2)
    assert torch.allclose(naive.double(), want, atol=1e-5) and torch.allclose(sdpa.double(), want, atol=1e-5)
    g_naive = torch.autograd.grad(naive.sum(), (q, k))
    g_sdpa = torch.autograd.grad(sdpa.sum(), (q, k))
    for a, b in zip(g_sdpa, g_naive):
        assert torch.allclose(a, b, atol=1e-4)
    assert softmax_expected_coordinates(q, k, (4, 4), implementation="auto").shape == (2, n, 2)
    with pytest.raises(ValueError, match="implementation must be"):
        softmax_expected_coordinates(q, k, (4, 4), implementation="triton")


# ------------------------------------------------------------------------------------------ Triton (interpreter)


def _check_triton(batch, h, w, dim, dtype, *, shared, power=0.5, n=None, blocks=(0, 0), tol=(1e-5, 1e-4)):
    q, k, src = _inputs(batch, h, w, dim, shared=shared, n=n, spread=2.0)
    q, k = q.to(dtype).double(), k.to(dtype).double()  # the reference sees the rounded inputs
    ref_q, ref_k = q.clone().requires_grad_(True), k.clone().requires_grad_(True)
    kw = dict(scale=3.0, power=power)
    ref = softmax_expected_distance_reference(ref_q, ref_k, src, (h, w), spacing=(2.0, 3.0), **kw)
    grad = torch.randn_like(ref)
    ref_g = torch.autograd.grad(ref, (ref_q, ref_k), grad)
    dev = TRITON_DEVICE
    q_t, k_t = q.to(dev, dtype), k.to(dev, dtype)
    mod = sms.triton_module()
    out, lse = mod.forward(q_t, k_t, src.float().to(dev), w, 2.0, 3.0, 3.0, power, *blocks)
    dq, dk = mod.backward(
        grad.float().to(dev), q_t, k_t, src.float().to(dev), out, lse, w, 2.0, 3.0, 3.0, power, *blocks
    )
    out, lse, dq, dk, q_t, k_t = (t.cpu() for t in (out, lse, dq, dk, q_t, k_t))
    assert out.dtype == torch.float32 and dq.dtype == dtype and dk.dtype == dtype
    assert _rel(out, ref) < tol[0]
    assert _rel(dq, ref_g[0]) < tol[1] and _rel(dk, ref_g[1]) < tol[1]
    # the natural-log lse the backward relies on
    logits = 3.0 * q_t.double() @ k_t.double().transpose(1, 2)
    assert torch.allclose(lse.double(), torch.logsumexp(logits, -1), atol=1e-4)


@needs_triton
@pytest.mark.parametrize(
    ("h", "w", "dim", "shared", "power"),
    [
        (6, 6, 16, True, 0.5),  # x' = x, the projector objective
        (7, 9, 24, False, 1.0),  # non-multiple-of-block N, M and d
        (5, 5, 20, False, 1.3),  # general power
        (6, 6, 16, True, 2.0),
    ],
)
def test_triton_float32_matches_reference(h, w, dim, shared, power):
    _check_triton(2, h, w, dim, torch.float32, shared=shared, power=power)


@needs_triton
def test_triton_12x12_d32_small_blocks_and_more_queries():
    _check_triton(2, 12, 12, 32, torch.float32, shared=True, blocks=(32, 16))
    _check_triton(1, 5, 6, 16, torch.float32, shared=False, n=70, blocks=(16, 16))


@needs_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_half_precision(dtype):
    # 16-bit operands; P∘(D-L) is rounded to the input dtype before its dot (as FlashAttention)
    _check_triton(2, 6, 6, 16, dtype, shared=True, tol=(1e-5, 3e-2 if dtype == torch.bfloat16 else 3e-3))


@needs_triton
def test_triton_through_the_public_op():
    q, k, src = _inputs(2, 6, 6, 16, dtype=torch.float32, shared=True)
    q, k, src = (t.to(TRITON_DEVICE) for t in (q, k, src))
    q.requires_grad_(True)
    k.requires_grad_(True)
    out = softmax_expected_distance(q, k, src.float(), (6, 6), scale=2.0, implementation="triton")
    ref = softmax_expected_distance(q, k, src.float(), (6, 6), scale=2.0, implementation="streaming")
    assert torch.allclose(out, ref, rtol=1e-5)
    g_out = torch.autograd.grad(out.sum(), (q, k))
    g_ref = torch.autograd.grad(ref.sum(), (q, k))
    for a, b in zip(g_out, g_ref):
        assert _rel(a, b) < 1e-4
    # the fused normalisation around the kernels, and x' = x (one gradient for both roles)
    ref_n = softmax_expected_distance(q, q, src.float(), (6, 6), scale=2.0, normalize=True, implementation="naive")
    out_n = softmax_expected_distance(q, q, src.float(), (6, 6), scale=2.0, normalize=True, implementation="triton")
    assert torch.allclose(out_n, ref_n, rtol=1e-5)
    assert _rel(torch.autograd.grad(out_n.sum(), q)[0], torch.autograd.grad(ref_n.sum(), q)[0]) < 1e-4
    zeros = torch.zeros(1, 4, 300, device=TRITON_DEVICE)
    with pytest.raises(ValueError, match="d <= 256"):
        softmax_expected_distance(zeros, zeros, zeros[..., :2], (2, 2), implementation="triton")


_PEAK_RSS_SCRIPT = """
import resource, sys
import torch
from contrastive_landmarks.losses import spatial_contrastive_loss

torch.manual_seed(0)
feats = torch.randn(8, 64, 48, 48, requires_grad=True)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
spatial_contrastive_loss(feats).backward()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024, "torch._dynamo" in sys.modules)
"""


def test_spatial_contrastive_loss_streams_in_a_fresh_process():
    # Issue 31: forward + backward at B=8, d=64, 48x48 (B*N*M = 4.2e7, the streaming form) grew peak RSS by
    # 196-260 MB in a fresh process: the registered custom op imports torch._dynamo (sympy, triton, inductor) on
    # its first call. Eager calls now skip the dispatcher; the naive form would hold ~510 MB (3 x 170 MB).
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    growth, dynamo = done.stdout.split()
    assert float(growth) < 150, f"peak RSS grew by {float(growth):.0f} MB (bar 150 MB)"
    assert dynamo == "False", "an eager call imported torch._dynamo"
