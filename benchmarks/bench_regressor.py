"""Regressor training step on stage maps (project_stages) vs on the materialised hypercolumn.

Forward + backward of the regression loss, as in one step of ``fit_regressor`` on its bank of stage maps.
The materialised path upsamples every stage to the grid and concatenates first (the naive form).

- default: ResNet-50 stage shapes at a 96-px input (2048@3, 1024@6, 512@12, 256@24), 48x48 grid, 5 landmarks,
  K=50, batch 8;
- ``--arch resnet18 --input 64 --landmarks 68 --k 10 --batch 32``: ``fit_regressor``'s defaults (K=10, grid half
  the input, batch 32) on ResNet-18 stage shapes, e.g. for a 68-point face set.

    python benchmarks/bench_regressor.py [--batch 8] [--repeats 7]
    python benchmarks/bench_regressor.py --arch resnet18 --input 64 --landmarks 5 68 --k 10 --batch 32
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from contrastive_landmarks.regressor import LandmarkRegressor, regression_loss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arch", choices=("resnet50", "resnet18"), default="resnet50")
    parser.add_argument("--input", type=int, default=96, help="input size; the grid is half of it")
    parser.add_argument("--landmarks", type=int, nargs="+", default=[5])
    parser.add_argument("--k", type=int, default=50, help="heatmaps per landmark")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for landmarks in args.landmarks:
        run(args, landmarks)


def run(args, landmarks: int) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(0)
    widths = (2048, 1024, 512, 256) if args.arch == "resnet50" else (512, 256, 128, 64)
    strides = (32, 16, 8, 4)
    shapes = [(c, args.input // s) for c, s in zip(widths, strides)]
    grid = args.input // 2
    maps = [
        torch.randn(args.batch, c, s, s, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
        for c, s in shapes
    ]
    reg = LandmarkRegressor(sum(widths), landmarks, args.k, size=grid).to(device)
    target = (torch.rand(args.batch, landmarks, 2, generator=gen) * 2 - 1).to(device)

    def staged():
        loss = regression_loss(reg(maps), target)
        loss.backward()

    def materialised():
        hyper = torch.cat([F.interpolate(m, size=(grid, grid), mode="bilinear", align_corners=False) for m in maps], 1)
        loss = regression_loss(reg(hyper), target)
        loss.backward()

    with torch.no_grad():
        hyper = torch.cat([F.interpolate(m, size=(grid, grid), mode="bilinear", align_corners=False) for m in maps], 1)
        diff = (reg(maps) - reg(hyper)).abs().max().item()
    times = {"stage maps (project_stages)": [], "materialised hypercolumn": []}
    for _ in range(args.repeats):
        for name, fn in (("stage maps (project_stages)", staged), ("materialised hypercolumn", materialised)):
            reg.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v[1:] if len(v) > 2 else v) for k, v in times.items()}
    print(
        f"{args.arch} at {args.input} px, grid {grid}, {landmarks} landmarks x K={args.k}: device={device} "
        f"threads={args.threads} batch={args.batch} repeats={args.repeats} max|diff|={diff:.2e}"
    )
    for name, m in med.items():
        print(f"{name:32s} median {m * 1e3:8.1f} ms")
    ratio = med["materialised hypercolumn"] / med["stage maps (project_stages)"]
    print(f"ratio materialised / stage maps: {ratio:.2f}x")


if __name__ == "__main__":
    main()
