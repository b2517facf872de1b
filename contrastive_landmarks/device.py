"""Which device a command runs on, and in which precision: one place for every recipe and command.

:func:`resolve_device` turns what a user typed (``None``, ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``) into a
:class:`torch.device`, refusing in one line a name torch does not know or a GPU this machine does not have;
:func:`autocast_dtype` is the mixed precision a device computes fast (bfloat16 on CPUs with native bfloat16
arithmetic and on GPUs that have it, else float16 on a GPU, else none).
"""

from __future__ import annotations

import torch

__all__ = ["autocast_dtype", "cpu_has_bfloat16", "resolve_device"]


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The :class:`torch.device` for ``name``; ``None`` / ``"auto"``: the first GPU when there is one, else the CPU.

    Raises:
        ValueError: ``name`` is not a device torch knows, or names a CUDA device this machine does not have.
    """
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"--device {name!r} is not a torch device (cpu, cuda, cuda:1, ...): {error}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA device is available on this machine (use cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type not in ("cpu", "mps", "xpu"):
        raise ValueError(f"--device {name}: only cpu and cuda devices are supported")
    return device


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 / AMX): autocast then pays (1.5-1.8x here)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``device`` (``None``: float32 throughout).

    Args:
        precision: ``auto`` (bfloat16 on a GPU that has it, else float16; bfloat16 on a CPU with native
            bfloat16, else float32), ``fp32``, ``fp16`` or ``bf16``.
    """
    if precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"precision must be auto, fp32, fp16 or bf16, got {precision!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_bfloat16() else None
