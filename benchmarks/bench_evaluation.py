"""Evaluation protocols before/after the speed-ups, in one run, on real MTFL faces (random-init ResNet-18).

Two measurements, each timing the original code path ("old") and the current one ("new") alternately in
the same process, and checking that both give the same numbers:

- ``tps``: ``tps.make_pair`` on a batch of 136x136 faces (the matching benchmark's warps, crop 20).
  Old: ``make_pair_reference`` of ``tests/reference_impls.py`` (three dense grids, each a float64
  ``(B, H*W, 100, 2)`` broadcast), with the library's keypoint solver (the reference's own, from the TPS
  formula point by point, is a test of correctness, not a speed baseline).
- ``matching``: ``evaluate_matching`` end to end on the first ``--match-images`` test faces (old: with the
  reference ``make_pair`` patched in).
(The third measurement this script had, the regression protocol's feature phase, compared code that was
replaced by ``train.fit_regressor``'s bank of augmented views; its figures in ``docs/performance.md``, "Evaluation
speed", are kept as history.)

    python benchmarks/bench_evaluation.py [--root ../shared/data/mtfl] [--threads 1] [--repeats 3]
        [--tps-batch 16] [--match-images 32]

Medians of ``--repeats`` alternating runs (first runs included: every repeat does the same work).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from contrastive_landmarks import Hypercolumn, evaluation, load_backbone, tps
from contrastive_landmarks.data import by_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout root: tests.reference_impls
from tests.reference_impls import make_pair_reference, sampling_grid_reference


# -- helpers ------------------------------------------------------------------------------------------------------
def _timed(fn):
    """``((wall s, process CPU s), fn())``: on a shared machine the CPU time of a 1-thread run is the steadier."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - wall, time.process_time() - cpu), out


def _report(name: str, times: dict[str, list[tuple[float, float]]], note: str = "") -> None:
    med = {k: [statistics.median(t[i] for t in v) for i in (0, 1)] for k, v in times.items()}
    (old_w, old_c), (new_w, new_c) = med["old"], med["new"]
    print(
        f"{name}\n    wall old {old_w:8.3f} s  new {new_w:8.3f} s  ratio {old_w / new_w:6.1f}x | "
        f"CPU old {old_c:8.3f} s  new {new_c:8.3f} s  ratio {old_c / new_c:6.1f}x\n    {note}",
        flush=True,
    )


def _library_keypoints(points, warp, size):
    return tps.warp_keypoints(points, warp, size, return_residual=True)


# -- the measurements ---------------------------------------------------------------------------------------
def bench_tps(images: torch.Tensor, keypoints: torch.Tensor, repeats: int) -> None:
    params = tps.TPSParams.matching()
    times = {"old": [], "new": []}
    for _ in range(repeats):
        t_old, old = _timed(
            lambda: make_pair_reference(
                images,
                keypoints,
                params,
                generator=torch.Generator().manual_seed(1),
                crop=20,
                keypoint_solver=_library_keypoints,
            )
        )
        t_new, new = _timed(
            lambda: tps.make_pair(images, keypoints, params, generator=torch.Generator().manual_seed(1), crop=20)
        )
        times["old"].append(t_old)
        times["new"].append(t_new)
    diff = max(
        (getattr(old, f) - getattr(new, f)).abs().max().item()
        for f in ("image1", "image2", "grid", "keypoints1", "keypoints2")
    )
    grid_ref = sampling_grid_reference(new.warp2, images.shape[-2:], dtype=torch.float64)
    grid_px = (tps.sampling_grid(new.warp2, images.shape[-2:], dtype=torch.float64) - grid_ref).abs().max()
    grid_px = grid_px.item() * (images.shape[-1] - 1) / 2
    _report(
        f"tps.make_pair, {images.shape[0]} faces 136x136",
        times,
        f"max|diff| outputs {diff:.1e}, float64 grid {grid_px:.1e} px",
    )


def bench_matching(model, dataset, count: int, repeats: int) -> None:
    times = {"old": [], "new": []}
    results = {}
    for _ in range(repeats):
        for kind in ("old", "new"):
            saved = tps.make_pair
            if kind == "old":
                tps.make_pair = functools.partial(make_pair_reference, keypoint_solver=_library_keypoints)
            try:
                t, results[kind] = _timed(
                    lambda: evaluation.evaluate_matching(model, dataset, num_images=count, seed=1, crop=20)
                )
            finally:
                tps.make_pair = saved
            times[kind].append(t)
    same = all(results["old"][k] == results["new"][k] for k in ("same", "different"))
    errors = f"{results['new']['same']['error']:.3f} / {results['new']['different']['error']:.3f} px"
    _report(f"evaluate_matching, {count} test faces", times, f"same results: {same} ({errors})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="../shared/data/mtfl", help="MTFL folder (train.csv, test.csv)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tps-batch", type=int, default=16, help="faces per make_pair call")
    parser.add_argument("--match-images", type=int, default=32, help="test faces for evaluate_matching")
    parser.add_argument("--only", nargs="+", choices=("tps", "matching"), default=None)
    args = parser.parse_args()
    if not (Path(args.root) / "test.csv").is_file():
        sys.exit(f"MTFL not found under {args.root} (expected train.csv, test.csv, images/); pass --root")
    torch.set_num_threads(args.threads)
    wanted = set(args.only or ("tps", "matching"))
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS')}, repeats {args.repeats}, cpu",
        flush=True,
    )
    backbone = load_backbone("resnet18", None)  # random init (standard init), ImageNet normalisation
    if wanted & {"tps", "matching"}:
        faces = by_name(
            "mtfl", args.root, "test", image_size=96, resize=136, limit=max(args.tps_batch, args.match_images)
        )
        if "tps" in wanted:
            samples = [faces[i] for i in range(args.tps_batch)]
            images = torch.stack([s["image"] for s in samples])
            keypoints = torch.stack([s["keypoints"] for s in samples]).float()
            bench_tps(images, keypoints, args.repeats)
        if "matching" in wanted:
            bench_matching(Hypercolumn(backbone, size=None).eval(), faces, args.match_images, args.repeats)


if __name__ == "__main__":
    main()
