"""Refit a kept model's likelihood on its own validation frames with today's calibration rule, then score it once
on the test frames with ``evaluate``: for models fitted before a change to the calibration alone (the network and
its points are untouched, so the test error is the model's own; what changes is the likelihood's report)::

    python benchmarks/recalibrate.py runs/models/lp-rel-s0 lp --seed 0 \\
        --out benchmarks/results/calibration/lp-rel-s0.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from decode_window import PROJECTS, _frames, write_record

from contrastive_landmarks import LandmarkModel
from contrastive_landmarks.calibration import fit_calibration

CLI = [sys.executable, "-c", "import sys; from contrastive_landmarks.cli import main; sys.exit(main())"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("project", choices=sorted(PROJECTS))
    parser.add_argument("--seed", type=int, default=0, help="the fit's seed (its validation frames follow it)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.holdout, args.num_labelled = 0.0, None  # the fit's own validation frames, as decode_window.py reads them
    _, val, _ = _frames(args)
    model = LandmarkModel.from_pretrained(args.model).eval()
    before = None if model.calibration is None else model.calibration.describe()
    after = fit_calibration(model, *val).describe()
    data = ["--dataset", "dlc", "--root" if PROJECTS[args.project].is_dir() else "--path", str(PROJECTS[args.project])]
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(Path(folder) / "model")
        metrics_path = Path(folder) / "test.json"
        command = ["evaluate", str(Path(folder) / "model"), *data, "--split", "test", "--output", str(metrics_path)]
        subprocess.run([*CLI, *command], check=True, capture_output=True)
        metrics = json.loads(metrics_path.read_text())
    write_record(
        args,
        {"validation_frames": len(val[0]), "calibration_before": before, "calibration_after": after, "test": metrics},
    )
    print(json.dumps({k: metrics.get(k) for k in ("mean_px", "likelihood_auc_error_above_10px")}))
    print(json.dumps({k: v for k, v in metrics["likelihood"].items() if k != "reliability"}))


if __name__ == "__main__":
    main()
