"""Shared test set-up: offline, Triton's CPU interpreter when there is no GPU, small fixtures."""

import os
import sys
from pathlib import Path

# These must be set before torch / huggingface_hub / the kernel modules are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # one of several test processes (-n N): one thread each, subprocesses too,
    os.environ["OMP_NUM_THREADS"] = "1"  # so that N processes do not each spin N threads on N cores
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


#: torch's thread count when the session started.
THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def _threads():
    """Each test runs with the session's thread count: a run with ``--threads 1`` (a test's, or a module fixture's)
    would otherwise leave every later test single-threaded, and results dependent on the order tests run in."""
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(THREADS)


# -- shared model fixtures ----------------------------------------------------------------------------
#: Non-ImageNet statistics and a non-default grid, so that a loader falling back to defaults shows up.
TINY_MEAN = TINY_STD = (0.5, 0.5, 0.5)
TINY_INPUT_SIZE = (32, 32)
TINY_GRID = 12


def make_tiny_model(regressor_input: str = "projector", *, seed: int = 0):
    """A test_resnet LandmarkModel (mean = std = 0.5, 32x32 input, 12x12 grid, 16-d projector, 5 landmarks)."""
    from contrastive_landmarks import Hypercolumn, LandmarkModel, LandmarkRegressor, SpatialProjector, load_backbone

    torch.manual_seed(seed)
    backbone = load_backbone("test_resnet").with_preprocessing(mean=TINY_MEAN, std=TINY_STD, input_size=TINY_INPUT_SIZE)
    for name, tensor in backbone.body.state_dict().items():  # non-trivial BatchNorm statistics, as if trained
        if name.endswith("running_var"):
            tensor.copy_(torch.rand_like(tensor) + 0.5)
        elif name.endswith("running_mean"):
            tensor.copy_(torch.randn_like(tensor) * 0.1)
    hc = Hypercolumn(backbone, size=TINY_GRID)
    projector = SpatialProjector(hc.channels, 16, size=TINY_GRID)
    regressor = LandmarkRegressor(16 if regressor_input == "projector" else hc.channels, 5, 4, size=TINY_GRID)
    return LandmarkModel(
        hc,
        projector,
        regressor,
        regressor_input=regressor_input,
        landmark_names=("left_eye", "right_eye", "nose", "left_mouth", "right_mouth"),
    ).eval()


@pytest.fixture
def tiny_model():
    """See :func:`make_tiny_model`."""
    return make_tiny_model()


@pytest.fixture(scope="session")
def faces_model():
    """The built-in ``resnet18-faces`` bundle (shipped inside the package; no network)."""
    from contrastive_landmarks import LandmarkModel

    return LandmarkModel.from_pretrained("resnet18-faces")


@pytest.fixture(scope="session")
def hopper_face():
    """The face crop of matplotlib's public-domain portrait (grace_hopper.jpg), ``(3, 196, 196)`` in [0, 1]."""
    pytest.importorskip("matplotlib")
    from contrastive_landmarks.demo import _HOPPER_BOX, _hopper_path, load_image

    return load_image(_hopper_path(), _HOPPER_BOX)
