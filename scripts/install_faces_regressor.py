"""Install a refitted 5-point regressor into the built-in ``resnet18-faces`` bundle.

The regressor is the one ``scripts/regression_benchmarks.py`` fits on the transfer protocol with the MoCo
backbone and all labels (``transfer-moco-all.regressor.safetensors``): the library's recipe on MTFL's training
faces, selected on held-out training faces; its AFLW test error is that run's JSON. Only
``regressor.safetensors`` (float16) and the ``regressor`` section of ``config.json`` change; the backbone and
projector files, and so the registry checksum, stay as they are.

    python scripts/install_faces_regressor.py runs/regression/transfer-moco-all
    python tests/golden/regenerate.py      # the golden outputs follow the new regressor
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "contrastive_landmarks" / "weights" / "resnet18-faces"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="path prefix of the run: <prefix>.json, <prefix>.regressor.safetensors/.json")
    args = parser.parse_args(argv)
    prefix = Path(args.run)
    tensors = load_file(str(prefix.with_suffix(".regressor.safetensors")))
    head = json.loads(prefix.with_suffix(".regressor.json").read_text())
    config_path = BUNDLE / "config.json"
    config = json.loads(config_path.read_text())
    old = config["regressor"]
    if head["in_channels"] != old["in_channels"] or head["num_landmarks"] != old["num_landmarks"]:
        raise SystemExit(f"the regressor ({head['in_channels']} -> {head['num_landmarks']}) does not fit the bundle")
    config["regressor"] = {**head, "input": old["input"], "landmark_names": old["landmark_names"]}
    config["hypercolumn"]["size"] = head["size"]
    save_file({k: v.to(torch.float16).contiguous() for k, v in tensors.items()}, str(BUNDLE / "regressor.safetensors"))
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    result = json.loads(prefix.with_suffix(".json").read_text())
    test, shape = result["test"]["mean"], result["test_baseline"]["mean"]
    print(f"installed; AFLW test IOD {test:.2f} % (mean shape {shape:.2f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
