"""Shared test set-up: offline, Triton's CPU interpreter when there is no GPU, small fixtures."""

import os
import sys
from pathlib import Path

# Both must be set before torch / huggingface_hub / the kernel modules are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover
    pass

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (real faces and fixtures); skips with a reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available at {SHARED_DATA} (only on the development machines)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
