"""Golden outputs of the built-in ``resnet18-faces`` bundle: detections and descriptor statistics.

After the built-in weights change on purpose, rewrite the expectations with
``HF_HUB_OFFLINE=1 python tests/golden/regenerate.py`` (the inputs and the computation live there).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
REGENERATE = "HF_HUB_OFFLINE=1 python tests/golden/regenerate.py"


def _regenerate_module():
    spec = importlib.util.spec_from_file_location("golden_regenerate", GOLDEN_DIR / "regenerate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def golden() -> tuple[dict, dict]:
    pytest.importorskip("matplotlib")  # the portrait input is matplotlib's sample image
    expected = json.loads((GOLDEN_DIR / "resnet18_faces.json").read_text())
    return expected, _regenerate_module()


def test_golden_file_matches_the_builtin_weights(golden):
    expected, regenerate = golden
    assert expected["weights_sha256"] == regenerate.weight_hashes(), (
        f"the built-in resnet18-faces files changed since the golden outputs were written; if that was on "
        f"purpose, run `{REGENERATE}`"
    )


def test_golden_outputs(golden, faces_model):
    expected, regenerate = golden
    actual = regenerate.compute(faces_model)
    assert actual["inputs"].keys() == expected["inputs"].keys()
    for name, want in expected["inputs"].items():
        got = actual["inputs"][name]
        assert got["size"] == want["size"]
        torch.testing.assert_close(
            torch.tensor(got["detections"]),
            torch.tensor(want["detections"]),
            atol=2e-3,
            rtol=0,
            msg=lambda m, name=name: f"{name} detections: {m}",
        )
        for key in ("mean", "std", "abs_max"):
            assert got["descriptors"][key] == pytest.approx(want["descriptors"][key], rel=1e-4, abs=1e-6), (name, key)
        assert got["descriptors"]["shape"] == want["descriptors"]["shape"]
        for cell, values in want["descriptors"]["values"].items():
            torch.testing.assert_close(
                torch.tensor(got["descriptors"]["values"][cell]),
                torch.tensor(values),
                atol=1e-4,
                rtol=1e-4,
                msg=lambda m, name=name, c=cell: f"{name} @ {c}: {m}",
            )


def test_golden_detections_are_on_the_face(golden):
    """A sanity check of the stored numbers themselves: the portrait's 5 points are inside it, eyes above mouth."""
    expected, _ = golden
    points = torch.tensor(expected["inputs"]["portrait_196"]["detections"])
    assert bool(((points > 0) & (points < 195)).all())
    left_eye, right_eye, nose, left_mouth, right_mouth = points
    assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
