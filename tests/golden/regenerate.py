"""Rewrite tests/golden/resnet18_faces.json from the built-in ``resnet18-faces`` bundle.

Run after the built-in weights change (e.g. a refitted regressor), from the repository root::

    HF_HUB_OFFLINE=1 python tests/golden/regenerate.py

The inputs are deterministic and need no network: a seeded noise image, the face crop of
matplotlib's public-domain portrait (``grace_hopper.jpg``) at its native 196 px (``detect`` resizes it
to the model's 64 px), and a smooth synthetic 48x80 pattern. ``tests/test_golden.py`` imports
:func:`compute` from here, so the test and this script cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "resnet18_faces.json"
sys.path.insert(0, str(HERE.parents[1]))

import torch  # noqa: E402

MODEL = "resnet18-faces"
FILES = ("config.json", "model.safetensors", "projector.safetensors", "regressor.safetensors")
#: Descriptor entries recorded exactly: channels 0..3 at these grid cells.
CELLS = ((0, 0), (16, 16), (8, 24))


def inputs() -> dict[str, torch.Tensor]:
    """The fixed inputs, ``(3, H, W)`` each, in ``[0, 1]``."""
    from contrastive_landmarks.demo import _HOPPER_BOX, _hopper_path, load_image

    noise = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 80), indexing="ij")
    pattern = torch.stack(
        [0.5 + 0.4 * torch.sin(6 * xs + 2 * ys), 0.5 + 0.4 * torch.cos(5 * ys), 0.5 + 0.4 * torch.sin(3 * xs * ys + 1)]
    )
    return {"noise_64": noise, "portrait_196": load_image(_hopper_path(), _HOPPER_BOX), "pattern_48x80": pattern}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weight_hashes() -> dict[str, str]:
    from contrastive_landmarks.hub import builtin_dir

    directory = builtin_dir(MODEL)
    return {name: _sha256(directory / name) for name in FILES if (directory / name).is_file()}


def compute(model=None) -> dict:
    """What the golden file records: detections and descriptor statistics of every input."""
    from contrastive_landmarks import LandmarkModel

    if model is None:
        model = LandmarkModel.from_pretrained(MODEL)
    images = inputs()
    out: dict = {"model": MODEL, "weights_sha256": weight_hashes(), "inputs": {}}
    with torch.no_grad():
        for name, image in images.items():
            points = model.detect([image])[0]
            desc = model.descriptors([image])[0].double()
            out["inputs"][name] = {
                "size": list(image.shape[-2:]),
                "detections": [[round(float(v), 5) for v in p] for p in points],
                "descriptors": {
                    "shape": list(desc.shape),
                    "mean": float(desc.mean()),
                    "std": float(desc.std()),
                    "abs_max": float(desc.abs().max()),
                    "values": {f"{i},{j}": [float(v) for v in desc[:4, i, j]] for i, j in CELLS},
                },
            }
    for record in out["inputs"].values():  # JSON has no NaN: fail here rather than write a useless file
        assert all(math.isfinite(v) for p in record["detections"] for v in p), record
    return out


def main() -> None:
    GOLDEN.write_text(json.dumps({"torch": torch.__version__, **compute()}, indent=1) + "\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
