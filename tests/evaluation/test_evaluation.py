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
        return {
            "image": self.images[i],
            "keypoints": self.keypoints[i],
            "visible": torch.ones(3, dtype=torch.bool),
            "index": i,
        }


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


def test_regression_protocol_selects_on_validation_and_reports_the_mean_shape(tmp_path):
    model = Hypercolumn(load_backbone("test_resnet"), size=16)
    train, test = Blobs(40, seed=1), Blobs(10, seed=2)
    kwargs = {
        "seeds": (0, 1),
        "steps": 40,
        "heatmaps_per_landmark": 4,
        "lrs": (1e-2, 1e-3),
        "val_fraction": 0.25,
        "batch_size": 8,
        "copies": 2,
    }
    result = evaluate_regression(model, train, test, **kwargs)
    repeat = evaluate_regression(model, train, test, **kwargs)
    assert repeat["test"] == result["test"] and repeat["selected"] == result["selected"]
    assert len(result["test"]["per_seed"]) == 2 and np.isfinite(result["test"]["mean"])
    assert result["config"]["val_images"] == 10 and result["config"]["train_images"] == 30
    for chosen in result["selected"]:
        assert chosen["lr"] in (1e-2, 1e-3) and 1 <= chosen["step"] <= 40 and chosen["labelled"] == 30
    # the mean shape of the training labels, scored on the test images, by hand
    _, val_part = split_indices(40, 0.25, 0)
    train_part = sorted(set(range(40)) - set(val_part))
    shape = train.keypoints[train_part].mean(0)
    eyes = (test.keypoints[:, 0] - test.keypoints[:, 1]).norm(dim=-1)
    by_hand = ((shape - test.keypoints).norm(dim=-1).mean(1) / eyes).mean() * 100
    assert result["test_baseline"]["mean"] == pytest.approx(float(by_hand), rel=1e-3)
    few = evaluate_regression(model, train, test, num_labelled=5, stages=["conv4_x"], **kwargs)
    assert few["config"]["fit"]["train_images"] == 5 and few["selected"][0]["labelled"] == 5
    assert few["config"]["stages"] == ["conv4_x"]
    table = results_table({"hypercolumn": result, "conv4_x, 5 labelled": few})
    assert table.count("\n") == 3 and "± " in table and "mean shape" in table
    saved = json.loads(save_results(result, tmp_path / "r.json").read_text())
    assert saved["config"]["lrs"] == [1e-2, 1e-3] and "torch" in saved["environment"]
    with pytest.raises(ValueError, match="stages"):
        evaluate_regression(model, train, test, stages=["conv1"], **kwargs)


def test_protocol_is_fit_regressor_then_one_test_pass():
    """The protocol has no loop of its own: its test error is fit_regressor's model scored once on the test set."""
    from contrastive_landmarks.train import fit_regressor
    from contrastive_landmarks.train.regressor_fitting import predict

    model = Hypercolumn(load_backbone("test_resnet"), size=16)
    train, test = Blobs(24, seed=3), Blobs(8, seed=4)
    val = [train[i] for i in range(18, 24)]
    options = {"steps": 30, "heatmaps_per_landmark": 3, "batch_size": 6, "copies": 2}
    result = evaluate_regression(model, [train[i] for i in range(18)], test, val_set=val, seeds=(5,), **options)
    fit = fit_regressor(model, [train[i] for i in range(18)], val, seed=5, warn=False, **options)
    pred = predict(model, fit.regressor, test)
    direct = (pred - test.keypoints).norm(dim=-1).mean()  # lists name no eyes: mean pixel error
    assert result["metric"] == "mean pixel error"
    assert result["test"]["mean"] == pytest.approx(float(direct), rel=1e-4)
    assert result["val"]["mean"] == pytest.approx(fit.score) and result["val_baseline"]["mean"] == fit.baseline


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
    from contrastive_landmarks.cli.evaluate import add_evaluate_parser, add_plot_parser

    csv_file = write_csv_dataset(tmp_path)
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers(dest="command")
    add_evaluate_parser(subparsers)
    add_plot_parser(subparsers)
    data_args = ["--dataset", "csv", "--path", str(csv_file), "--image-size", "32"]
    common = [*data_args, "--backbone", "test_resnet"]
    for n, name in ((4, "a"), (8, "b")):
        args = parser.parse_args(
            [
                "evaluate",
                "regression",
                *common,
                "--steps",
                "5",
                "--heatmaps",
                "2",
                "--size",
                "8",
                "--num-labelled",
                str(n),
                "--val-fraction",
                "0.25",
                "--output",
                str(tmp_path / f"{name}.json"),
            ]
        )
        assert args.func(args) == 0
        assert json.loads((tmp_path / f"{name}.json").read_text())["config"]["num_labelled"] == n
    args = parser.parse_args(["evaluate", "matching", *common, "--crop", "4", "--output", str(tmp_path / "m.json")])
    assert args.func(args) == 0 and json.loads((tmp_path / "m.json").read_text())["config"]["pairs"] == 8
    for plot in (
        ["landmarks", "--num", "3"],
        ["pca", "--backbone", "test_resnet", "--num", "2", "--grid", "8"],
        ["nmf", "--backbone", "test_resnet", "--num", "2", "--grid", "8", "--parts", "3"],
        ["matches", "--backbone", "test_resnet", "--pair", "0", "1"],
    ):
        out = tmp_path / f"{plot[0]}.png"
        args = parser.parse_args(["plot", plot[0], *data_args, *plot[1:], "--output", str(out)])
        assert args.func(args) == 0 and out.stat().st_size > 1000
    args = parser.parse_args(
        [
            "plot",
            "fewshot",
            f"mine={tmp_path / 'a.json'}",
            f"mine={tmp_path / 'b.json'}",
            "--output",
            str(tmp_path / "f.png"),
        ]
    )
    assert args.func(args) == 0 and (tmp_path / "f.png").stat().st_size > 1000
    helps = [
        a.help
        for p in subparsers.choices.values()
        for sp in p._subparsers._group_actions[0].choices.values()
        for a in sp._actions
        if a.dest not in ("help",) and a.option_strings
    ]
    assert all(helps)


def test_matching_results_equal_those_with_the_original_tps_pairs(monkeypatch):
    from contrastive_landmarks import tps
    from tests.reference_impls import make_pair_reference

    model = Hypercolumn(load_backbone("test_resnet"), size=None)
    fast = evaluate_matching(model, Blobs(8), seed=3, crop=2, batch_size=4)
    monkeypatch.setattr(tps, "make_pair", make_pair_reference)
    original = evaluate_matching(model, Blobs(8), seed=3, crop=2, batch_size=4)
    assert fast["same"] == original["same"] and fast["different"] == original["different"]
    assert fast["same"]["count"] > 0 and fast["different"]["error"] > 0


def test_keypoint_pck_is_the_metrics_one_a_fraction_at_most_the_threshold():
    """issue 28: evaluate keypoints' PCK is metrics.pck (a fraction, a point at the threshold correct)."""
    from contrastive_landmarks.evaluation.keypoints import keypoint_errors
    from contrastive_landmarks.metrics import pck

    truth = torch.tensor([[[10.0, 10.0], [30.0, 10.0], [10.0, 40.0]], [[5.0, 5.0], [45.0, 35.0], [0.0, 0.0]]])
    pred = truth + torch.tensor([[[3.0, 4.0], [0.0, 10.0], [12.0, 0.0]], [[1.0, 0.0], [6.0, 8.0], [0.0, 0.0]]])
    visible = torch.tensor([[True, True, True], [True, True, False]])
    truth[1, 2] = float("nan")  # unlabelled
    metrics = keypoint_errors(pred, truth, visible)
    # errors of the 5 labelled points: 5, 10, 12, 1, 10
    assert metrics["pck_5px"] == pytest.approx(2 / 5) and metrics["pck_10px"] == pytest.approx(4 / 5)
    assert metrics["pck_5px"] == float(pck(pred, truth, visible, threshold=5.0))
    # 0.05 of each frame's box diagonal: 36.06 -> 1.80 px and 50 -> 2.5 px
    assert metrics["pck_0.05_diagonal"] == pytest.approx(1 / 5)


def test_likelihood_reliability_counts_kept_and_good_points_by_hand():
    """issue 30: how a calibrated likelihood holds on labelled frames, under its radius (5 px here)."""
    from contrastive_landmarks.calibration import LikelihoodCalibration
    from contrastive_landmarks.evaluation.keypoints import likelihood_reliability

    calibration = LikelihoodCalibration([(1.0, 0.0)] * 5, radius=5.0)  # likelihood = raw score
    truth = torch.zeros(1, 5, 2)
    pred = torch.tensor([[[1.0, 0.0], [0.0, 3.0], [6.0, 0.0], [0.0, 8.0], [0.0, 0.0]]])  # errors 1, 3, 6, 8, 0
    visible = torch.tensor([[True, True, True, True, False]])  # the last point is unlabelled: never counted
    likelihood = torch.tensor([[0.9, 0.5, 0.7, 0.2, 0.99]])
    report = likelihood_reliability(calibration, pred, truth, visible, likelihood, p_cutoff=0.6)
    # good (<= 5 px): points 0, 1; kept (>= 0.6): points 0, 2
    assert report["points"] == 4 and report["radius"] == "within 5 px"
    assert report["kept_within_radius"] == pytest.approx(1 / 2) and report["within_radius_kept"] == pytest.approx(1 / 2)
    # one point per bin: |0.9 - 1| + |0.5 - 1| + |0.7 - 0| + |0.2 - 0| over 4
    assert report["expected_calibration_error"] == pytest.approx((0.1 + 0.5 + 0.7 + 0.2) / 4)
    assert sum(row["count"] for row in report["reliability"]) == 4
