"""Evaluation protocols before/after the speed-ups, in one run, on real MTFL faces (random-init ResNet-18).

Three measurements, each timing the original code path ("old") and the current one ("new") alternately in
the same process, and checking that both give the same numbers:

- ``tps``: ``tps.make_pair`` on a batch of 136x136 faces (the matching benchmark's warps, crop 20).
  Old: ``make_pair_reference`` of ``tests/reference_impls.py`` (three dense grids, each a float64
  ``(B, H*W, 100, 2)`` broadcast).
- ``matching``: ``evaluate_matching`` end to end on the first ``--match-images`` test faces (old: with the
  reference ``make_pair`` patched in).
- ``features``: the feature phase of ``evaluate_regression`` (labels, backbone pass filling the cache,
  per-channel statistics), then one epoch of cached-batch gathers (``CachedFeatures.get``, batches of 32).
  Old: the original code (two extra dataset passes for the labels, one ``features.get`` per stage in the
  statistics, NCHW-contiguous cache entries restacked into a channels-last copy per batch), reproduced
  here by swapping the two storage helpers of ``train/feature_cache.py`` for their original formulas.

    python benchmarks/bench_evaluation.py [--root ../shared/data/mtfl] [--threads 1] [--repeats 3]
        [--tps-batch 16] [--match-images 32] [--train 500] [--test 100] [--size 96] [--cache-gb 2]

Medians of ``--repeats`` alternating runs (first runs included: every repeat does the same work).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from contrastive_landmarks.cli_evaluate import build_dataset

from contrastive_landmarks import Hypercolumn, evaluation, load_backbone, tps
from contrastive_landmarks.train import feature_cache as features

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout root: tests.reference_impls
from tests.reference_impls import make_pair_reference, sampling_grid_reference


# -- the original code paths (as they were before the speed-ups) ----------------------------------------------
def _old_stored(m: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return m.detach().to("cpu", dtype or m.dtype).contiguous()


def _old_stack_maps(maps) -> torch.Tensor:
    return torch.stack(list(maps))  # get() then makes the channels-last copy


@contextlib.contextmanager
def _original_feature_storage():
    saved = features._stored, features._stack_maps
    features._stored, features._stack_maps = _old_stored, _old_stack_maps
    try:
        yield
    finally:
        features._stored, features._stack_maps = saved


def _old_stack(dataset, key: str) -> torch.Tensor:
    table = getattr(dataset, key, None)
    if isinstance(table, torch.Tensor) and getattr(dataset, "transform", "none") is None:
        return table.clone()
    return torch.stack([dataset[i][key] for i in range(len(dataset))])


def _old_channel_stats(feats, indices, stages, batch: int = 256):
    sums = sq = None
    count = 0
    for start in range(0, len(indices), batch):
        maps = [feats.get(indices[start : start + batch])[s].float() for s in stages]
        if sums is None:
            sums = [torch.zeros(m.shape[1], dtype=torch.float64) for m in maps]
            sq = [torch.zeros(m.shape[1], dtype=torch.float64) for m in maps]
            count = [0] * len(maps)
        for i, m in enumerate(maps):
            sums[i] += m.sum((0, 2, 3)).double()
            sq[i] += (m.double() ** 2).sum((0, 2, 3))
            count[i] += m.shape[0] * m.shape[2] * m.shape[3]
    mean = [(s / c).float() for s, c in zip(sums, count)]
    std = [((q / c - (s / c) ** 2).clamp_min(0).sqrt() + 1e-6).float() for s, q, c in zip(sums, sq, count)]
    return mean, std


# -- helpers ------------------------------------------------------------------------------------------------------
class _Counting:
    """A dataset wrapper counting reads."""

    def __init__(self, dataset):
        self.dataset, self.reads = dataset, 0
        self.eye_indices = getattr(dataset, "eye_indices", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        self.reads += 1
        return self.dataset[index]


def _timed(fn):
    """``((wall s, process CPU s), fn())``: on a shared machine the CPU time of a 1-thread run is the steadier."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - wall, time.process_time() - cpu), out


def _report(name: str, times: dict[str, list[tuple[float, float]]], note: str = "") -> None:
    med = {k: [statistics.median(t[i] for t in v) for i in (0, 1)] for k, v in times.items()}
    (old_w, old_c), (new_w, new_c) = med["old"], med["new"]
    print(f"{name}\n    wall old {old_w:8.3f} s  new {new_w:8.3f} s  ratio {old_w / new_w:6.1f}x | "
          f"CPU old {old_c:8.3f} s  new {new_c:8.3f} s  ratio {old_c / new_c:6.1f}x\n    {note}", flush=True)


# -- the three measurements ---------------------------------------------------------------------------------------
def bench_tps(images: torch.Tensor, keypoints: torch.Tensor, repeats: int) -> None:
    params = tps.TPSParams.matching()
    times = {"old": [], "new": []}
    for _ in range(repeats):
        t_old, old = _timed(lambda: make_pair_reference(images, keypoints, params,
                                                             generator=torch.Generator().manual_seed(1), crop=20))
        t_new, new = _timed(lambda: tps.make_pair(images, keypoints, params,
                                                  generator=torch.Generator().manual_seed(1), crop=20))
        times["old"].append(t_old)
        times["new"].append(t_new)
    diff = max((getattr(old, f) - getattr(new, f)).abs().max().item()
               for f in ("image1", "image2", "grid", "keypoints1", "keypoints2"))
    grid_ref = sampling_grid_reference(new.warp2, images.shape[-2:], dtype=torch.float64)
    grid_px = (tps.sampling_grid(new.warp2, images.shape[-2:], dtype=torch.float64) - grid_ref).abs().max()
    grid_px = grid_px.item() * (images.shape[-1] - 1) / 2
    _report(f"tps.make_pair, {images.shape[0]} faces 136x136", times,
            f"max|diff| outputs {diff:.1e}, float64 grid {grid_px:.1e} px")


def bench_matching(model, dataset, count: int, repeats: int) -> None:
    times = {"old": [], "new": []}
    results = {}
    for _ in range(repeats):
        for kind in ("old", "new"):
            saved = tps.make_pair
            if kind == "old":
                tps.make_pair = make_pair_reference
            try:
                t, results[kind] = _timed(lambda: evaluation.evaluate_matching(model, dataset, num_images=count,
                                                                               seed=1, crop=20))
            finally:
                tps.make_pair = saved
            times[kind].append(t)
    same = all(results["old"][k] == results["new"][k] for k in ("same", "different"))
    errors = f"{results['new']['same']['error']:.3f} / {results['new']['different']['error']:.3f} px"
    _report(f"evaluate_matching, {count} test faces", times, f"same results: {same} ({errors})")


def bench_features(model, train, test, cache_bytes: int, repeats: int) -> None:
    stage_ids = list(range(len(model.backbone.stages)))
    train_part, _ = evaluation.split_indices(len(train), 0.1, 0, 1000)
    times = {k: {"old": [], "new": []} for k in ("phase", "epoch")}
    reads, stats = {}, {}
    for _ in range(repeats):
        for kind in ("old", "new"):
            counted_train, counted_test = _Counting(train), _Counting(test)
            cache = features.FeatureCache(cache_bytes)
            if kind == "old":
                def phase(tr=counted_train, te=counted_test, cache=cache):
                    with _original_feature_storage():
                        targets = torch.cat([_old_stack(tr, "keypoints"), _old_stack(te, "keypoints")]).float()
                        visible = torch.cat([_old_stack(tr, "visible"), _old_stack(te, "visible")]).bool()
                        feats = features.CachedFeatures(model, evaluation._Concat(tr, te), cache=cache)
                        feats.precompute()
                        return feats, targets, visible, _old_channel_stats(feats, train_part, stage_ids)
            else:
                def phase(tr=counted_train, te=counted_test, cache=cache):
                    both = evaluation._Concat(tr, te, record=("keypoints", "visible"))
                    feats = features.CachedFeatures(model, both, cache=cache)
                    feats.precompute()
                    labels = evaluation._labels(both)
                    return (feats, labels["keypoints"].float(), labels["visible"].bool(),
                            evaluation._channel_stats(feats, train_part, stage_ids))
            t, (feats, targets, visible, (mean, std)) = _timed(phase)
            times["phase"][kind].append(t)
            reads[kind] = counted_train.reads + counted_test.reads
            stats[kind] = (targets, visible, mean, std)
            order = torch.randperm(len(train_part), generator=torch.Generator().manual_seed(0)).tolist()
            batches = [[train_part[i] for i in order[s : s + 32]] for s in range(0, len(order), 32)]

            def epoch(feats=feats, batches=batches, kind=kind):
                with _original_feature_storage() if kind == "old" else contextlib.nullcontext():
                    for b in batches:
                        feats.get(b)

            times["epoch"][kind].append(_timed(epoch)[0])
    same = all(torch.equal(a, b) for a, b in zip(stats["old"][:2], stats["new"][:2]))
    same &= all(torch.equal(a, b) for part in (2, 3) for a, b in zip(stats["old"][part], stats["new"][part]))
    n = len(train) + len(test)
    _report(f"regression feature phase, {len(train)}+{len(test)} faces", times["phase"],
            f"dataset reads {reads['old']} -> {reads['new']}; same labels and channel stats: {same}")
    _report(f"one epoch of cached batches ({len(train_part)} faces, 32/batch)", times["epoch"],
            f"cache {cache_bytes / 2**30:.2f} GiB for {n} images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="../shared/data/mtfl", help="MTFL folder (train.csv, test.csv)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tps-batch", type=int, default=16, help="faces per make_pair call")
    parser.add_argument("--match-images", type=int, default=32, help="test faces for evaluate_matching")
    parser.add_argument("--train", type=int, default=500, help="training faces for the feature phase")
    parser.add_argument("--test", type=int, default=100, help="test faces for the feature phase")
    parser.add_argument("--size", type=int, default=96, help="network input size for the feature phase")
    parser.add_argument("--cache-gb", type=float, default=2.0, help="in-memory feature cache (GiB)")
    parser.add_argument("--only", nargs="+", choices=("tps", "matching", "features"), default=None)
    args = parser.parse_args()
    if not (Path(args.root) / "test.csv").is_file():
        sys.exit(f"MTFL not found under {args.root} (expected train.csv, test.csv, images/); pass --root")
    torch.set_num_threads(args.threads)
    wanted = set(args.only or ("tps", "matching", "features"))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS')}, repeats {args.repeats}, cpu", flush=True)
    backbone = load_backbone("resnet18", None)  # random init (standard init), ImageNet normalisation
    if wanted & {"tps", "matching"}:
        faces = build_dataset("mtfl", args.root, "test", image_size=96, resize=136,
                              limit=max(args.tps_batch, args.match_images))
        if "tps" in wanted:
            samples = [faces[i] for i in range(args.tps_batch)]
            images = torch.stack([s["image"] for s in samples])
            keypoints = torch.stack([s["keypoints"] for s in samples]).float()
            bench_tps(images, keypoints, args.repeats)
        if "matching" in wanted:
            bench_matching(Hypercolumn(backbone, size=None).eval(), faces, args.match_images, args.repeats)
    if "features" in wanted:
        train = build_dataset("mtfl", args.root, "train", image_size=args.size, face_crop=True, limit=args.train)
        test = build_dataset("mtfl", args.root, "test", image_size=args.size, limit=args.test)
        bench_features(Hypercolumn(backbone, size=48).eval(), train, test, int(args.cache_gb * 2**30), args.repeats)


if __name__ == "__main__":
    main()
