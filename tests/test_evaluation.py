"""Evaluation protocols and the evaluate/plot CLI, on tiny data."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from contrastive_landmarks import Hypercolumn, load_backbone
from contrastive_landmarks.evaluation import (
    evaluate_matching,
    evaluate_regression,
    results_table,
    save_results,
    split_indices,
)


class Blobs:
    """Images with bright blobs at 3 integer keypoints (a learnable, in-memory labelled dataset)."""

    eye_indices = (0, 1)

    def __init__(self, n: int, size: int = 32, seed: int = 0, duplicate: bool = False):
        g = torch.Generator().manual_seed(seed)
        self.keypoints = torch.randint(6, size - 6, (n, 3, 2), generator=g).float()
        if duplicate:
            self.keypoints[1::2] = self.keypoints[0::2]
        ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        noise = torch.rand(n, 3, size, size, generator=g) * 0.3
        self.images = noise.clone()
        for i in range(n):
            for k, (x, y) in enumerate(self.keypoints[i]):
                blob = torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 4.0)
                self.images[i, k] += 0.7 * blob
        if duplicate:
            self.images[1::2] = self.images[0::2]
        self.images = self.images.clamp(0, 1)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "keypoints": self.keypoints[i], "visible": torch.ones(3, dtype=torch.bool),
                "index": i}


def test_split_indices_fixed_and_disjoint():
    train, val = split_indices(50, 0.2, seed=3)
    assert (train, val) == split_indices(50, 0.2, seed=3)
    assert len(val) == 10 and not set(train) & set(val) and sorted(train + val) == list(range(50))
    assert split_indices(50, 0.2, seed=4)[1] != val
    assert len(split_indices(50, 0.5, seed=0, max_val=7)[1]) == 7


def test_matching_without_warp_is_exact_and_pairs_consecutive_images():
    from contrastive_landmarks.tps import TPSParams

    still = TPSParams(warpsd_all=0.0, warpsd_subset=0.0, transsd=0.0, scalesd=0.0, rotsd=0.0)
    model = Hypercolumn(load_backbone("test_resnet"), size=None)
    # images 2i+1 duplicate images 2i: with no warp both conditions must match exactly
    same_twice = evaluate_matching(model, Blobs(6, duplicate=True), tps_params=still, batch_size=4)
    assert same_twice["same"]["error"] == 0 and same_twice["different"]["error"] == 0
    assert same_twice["same"]["count"] == 3 * 3 and same_twice["config"]["pairs"] == 3
    distinct = evaluate_matching(model, Blobs(6), tps_params=still)
    assert distinct["same"]["error"] == 0 and distinct["different"]["error"] > 0.5
    warped = evaluate_matching(model, Blobs(6), seed=1, crop=2, return_matches=True)
    again = evaluate_matching(model, Blobs(6), seed=1, crop=2)
    assert warped["same"]["error"] == again["same"]["error"]  # fixed seed, fixed warps
    assert warped["config"]["image_size"] == [28, 28] and warped["examples"]["points"].shape[-1] == 2
    assert "| same identity" in results_table({"hc": warped})


def test_regression_protocol_is_deterministic_and_records_its_choices(tmp_path):
    model = Hypercolumn(load_backbone("test_resnet"))
    train, test = Blobs(40, seed=1), Blobs(10, seed=2)
    kwargs = {"seeds": (0, 1), "epochs": 3, "heatmaps_per_landmark": 4, "size": 16, "lrs": (1e-2, 1e-3),
              "val_fraction": 0.25, "batch_size": 8}
    result = evaluate_regression(model, train, test, **kwargs)
    repeat = evaluate_regression(model, train, test, **kwargs)
    assert repeat["test"] == result["test"] and repeat["selected"] == result["selected"]
    assert len(result["test"]["per_seed"]) == 2 and np.isfinite(result["test"]["mean"])
    assert result["config"]["val_images"] == 10 and result["config"]["train_images"] == 30
    for chosen in result["selected"]:
        assert chosen["lr"] in (1e-2, 1e-3) and 1 <= chosen["epoch"] <= 3 and chosen["labelled"] == 30
    few = evaluate_regression(model, train, test, num_labelled=5, stages=["conv4_x"], samples_per_epoch=16, **kwargs)
    assert few["config"]["channels"] == model.backbone.channels[1] and few["selected"][0]["labelled"] == 5
    assert few["config"]["samples_per_epoch"] == 16
    table = results_table({"hypercolumn": result, "conv4_x, 5 labelled": few})
    assert table.count("\n") == 3 and "± " in table
    saved = json.loads(save_results(result, tmp_path / "r.json").read_text())
    assert saved["config"]["lrs"] == [1e-2, 1e-3] and "torch" in saved["environment"]
    with pytest.raises(ValueError, match="stages"):
        evaluate_regression(model, train, test, stages=["conv1"], **kwargs)


def write_csv_dataset(folder, n=16, size=40):
    PIL = pytest.importorskip("PIL.Image")
    data = Blobs(n, size=size, seed=5)
    rows = ["image,x1,x2,x3,y1,y2,y3"]
    for i in range(n):
        array = (data.images[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        PIL.fromarray(array).save(folder / f"{i}.png")
        k = data.keypoints[i]
        rows.append(f"{i}.png," + ",".join(f"{v:.1f}" for v in [*k[:, 0].tolist(), *k[:, 1].tolist()]))
    (folder / "points.csv").write_text("\n".join(rows) + "\n")
    return folder / "points.csv"


def test_cli_evaluate_and_plot_parsers_run_on_tiny_data(tmp_path):
    pytest.importorskip("matplotlib")
    from contrastive_landmarks.cli_evaluate import add_evaluate_parser, add_plot_parser

    csv_file = write_csv_dataset(tmp_path)
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers(dest="command")
    add_evaluate_parser(subparsers)
    add_plot_parser(subparsers)
    data_args = ["--dataset", "csv", "--path", str(csv_file), "--image-size", "32"]
    common = [*data_args, "--backbone", "test_resnet"]
    for n, name in ((4, "a"), (8, "b")):
        args = parser.parse_args(["evaluate", "regression", *common, "--epochs", "1", "--heatmaps", "2", "--size",
                                  "8", "--num-labelled", str(n), "--val-fraction", "0.25",
                                  "--output", str(tmp_path / f"{name}.json")])
        assert args.func(args) == 0
        assert json.loads((tmp_path / f"{name}.json").read_text())["config"]["num_labelled"] == n
    args = parser.parse_args(["evaluate", "matching", *common, "--crop", "4", "--output", str(tmp_path / "m.json")])
    assert args.func(args) == 0 and json.loads((tmp_path / "m.json").read_text())["config"]["pairs"] == 8
    for plot in (["landmarks", "--num", "3"], ["pca", "--backbone", "test_resnet", "--num", "2", "--grid", "8"],
                 ["nmf", "--backbone", "test_resnet", "--num", "2", "--grid", "8", "--parts", "3"],
                 ["matches", "--backbone", "test_resnet", "--pair", "0", "1"]):
        out = tmp_path / f"{plot[0]}.png"
        args = parser.parse_args(["plot", plot[0], *data_args, *plot[1:], "--output", str(out)])
        assert args.func(args) == 0 and out.stat().st_size > 1000
    args = parser.parse_args(["plot", "fewshot", f"mine={tmp_path / 'a.json'}", f"mine={tmp_path / 'b.json'}",
                              "--output", str(tmp_path / "f.png")])
    assert args.func(args) == 0 and (tmp_path / "f.png").stat().st_size > 1000
    helps = [a.help for p in subparsers.choices.values() for sp in p._subparsers._group_actions[0].choices.values()
             for a in sp._actions if a.dest not in ("help",) and a.option_strings]
    assert all(helps)


class CountingBlobs(Blobs):
    """Blobs that count how often each sample is read (no stored-table shortcut: labels come from samples)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads = [0] * len(self)

    def __getitem__(self, i):
        self.reads[i] += 1
        return super().__getitem__(i)


def test_regression_reads_each_sample_once_and_records_the_same_labels():
    from contrastive_landmarks.evaluation import _Concat, _labels

    model = Hypercolumn(load_backbone("test_resnet"))
    train, test = CountingBlobs(12, seed=1), CountingBlobs(6, seed=2)
    evaluate_regression(model, train, test, epochs=1, heatmaps_per_landmark=2, size=8, val_fraction=0.25)
    # one read per sample for features and labels together (+1 for sample 0's image size), not three
    assert train.reads == [2] + [1] * 11 and test.reads == [2] + [1] * 5
    both = _Concat(train, test, record=("keypoints", "visible"))
    for i in (0, 13, 5):  # a partial feature pass; _labels reads only the rest
        both[i]
    labels = _labels(both)
    assert torch.equal(labels["keypoints"], torch.cat([train.keypoints, test.keypoints]))
    assert labels["visible"].shape == (18, 3) and bool(labels["visible"].all())
    assert max(train.reads) == 3 and min(train.reads) == 2


def test_channel_stats_read_each_batch_once_and_equal_the_per_stage_reads():
    from contrastive_landmarks.evaluation import _channel_stats
    from contrastive_landmarks.features import CachedFeatures

    model = Hypercolumn(load_backbone("test_resnet"))
    features = CachedFeatures(model, Blobs(10))
    indices, stages = [0, 2, 3, 5, 7, 9], [0, 2, 3]
    calls = []
    get = features.get
    features.get = lambda idx: calls.append(list(idx)) or get(idx)
    mean, std = _channel_stats(features, indices, stages, batch=4)
    assert len(calls) == 2  # batches of 4 and 2, one get each

    # the original formula: one get per stage and batch
    sums = sq = None
    count = [0] * len(stages)
    for start in range(0, len(indices), 4):
        maps = [get(indices[start : start + 4])[s].float() for s in stages]
        sums = sums or [torch.zeros(m.shape[1], dtype=torch.float64) for m in maps]
        sq = sq or [torch.zeros(m.shape[1], dtype=torch.float64) for m in maps]
        for i, m in enumerate(maps):
            sums[i] += m.sum((0, 2, 3)).double()
            sq[i] += (m.double() ** 2).sum((0, 2, 3))
            count[i] += m.shape[0] * m.shape[2] * m.shape[3]
    for i in range(len(stages)):
        assert torch.equal(mean[i], (sums[i] / count[i]).float())
        want = ((sq[i] / count[i] - (sums[i] / count[i]) ** 2).clamp_min(0).sqrt() + 1e-6).float()
        assert torch.equal(std[i], want)


def test_regression_warns_when_the_cache_cannot_hold_every_image():
    from contrastive_landmarks.features import FeatureCache

    model = Hypercolumn(load_backbone("test_resnet"))
    train, test = Blobs(8, seed=1), Blobs(4, seed=2)
    with torch.no_grad():
        per_image = sum(m[0].numel() * 4 for m in model.stage_maps(train.images[:1]))
    messages = []
    with pytest.warns(RuntimeWarning, match="holds 3 of 12 images"):
        evaluate_regression(model, train, test, epochs=1, heatmaps_per_landmark=2, size=8, val_fraction=0.25,
                            cache=FeatureCache(memory_bytes=3 * per_image + 10), progress=messages.append)
    assert any("cache_dir" in m for m in messages)


def test_matching_results_equal_those_with_the_original_tps_pairs(monkeypatch):
    from contrastive_landmarks import tps

    model = Hypercolumn(load_backbone("test_resnet"), size=None)
    fast = evaluate_matching(model, Blobs(8), seed=3, crop=2, batch_size=4)
    monkeypatch.setattr(tps, "make_pair", tps._make_pair_reference)
    original = evaluate_matching(model, Blobs(8), seed=3, crop=2, batch_size=4)
    assert fast["same"] == original["same"] and fast["different"] == original["different"]
    assert fast["same"]["count"] > 0 and fast["different"]["error"] > 0
