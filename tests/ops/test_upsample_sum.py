"""ops.upsample_sum / project_stages: PyTorch and Triton (interpreted on the CPU) paths vs the references."""

import importlib
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from contrastive_landmarks import ops
from contrastive_landmarks.ops import (
    project_stages,
    project_stages_reference,
    select_backend,
    upsample_sum,
    upsample_sum_reference,
)

us_module = importlib.import_module("contrastive_landmarks.ops.upsampling")  # the module, not the function
HAS_TRITON = us_module.triton_available()
triton_only = pytest.mark.skipif(
    not HAS_TRITON or (not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"),
    reason="needs triton (on CUDA, or the CPU interpreter that conftest.py enables)",
)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# (stage sizes, output size): the shapes, odd and non-square, a downsampled stage, identity, 1x1
CASES = [
    ([(6, 6), (3, 3), (2, 2)], (12, 12)),
    ([(5, 7), (3, 2), (1, 1)], (9, 13)),
    ([(13, 9), (7, 5)], (7, 6)),  # downsampling (and the identity for 7x5 -> 7x6 rows)
]


def _maps(shapes, batch=2, d=32, dtype=torch.float32, device="cpu"):
    return [torch.randn(batch, d, h, w, dtype=dtype, device=device) for h, w in shapes]


def _naive(maps, size, bias=None):
    """An independent definition: the sum of interpolated NCHW maps (no channels-last, no chunking)."""
    out = sum(F.interpolate(m.contiguous(), size=size, mode="bilinear", align_corners=False) for m in maps)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


# ----------------------------------------------------------------------------------------------------------------------
# PyTorch path


@pytest.mark.parametrize(("shapes", "size"), CASES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_torch_path_matches_reference(shapes, size, with_bias):
    maps = _maps(shapes, dtype=torch.float64)
    bias = torch.randn(32, dtype=torch.float64) if with_bias else None
    out = upsample_sum(maps, size, bias, backend="torch")
    assert out.shape == (2, 32, *size) and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, _naive(maps, size, bias), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, upsample_sum_reference(maps, size, bias), rtol=1e-12, atol=1e-12)


def test_torch_path_chunks_batches_and_accumulates_low_precision_in_fp32(monkeypatch):
    monkeypatch.setattr(us_module, "_CPU_CHUNK_BYTES", 1)  # one batch element per chunk
    maps = _maps([(6, 6), (3, 3), (2, 2)], batch=3)
    torch.testing.assert_close(upsample_sum(maps, (12, 12), backend="torch"), _naive(maps, (12, 12)))
    half = [m.bfloat16() for m in maps]
    out = upsample_sum(half, (12, 12), backend="torch")
    exact = upsample_sum_reference([m.float() for m in half], (12, 12))  # fp32 sum of the bf16 inputs
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), exact.bfloat16().float(), rtol=0, atol=0)  # rounded once


def test_gradcheck_float64_torch_path():
    maps = [m.requires_grad_() for m in _maps([(4, 3), (2, 2), (1, 1)], d=3, dtype=torch.float64)]
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def f(*args):
        return upsample_sum(list(args[:-1]), (5, 7), args[-1], backend="torch")

    assert torch.autograd.gradcheck(f, (*maps, bias))
    assert torch.autograd.gradgradcheck(f, (*maps, bias))


def test_backward_accepts_any_gradient_layout():
    maps = [m.requires_grad_() for m in _maps([(6, 6), (3, 3)], dtype=torch.float64)]
    out = upsample_sum(maps, (12, 12), backend="torch")
    grad = torch.randn(12, 12, 2, 32, dtype=torch.float64).permute(2, 3, 0, 1)  # neither NCHW nor NHWC
    expanded = torch.randn(1, 32, 1, 1, dtype=torch.float64).expand(2, 32, 12, 12)  # stride 0
    for g in (grad, expanded):
        got = torch.autograd.grad(out, maps, g, retain_graph=True)
        ref_maps = [m.detach().clone().requires_grad_() for m in maps]
        want = torch.autograd.grad(_naive(ref_maps, (12, 12)), ref_maps, g)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=triton_only)])
def test_opcheck(backend):
    maps = [m.requires_grad_() for m in _maps([(3, 3), (2, 1)], batch=1, d=4)]
    bias = torch.randn(4, requires_grad=True)
    torch.library.opcheck(torch.ops.contrastive_landmarks.upsample_sum.default, (maps, [5, 4], bias, backend))
    grad = torch.randn(1, 4, 5, 4, requires_grad=True)
    torch.library.opcheck(
        torch.ops.contrastive_landmarks.upsample_sum_backward.default, (grad, [3, 2], [3, 1], backend)
    )


# ----------------------------------------------------------------------------------------------------------------------
# Triton kernels (interpreted on the CPU)


@triton_only
@pytest.mark.parametrize(("shapes", "size"), CASES)
def test_triton_forward_backward_match_reference(shapes, size):
    maps = [m.requires_grad_() for m in _maps(shapes, device=DEVICE)]
    bias = torch.randn(32, device=DEVICE, requires_grad=True)
    out = upsample_sum(maps, size, bias, backend="triton")
    ref_maps = [m.detach().clone().requires_grad_() for m in maps]
    ref_bias = bias.detach().clone().requires_grad_()
    ref = _naive(ref_maps, size, ref_bias)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(ref)
    out.backward(grad)
    ref.backward(grad)
    for m, r in zip(maps, ref_maps):
        torch.testing.assert_close(m.grad, r.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bias.grad, ref_bias.grad, rtol=1e-5, atol=1e-4)


@triton_only
@pytest.mark.parametrize("gpu_blocks", [False, True])
def test_triton_backward_window_covers_every_tap(monkeypatch, gpu_blocks):
    """Many (h, S) pairs (up, down, identity) in one call, one channel: the gather window misses no tap.

    ``gpu_blocks`` runs the interpreter with the (smaller) block sizes used on a GPU.
    """
    kernels = us_module.triton_kernels()
    if gpu_blocks:
        monkeypatch.setattr(kernels, "interpreted", lambda t: False)
    size = (12, 9)
    shapes = [(2, 3), (5, 4), (12, 9), (25, 17), (3, 30)]
    grad = torch.randn(1, 1, *size, device=DEVICE)
    got = kernels.upsample_sum_backward_triton(grad, shapes)
    maps = [torch.zeros(1, 1, h, w, device=DEVICE, requires_grad=True) for h, w in shapes]
    want = torch.autograd.grad(_naive(maps, size), maps, grad)
    for (h, w), a, b in zip(shapes, got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"stage {h}x{w} -> {size}")
    out = kernels.upsample_sum_triton([g.detach() for g in got], size)
    torch.testing.assert_close(out, _naive([g.detach() for g in got], size), rtol=1e-5, atol=1e-5)


@triton_only
def test_triton_five_stages_and_non_contiguous_inputs():
    base = torch.randn(2, 16, 5, 7, device=DEVICE)
    maps = [
        base.transpose(2, 3),  # (2, 16, 7, 5), not contiguous in any format
        torch.randn(2, 3, 3, 32, device=DEVICE)[:, :, :, ::2].permute(0, 3, 1, 2),  # (2, 16, 3, 3), strided
        torch.randn(2, 16, 2, 2, device=DEVICE),
        torch.randn(2, 16, 1, 1, device=DEVICE),
        torch.randn(2, 16, 13, 9, device=DEVICE).contiguous(memory_format=torch.channels_last),
    ]
    bias = torch.randn(16, device=DEVICE)
    out = upsample_sum(maps, (8, 11), bias, backend="triton")  # two launches: 4 stages + 1
    torch.testing.assert_close(out, _naive(maps, (8, 11), bias), rtol=1e-5, atol=1e-5)


@triton_only
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_low_precision_accumulates_in_fp32(dtype):
    maps = [m.to(dtype).requires_grad_() for m in _maps([(6, 6), (3, 3), (2, 2)], device=DEVICE)]
    bias = torch.randn(32, device=DEVICE).to(dtype)
    out = upsample_sum(maps, (12, 12), bias, backend="triton")
    assert out.dtype == dtype
    exact = _naive([m.detach().float() for m in maps], (12, 12), bias.float())
    ulp = 2.0**-7 if dtype == torch.bfloat16 else 2.0**-10
    assert (out.float() - exact).abs().max() <= ulp * exact.abs().max()  # one rounding of the fp32 sum
    grad = torch.randn(2, 32, 12, 12, device=DEVICE)
    out.backward(grad.to(dtype))
    ref_maps = [m.detach().float().requires_grad_() for m in maps]
    want = torch.autograd.grad(_naive(ref_maps, (12, 12)), ref_maps, grad.to(dtype).float())
    for m, w in zip(maps, want):
        assert m.grad.dtype == dtype
        torch.testing.assert_close(m.grad.float(), w, rtol=2 * ulp, atol=2 * ulp * w.abs().max().item())


@triton_only
def test_project_stages_triton_matches_reference():
    maps = _maps([(6, 6), (3, 3), (2, 2)], d=8, device=DEVICE)
    weight = torch.randn(32, 24, device=DEVICE)
    bias = torch.randn(32, device=DEVICE)
    out = project_stages(maps, weight, bias, (12, 12), backend="triton")
    torch.testing.assert_close(out, project_stages_reference(maps, weight, bias, (12, 12)), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------------
# project_stages on the CPU path


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("with_bias", [False, True])
def test_project_stages_matches_reference_with_weight_gradients(layout, with_bias):
    maps = [m.contiguous(memory_format=layout) for m in _maps([(6, 6), (3, 3), (2, 2)], d=8, dtype=torch.float64)]
    weight = torch.randn(16, 24, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(16, dtype=torch.float64, requires_grad=True) if with_bias else None
    out = project_stages(maps, weight, bias, (12, 12))
    ref = project_stages_reference(maps, weight, bias, (12, 12))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(ref)
    params = [weight] + ([bias] if with_bias else [])
    for a, b in zip(torch.autograd.grad(out, params, grad), torch.autograd.grad(ref, params, grad)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_project_stages_compiles():
    maps = _maps([(6, 6), (3, 3)], d=4)
    weight = torch.randn(8, 8, requires_grad=True)
    compiled = torch.compile(lambda m, w: project_stages(m, w, None, (12, 12)), fullgraph=True, backend="eager")
    out = compiled(maps, weight)
    torch.testing.assert_close(out, project_stages_reference(maps, weight, None, (12, 12)), rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------------------------
# dispatch and errors


def test_select_backend(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert select_backend(cpu, torch.float32) == "torch"
    assert select_backend(cpu, torch.float32, "torch") == "torch"
    monkeypatch.setattr(us_module, "triton_available", lambda: True)
    assert select_backend(cuda, torch.float32) == "triton"
    assert select_backend(cuda, torch.bfloat16) == "triton"
    assert select_backend(cuda, torch.float64) == "torch"  # the kernels are fp32/bf16/fp16
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        select_backend(cpu, torch.float32, "triton")
    with pytest.raises(TypeError, match="float64"):
        select_backend(cuda, torch.float64, "triton")
    monkeypatch.setattr(us_module, "triton_available", lambda: False)
    assert select_backend(cuda, torch.float32) == "torch"
    with pytest.raises(RuntimeError, match="needs the triton package"):
        select_backend(cuda, torch.float32, "triton")
    with pytest.raises(ValueError, match="backend must be one of"):
        select_backend(cpu, torch.float32, "cuda")


def test_auto_on_cpu_never_runs_triton(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the Triton kernels were called for CPU tensors")

    monkeypatch.setattr(us_module, "triton_kernels", fail)
    maps = _maps([(6, 6), (3, 3)])
    torch.testing.assert_close(upsample_sum(maps, 12), _naive(maps, (12, 12)))


def test_package_imports_and_runs_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from contrastive_landmarks.ops import upsample_sum, select_backend\n"
        "assert select_backend(torch.device('cuda'), torch.float32) == 'torch'\n"
        "print(tuple(upsample_sum([torch.ones(1, 2, 3, 3)], 6).shape))\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("(1, 2, 6, 6)")


def test_errors_name_the_problem():
    maps = _maps([(6, 6), (3, 3)])
    with pytest.raises(ValueError, match="same channel count"):
        upsample_sum([maps[0], torch.randn(2, 7, 3, 3)], 12)
    with pytest.raises(ValueError, match="bias must have shape"):
        upsample_sum(maps, 12, torch.randn(31))
    with pytest.raises(ValueError, match="batch size"):
        upsample_sum([maps[0], torch.randn(3, 32, 3, 3)], 12)
    with pytest.raises(ValueError, match=r"\(B, C, h, w\)"):
        upsample_sum([torch.randn(32, 6, 6)], 12)
    with pytest.raises(ValueError, match="non-empty list"):
        upsample_sum([], 12)
    with pytest.raises(ValueError, match="positive"):
        upsample_sum(maps, (12, 0))
    with pytest.raises(TypeError, match="floating-point"):
        upsample_sum([torch.ones(1, 2, 3, 3, dtype=torch.int64)], 6)
    with pytest.raises(ValueError, match="does not fit stages"):
        project_stages(maps, torch.randn(16, 63), None, 12)
    assert ops.upsample_sum is upsample_sum
