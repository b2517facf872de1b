"""What reading a fine-tuned model's heatmaps costs: ``landmark_scores`` and ``around_peak`` against their masked forms.

Shapes of a one-stage ``lp-mirror-mouse`` model at 256 px: ``B`` frames, 17 landmarks of 8 heatmaps each on a 64x64
grid. Variants, interleaved, median of ``--repeats`` (the first discarded), in one run:

- ``landmark_scores``: the library's (each peak's 7x7 window gathered, 49 cells a heatmap);
- ``scores, masked``: the previous form, kept here: a window mask built over every cell and the whole softmax;
- ``around_peak``: the library's (a row band times a column band);
- ``around_peak, masked``: the previous form: row and column of every cell compared with the peak's.

Each pair's largest difference is recorded beside its times (they compute the same numbers)::

    python benchmarks/bench_heatmap_reads.py --threads 1 --out benchmarks/results/heads/heatmap-reads.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

from contrastive_landmarks.regression import SCORE_MULTIPLIER, SCORE_RADIUS, SCORE_SPREAD, Regression, landmark_scores
from contrastive_landmarks.regressor import around_peak


def _scores_masked(regression: Regression) -> torch.Tensor:
    logits = regression.heatmaps.flatten(-2).float()
    h, w = regression.heatmaps.shape[-2:]
    peak = logits.argmax(-1)
    rows, cols = torch.arange(h), torch.arange(w)
    near_rows = (rows - (peak // w)[..., None]).abs() <= SCORE_RADIUS
    near_cols = (cols - (peak % w)[..., None]).abs() <= SCORE_RADIUS
    window = (near_rows[..., :, None] & near_cols[..., None, :]).flatten(-2)
    focus = (torch.softmax(logits * SCORE_MULTIPLIER, -1) * window).sum(-1).mean(-1)
    points = regression.intermediate.float()
    spread = (points - points.mean(-2, keepdim=True)).pow(2).sum(-1).mean(-1).sqrt()
    return (focus * torch.exp(-spread / SCORE_SPREAD)).clamp(0, 1)


def _around_peak_masked(probs: torch.Tensor, grid: tuple[int, int], radius: int) -> torch.Tensor:
    h, w = grid
    peak = probs.argmax(-1, keepdim=True)
    cells = torch.arange(h * w)
    near = ((cells // w - peak // w).abs() <= radius) & ((cells % w - peak % w).abs() <= radius)
    local = probs * near.to(probs.dtype)
    return local / local.sum(-1, keepdim=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    b, n, k, h, w = args.batch, 17, 8, 64, 64
    heatmaps = torch.randn(b, n, k, h, w, generator=g) * 4
    intermediate = torch.rand(b, n, k, 2, generator=g) - 0.5
    regression = Regression(torch.zeros(b, n, 2), torch.zeros(b, n, 2), intermediate, heatmaps, heatmaps)
    probs = torch.softmax(heatmaps.reshape(b, n * k, h * w), -1)
    calls = {
        "landmark_scores": lambda: landmark_scores(regression),
        "scores, masked": lambda: _scores_masked(regression),
        "around_peak": lambda: around_peak(probs, (h, w), 4),
        "around_peak, masked": lambda: _around_peak_masked(probs, (h, w), 4),
    }
    times, outputs = {name: [] for name in calls}, {}
    for _ in range(args.repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            outputs[name] = call()
            times[name].append(time.perf_counter() - start)
    ms = {name: 1000 * statistics.median(t[1:]) / b for name, t in times.items()}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    record = {
        "command": "python benchmarks/bench_heatmap_reads.py " + f"--batch {b} --repeats {args.repeats} "
        f"--threads {args.threads}",
        "commit": commit,
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "load_at_start": os.getloadavg(),
        "shape": {"frames": b, "landmarks": n, "heatmaps_per_landmark": k, "grid": [h, w]},
        "ms_per_frame": ms,
        "speedup": {
            "landmark_scores": ms["scores, masked"] / ms["landmark_scores"],
            "around_peak": ms["around_peak, masked"] / ms["around_peak"],
        },
        "max_abs_difference": {
            "landmark_scores": float((outputs["landmark_scores"] - outputs["scores, masked"]).abs().max()),
            "around_peak": float((outputs["around_peak"] - outputs["around_peak, masked"]).abs().max()),
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in ("ms_per_frame", "speedup", "max_abs_difference")}, indent=1))


if __name__ == "__main__":
    main()
