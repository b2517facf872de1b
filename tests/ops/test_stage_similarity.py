"""ops.stage_similarity: exact PyTorch form and Triton kernel (interpreted on the CPU) vs the reference."""

import importlib
import os

import pytest
import torch
import torch.nn.functional as F

from contrastive_landmarks.ops import stage_similarity, stage_similarity_reference

us_module = importlib.import_module("contrastive_landmarks.ops.upsampling")
ss_module = importlib.import_module("contrastive_landmarks.ops.similarity")
triton_only = pytest.mark.skipif(
    not us_module.triton_available() or (not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"),
    reason="needs triton (on CUDA, or the CPU interpreter that conftest.py enables)",
)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

CASES = [
    ([(6, 6), (3, 3), (2, 2)], (12, 12)),
    ([(5, 7), (3, 2), (1, 1)], (9, 13)),
    ([(13, 9), (7, 5), (1, 4)], (7, 6)),  # downsampling, a single row
]


def _inputs(shapes, batch=2, k=5, channels=(8, 16, 12), dtype=torch.float32, device="cpu", relu=False):
    maps = [torch.randn(batch, c, h, w, dtype=dtype, device=device) for c, (h, w) in zip(channels, shapes)]
    if relu:
        maps = [m.relu() for m in maps]
    queries = torch.cat(
        [F.normalize(torch.randn(batch, k, c, dtype=dtype, device=device), dim=-1) for c in channels], -1
    )
    return queries, maps


def _naive(queries, maps, size, normalize=True):
    """Independent definition: per location, per stage, interpolate by hand from the four taps, normalise, dot."""
    s_h, s_w = size
    out = torch.zeros(queries.shape[0], queries.shape[1], s_h, s_w, dtype=torch.float64)
    start = 0
    for m in maps:
        c, h, w = m.shape[1:]
        q = queries[..., start : start + c].double()
        start += c
        for i in range(s_h):
            sy = max((i + 0.5) * h / s_h - 0.5, 0.0)
            y0 = min(int(sy), h - 1)
            y1, ly = min(y0 + 1, h - 1), sy - y0
            for j in range(s_w):
                sx = max((j + 0.5) * w / s_w - 0.5, 0.0)
                x0 = min(int(sx), w - 1)
                x1, lx = min(x0 + 1, w - 1), sx - x0
                f = m.double()
                u = (1 - ly) * ((1 - lx) * f[:, :, y0, x0] + lx * f[:, :, y0, x1]) + ly * (
                    (1 - lx) * f[:, :, y1, x0] + lx * f[:, :, y1, x1]
                )  # (B, C)
                if normalize:
                    u = u / u.norm(dim=1, keepdim=True).clamp(min=1e-12)
                out[:, :, i, j] += torch.einsum("bkc,bc->bk", q, u)
    return out.flatten(2)


# ----------------------------------------------------------------------------------------------------------------------
# exact PyTorch form


@pytest.mark.parametrize(("shapes", "size"), CASES)
@pytest.mark.parametrize("normalize", [True, False])
def test_torch_form_matches_reference(shapes, size, normalize):
    queries, maps = _inputs(shapes, dtype=torch.float64)
    out = stage_similarity(queries, maps, size, normalize=normalize, backend="torch")
    ref = stage_similarity_reference(queries, maps, size, normalize=normalize)
    assert out.shape == (2, 5, size[0] * size[1]) and out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_reference_matches_hand_interpolation():
    queries, maps = _inputs([(5, 7), (3, 2), (1, 1)], dtype=torch.float64)
    torch.testing.assert_close(stage_similarity_reference(queries, maps, (9, 13)), _naive(queries, maps, (9, 13)))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_torch_form_float32_relu_features_many_queries(layout):
    queries, maps = _inputs([(12, 12), (6, 6), (3, 3)], batch=2, k=20, relu=True)
    maps = [m.contiguous(memory_format=layout) for m in maps]
    exact = stage_similarity_reference(queries.double(), [m.double() for m in maps], (24, 24))
    out = stage_similarity(queries, maps, (24, 24), backend="torch")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), exact, rtol=0, atol=1e-6)


def test_zero_features_give_zero_scores():
    queries, maps = _inputs([(4, 4), (2, 2), (1, 1)])
    maps[1] = torch.zeros_like(maps[1])
    ref = stage_similarity_reference(queries, maps, (8, 8))
    torch.testing.assert_close(stage_similarity(queries, maps, (8, 8), backend="torch"), ref)
    zero_only = stage_similarity(queries[..., 8:24], [maps[1]], (8, 8), backend="torch")
    assert torch.equal(zero_only, torch.zeros_like(zero_only))


def test_gradients_fall_back_to_differentiable_pytorch(monkeypatch):
    queries, maps = _inputs([(4, 3), (2, 2)], k=3, channels=(3, 4), dtype=torch.float64)
    queries.requires_grad_()
    maps = [m.requires_grad_() for m in maps]

    def fail(*args, **kwargs):
        raise AssertionError("the forward-only custom op was used although gradients are required")

    monkeypatch.setattr(ss_module, "_stage_similarity_op", fail)
    assert torch.autograd.gradcheck(lambda q, *m: stage_similarity(q, list(m), (5, 6)), (queries, *maps))


def test_forward_only_op_refuses_backward_clearly():
    queries, maps = _inputs([(4, 4), (2, 2)], channels=(8, 16))
    queries.requires_grad_()
    out = torch.ops.contrastive_landmarks.stage_similarity(queries, maps, [6, 6], True, "torch")
    with pytest.raises(RuntimeError, match="forward-only"):
        out.sum().backward()
    with pytest.raises(RuntimeError, match="forward-only"):
        stage_similarity(queries, maps, 6, backend="triton")


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=triton_only)])
def test_opcheck(backend):
    queries, maps = _inputs([(3, 3), (2, 1)], batch=1, k=3, channels=(4, 8))
    torch.library.opcheck(
        torch.ops.contrastive_landmarks.stage_similarity.default, (queries, maps, [5, 4], True, backend)
    )


def test_auto_on_cpu_uses_the_torch_form(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the Triton kernel was called for CPU tensors")

    monkeypatch.setattr(ss_module, "triton_kernels", fail)
    queries, maps = _inputs([(6, 6), (3, 3), (2, 2)])
    with torch.no_grad():
        out = stage_similarity(queries, maps, (12, 12))
    torch.testing.assert_close(out, stage_similarity_reference(queries, maps, (12, 12)), rtol=1e-5, atol=1e-5)


def test_errors_name_the_problem():
    queries, maps = _inputs([(6, 6), (3, 3), (2, 2)])
    with pytest.raises(ValueError, match=r"queries must be \(B, K, 36\)"):
        stage_similarity(queries[..., :-1], maps, 12)
    with pytest.raises(ValueError, match="query sets"):
        stage_similarity(queries[:1], maps, 12)
    with pytest.raises(ValueError, match="batch size"):
        stage_similarity(queries, [maps[0], maps[1][:1], maps[2]], 12)
    with pytest.raises(ValueError, match="positive"):
        stage_similarity(queries, maps, (0, 12))


# ----------------------------------------------------------------------------------------------------------------------
# Triton kernel (interpreted on the CPU)


@triton_only
@pytest.mark.parametrize(("shapes", "size"), CASES)
@pytest.mark.parametrize("normalize", [True, False])
def test_triton_matches_reference(shapes, size, normalize):
    queries, maps = _inputs(shapes, device=DEVICE)
    with torch.no_grad():
        out = stage_similarity(queries, maps, size, normalize=normalize, backend="triton")
    ref = stage_similarity_reference(queries, maps, size, normalize=normalize)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@triton_only
def test_triton_five_stages_many_queries_zero_stage_and_strided_maps():
    channels = (8, 16, 12, 4, 40)  # 40 > BLOCK_C: several channel chunks
    shapes = [(6, 6), (3, 3), (2, 2), (1, 1), (5, 3)]
    queries, maps = _inputs(shapes, batch=1, k=70, channels=channels, device=DEVICE)  # K > BLOCK_K = 64
    maps[2] = torch.zeros_like(maps[2])
    maps[0] = maps[0].transpose(2, 3)  # not contiguous
    with torch.no_grad():
        out = stage_similarity(queries, maps, (7, 9), backend="triton")  # two launches: 4 stages + 1
    torch.testing.assert_close(out, stage_similarity_reference(queries, maps, (7, 9)), rtol=1e-5, atol=1e-5)


@triton_only
def test_triton_bfloat16_accumulates_in_fp32():
    queries, maps = _inputs([(6, 6), (3, 3), (2, 2)], channels=(32, 32, 32), device=DEVICE)
    q16, m16 = queries.bfloat16(), [m.bfloat16() for m in maps]
    with torch.no_grad():
        out = stage_similarity(q16, m16, (12, 12), backend="triton")
    exact = stage_similarity_reference(q16.float(), [m.float() for m in m16], (12, 12))
    assert out.dtype == torch.bfloat16
    assert (out.float() - exact).abs().max() <= 2.0**-7 * exact.abs().max()  # one bf16 rounding of the result
