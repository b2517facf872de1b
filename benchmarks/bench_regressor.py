"""Regressor training step on stage maps (project_stages) vs on the materialised hypercolumn.

ResNet-50 stage shapes at a 96-px input (conv5_x..conv2_x: 2048@3, 1024@6, 512@12, 256@24), 48x48 grid,
5 landmarks, K=50: forward + backward of the regression loss, as in one step of fit_regressor with cached
stage maps. The materialised path upsamples every stage to 48x48 and concatenates (3840 channels) first.

    python benchmarks/bench_regressor.py [--batch 8] [--repeats 7]
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(0)
    shapes = [(2048, 3), (1024, 6), (512, 12), (256, 24)]
    maps = [torch.randn(args.batch, c, s, s, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
            for c, s in shapes]
    reg = LandmarkRegressor(3840, 5, 50, size=48).to(device)
    target = (torch.rand(args.batch, 5, 2, generator=gen) * 2 - 1).to(device)

    def staged():
        loss = regression_loss(reg(maps), target)
        loss.backward()

    def materialised():
        hyper = torch.cat([F.interpolate(m, size=(48, 48), mode="bilinear", align_corners=False) for m in maps], 1)
        loss = regression_loss(reg(hyper), target)
        loss.backward()

    with torch.no_grad():
        hyper = torch.cat([F.interpolate(m, size=(48, 48), mode="bilinear", align_corners=False) for m in maps], 1)
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
    print(f"device={device} threads={args.threads} batch={args.batch} repeats={args.repeats} max|diff|={diff:.2e}")
    for name, m in med.items():
        print(f"{name:32s} median {m * 1e3:8.1f} ms")
    ratio = med["materialised hypercolumn"] / med["stage maps (project_stages)"]
    print(f"ratio materialised / stage maps: {ratio:.2f}x")


if __name__ == "__main__":
    main()
