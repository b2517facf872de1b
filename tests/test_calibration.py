"""The calibrated likelihood: a raw score mapped to P(error <= radius), checked on synthetic data with known truth."""

from __future__ import annotations

import json
import math

import pytest
import torch

from contrastive_landmarks.calibration import (
    LikelihoodCalibration,
    animal_diagonal,
    calibration_error,
    fit_likelihood,
    reliability,
)

#: the true P(good | s) = sigmoid(a logit(s) + b) of each synthetic landmark
TRUE = [(2.0, 1.0), (1.0, -0.5), (3.0, 0.0)]
RADIUS = 5.0


def _logit(s: torch.Tensor) -> torch.Tensor:
    return torch.log(s) - torch.log1p(-s)


def _truth(scores: torch.Tensor, pairs=TRUE) -> torch.Tensor:
    ab = torch.tensor(pairs, dtype=torch.float64)
    return torch.sigmoid(ab[:, 0] * _logit(scores.double()) + ab[:, 1])


def _synthetic(m: int = 4000, pairs=TRUE, seed: int = 0):
    """Scores, pixel errors and visibility where a point is within RADIUS with probability _truth(score)."""
    g = torch.Generator().manual_seed(seed)
    n = len(pairs)
    scores = torch.rand(m, n, generator=g) * 0.96 + 0.02
    good = torch.rand(m, n, generator=g, dtype=torch.float64) < _truth(scores, pairs)
    errors = torch.where(
        good, torch.rand(m, n, generator=g) * 0.95 * RADIUS, RADIUS * (1.05 + 4 * torch.rand(m, n, generator=g))
    )
    return scores, errors, torch.ones(m, n, dtype=torch.bool), good


def test_the_fit_recovers_a_known_logistic_truth_per_landmark():
    scores, errors, visible, _ = _synthetic()
    calibration = fit_likelihood(scores, errors, visible, radius=RADIUS)
    assert calibration.own_fit == [True, True, True] and calibration.points == [4000] * 3
    grid = torch.linspace(0.03, 0.97, 95)[:, None].expand(-1, 3)
    fitted, true = calibration(grid).double(), _truth(grid)
    assert float((fitted - true).abs().max()) < 0.05
    for (a, b), (a_true, b_true) in zip(calibration.coefficients, TRUE):
        assert abs(a - a_true) < 0.35 and abs(b - b_true) < 0.25
    # the raw score is not the probability (that is why the mapping exists)
    assert float((grid.double() - true).abs().max()) > 0.2


def test_the_likelihood_is_monotone_and_keeps_shape_and_dtype():
    scores, errors, visible, _ = _synthetic(1500)
    calibration = fit_likelihood(scores, errors, visible, radius=RADIUS)
    grid = torch.linspace(0, 1, 201)[:, None].expand(-1, 3).contiguous()
    out = calibration(grid)
    assert out.shape == grid.shape and out.dtype == torch.float32
    assert bool((out.diff(dim=0) >= 0).all()) and bool(((out >= 0) & (out <= 1)).all())
    assert calibration(torch.rand(2, 7, 3, dtype=torch.float64)).shape == (2, 7, 3)
    with pytest.raises(ValueError, match=r"scores must be \(\.\.\., 3\)"):
        calibration(torch.rand(4, 2))


def test_scores_that_rank_the_wrong_way_give_the_base_rate_not_a_falling_curve():
    pairs = [(-2.0, 0.5)]
    scores, errors, visible, good = _synthetic(2000, pairs)
    calibration = fit_likelihood(scores, errors, visible, radius=RADIUS)
    a, b = calibration.coefficients[0]
    assert a == 0.0
    assert abs(1 / (1 + math.exp(-b)) - float(good.double().mean())) < 0.01


def test_a_landmark_with_few_points_shares_the_pooled_fit():
    scores, errors, visible, _ = _synthetic(3000, [(2.0, 1.0), (2.0, 1.0)])
    visible[60:, 1] = False  # 60 points: under MIN_POINTS
    calibration = fit_likelihood(scores, errors, visible, radius=RADIUS)
    assert calibration.own_fit == [True, False] and calibration.points == [3000, 60]
    pooled = fit_likelihood(scores, errors, visible, radius=RADIUS, min_points=10**9)
    assert calibration.coefficients[1] == pooled.coefficients[0] == pooled.coefficients[1]
    assert calibration.coefficients[0] != calibration.coefficients[1]


def test_all_good_points_give_a_high_but_finite_likelihood():
    scores = torch.rand(50, 2)
    calibration = fit_likelihood(scores, torch.zeros(50, 2), torch.ones(50, 2, dtype=torch.bool), radius=1.0)
    likelihood = calibration(scores)
    assert bool((likelihood < 1).all()) and float(likelihood.mean()) == pytest.approx(
        101 / 102, abs=1e-5
    )  # Platt: one shared fit
    order = scores[:, 0].argsort()
    assert bool((likelihood[order, 0].diff() > 0).all())  # no slope to learn, but the points keep their order


def test_the_relative_radius_follows_each_frames_animal():
    """5 % of the labelled box diagonal: the same 3-px error is good on a big animal and bad on a small one."""
    truth = torch.tensor([[[0.0, 0.0], [300.0, 400.0]], [[10.0, 10.0], [40.0, 50.0]], [[5.0, 5.0], [5.0, 5.0]]])
    visible = torch.tensor([[True, True], [True, True], [True, False]])
    diagonal = animal_diagonal(truth, visible)
    assert diagonal[:2].tolist() == pytest.approx([500.0, 50.0]) and math.isnan(float(diagonal[2]))
    calibration = LikelihoodCalibration([(1.0, 0.0)] * 2)  # default: fraction 0.05
    errors = torch.full((3, 2), 3.0)
    assert calibration.good(errors, visible, truth).tolist() == [[True, True], [False, False], [False, False]]
    assert calibration.usable(visible, truth).tolist() == [[True, True], [True, True], [False, False]]
    with pytest.raises(ValueError, match=r"relative.*pass the labelled points"):
        calibration.good(errors, visible)
    with pytest.raises(ValueError, match="no labelled point to calibrate"):
        fit_likelihood(torch.rand(1, 2), errors[2:], visible[2:], truth=truth[2:])


def test_a_relative_fit_counts_points_against_their_frames_radius():
    scores, _, visible, good = _synthetic(3000, TRUE[:2], seed=3)
    g = torch.Generator().manual_seed(4)
    diagonal = 100 + 400 * torch.rand(3000, generator=g)  # animals of 100-500 px
    truth = torch.zeros(3000, 2, 2)
    truth[:, 1, 0] = diagonal  # two points along x: the box diagonal is their distance
    radius = (0.05 * diagonal)[:, None]
    errors = torch.where(good, 0.9 * radius * torch.rand(3000, 2, generator=g), radius * 1.2)
    relative = fit_likelihood(scores, errors, visible, truth=truth)
    assert relative.radius is None and relative.fraction == 0.05
    grid = torch.linspace(0.05, 0.95, 19)[:, None].expand(-1, 2)
    assert float((relative(grid).double() - _truth(grid, TRUE[:2])).abs().max()) < 0.06
    # a fixed 10-px radius on the same errors is another question, with another answer
    fixed = fit_likelihood(scores, errors, visible, radius=10.0)
    assert float((fixed(grid) - relative(grid)).abs().max()) > 0.1


def test_reliability_rows_are_consistent():
    scores, errors, visible, good = _synthetic(6000)
    visible[:100] = visible[3000:3100] = False  # unlabelled points count nowhere
    calibration = fit_likelihood(scores[:3000], errors[:3000], visible[:3000], radius=RADIUS)
    likelihood = calibration(scores[3000:])
    rows = calibration.reliability(likelihood, errors[3000:], visible[3000:], bins=10)
    assert len(rows) == 10 and sum(r.count for r in rows) == int(visible[3000:].sum())
    assert [r.low for r in rows] == pytest.approx([i / 10 for i in range(10)])
    for row in rows:
        if row.count:
            assert row.low <= row.predicted <= row.high
            if row.count >= 400:  # held-out points: observed follows predicted
                assert abs(row.observed - row.predicted) < 0.06, row
        else:
            assert row.predicted is None and row.observed is None
    overall = sum(r.count * r.observed for r in rows if r.count) / sum(r.count for r in rows)
    assert overall == pytest.approx(float(good[3000:][visible[3000:]].double().mean()))
    assert calibration_error(rows) < 0.03
    raw = reliability(scores[3000:], good[3000:], bins=10)  # the raw score is far from calibrated
    assert calibration_error(raw) > 0.05 and calibration_error(raw) > 3 * calibration_error(rows)
    json.dumps([r._asdict() for r in rows])  # reports can write it


def test_config_round_trip_is_exact_and_json():
    scores, errors, visible, _ = _synthetic(800)
    calibration = fit_likelihood(scores, errors, visible, radius=RADIUS)
    again = LikelihoodCalibration.from_config(json.loads(json.dumps(calibration.config)))
    assert again.config == calibration.config
    torch.testing.assert_close(again(scores), calibration(scores), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown likelihood calibration method"):
        LikelihoodCalibration.from_config({**calibration.config, "method": "isotonic"})
    with pytest.raises(ValueError, match="slopes must be >= 0"):
        LikelihoodCalibration([(-1.0, 0.0)])


def test_mismatched_shapes_are_named():
    with pytest.raises(ValueError, match=r"scores, errors and visible must all be \(M, N\)"):
        fit_likelihood(torch.rand(4, 2), torch.rand(4, 3), torch.ones(4, 2, dtype=torch.bool), radius=1.0)
