"""PoseRelations: the lines it finds in labelled poses, the score-weighted mix, and a model that carries them."""

from __future__ import annotations

import pytest
import torch

from contrastive_landmarks.framing import Framing
from contrastive_landmarks.pose_relations import PoseRelations, line_fits
from tests.conftest import make_tiny_model


def _poses(m: int = 12, n: int = 5, seed: int = 0, noise: float = 0.005):
    """Random poses where landmark 0's x is 0.5 · landmark 3's x + 0.1 (plus ``noise``) and nothing else relates."""
    g = torch.Generator().manual_seed(seed)
    poses = torch.rand(m, n, 2, generator=g) * 2 - 1
    poses[:, 0, 0] = 0.5 * poses[:, 3, 0] + 0.1 + noise * torch.randn(m, generator=g)
    return poses, torch.ones(m, n, dtype=torch.bool)


def _leave_one_out_rms(y: torch.Tensor, x: torch.Tensor) -> float:
    """The naive leave-one-out RMS of a least-squares line y ~ a x + b: refit without each frame in turn."""
    errors = []
    for k in range(len(x)):
        keep = torch.arange(len(x)) != k
        design = torch.stack([x[keep], torch.ones(int(keep.sum()), dtype=x.dtype)], 1)
        a, b = torch.linalg.lstsq(design, y[keep, None]).solution[:, 0]
        errors.append(float(y[k] - (a * x[k] + b)))
    return float(torch.tensor(errors).pow(2).mean().sqrt())


def test_the_fit_finds_the_planted_line_and_no_other():
    poses, visible = _poses()
    relations = PoseRelations.fit(poses, visible)
    pairs = sorted(zip(relations.target.tolist(), relations.source.tolist()))
    assert pairs == [(0, 6), (6, 0)]  # x of landmark 0 from x of landmark 3, and back
    row = relations.target.tolist().index(0)
    assert relations.slope[row] == pytest.approx(0.5, abs=0.02) and relations.intercept[row] == pytest.approx(
        0.1, abs=0.01
    )
    loose = PoseRelations.fit(*_poses(noise=0.3))  # a line this noisy explains too little of the spread to keep
    assert len(loose) == 0


def test_the_closed_form_leave_one_out_is_the_refitting_one():
    """line_fits' hat-matrix leave-one-out error equals refitting without each frame, pair by pair, and its lines are
    least squares over the frames that label both landmarks."""
    poses, visible = _poses(m=9, noise=0.05)
    visible[2, 3], visible[5, 1] = False, False  # frames without a landmark do not count for its pairs
    slope, intercept, loo, spread, count = line_fits(poses, visible)
    for target, source in [(0, 6), (0, 3), (2, 7), (9, 0), (6, 2)]:
        both = visible[:, target // 2] & visible[:, source // 2]
        x, y = poses[both, source // 2, source % 2].double(), poses[both, target // 2, target % 2].double()
        assert count[target, source] == int(both.sum())
        assert float(loo[target, source]) == pytest.approx(_leave_one_out_rms(y, x), rel=1e-6)
        design = torch.stack([x, torch.ones_like(x)], 1)
        a, b = torch.linalg.lstsq(design, y[:, None]).solution[:, 0]
        assert float(slope[target, source]) == pytest.approx(float(a), rel=1e-6)
        assert float(intercept[target, source]) == pytest.approx(float(b), rel=1e-6, abs=1e-12)
        assert float(spread[target, source]) == pytest.approx(float((y - y.mean()).pow(2).mean().sqrt()), rel=1e-6)
    assert int(loo[0, 2:].argmin()) + 2 == 6  # the planted line is the best partner of x_0 among other landmarks


def test_the_mix_weighs_each_point_against_its_partners_line_by_score():
    relations = PoseRelations(torch.tensor([0]), torch.tensor([6]), torch.tensor([0.5]), torch.tensor([0.1]), 5, 2.0)
    points, scores = torch.rand(3, 5, 2) * 2 - 1, torch.rand(3, 5)
    out = relations(points, scores)
    own, other = scores[:, 0] ** 2, scores[:, 3] ** 2
    expected = points.clone()
    expected[:, 0, 0] = (own * points[:, 0, 0] + other * (0.5 * points[:, 3, 0] + 0.1)) / (own + other)
    torch.testing.assert_close(out, expected)
    confident = scores.clone()
    confident[:, 0], confident[:, 3] = 1.0, 1e-3
    torch.testing.assert_close(relations(points, confident), points, atol=1e-6, rtol=0)  # a sure point stays


def test_config_round_trip_computes_the_same():
    relations = PoseRelations.fit(*_poses())
    again = PoseRelations.from_config(relations.config)
    points, scores = torch.rand(4, 5, 2), torch.rand(4, 5)
    torch.testing.assert_close(again(points, scores), relations(points, scores))
    empty = PoseRelations.from_config(PoseRelations.fit(*_poses(noise=0.3)).config)
    assert len(empty) == 0 and torch.equal(empty(points, scores), points)


def test_bad_relations_and_shapes_are_named():
    with pytest.raises(ValueError, match="own source"):
        PoseRelations(torch.tensor([0]), torch.tensor([1]), torch.tensor([1.0]), torch.tensor([0.0]), 3)
    with pytest.raises(ValueError, match="num_landmarks"):
        PoseRelations(torch.tensor([0]), torch.tensor([8]), torch.tensor([1.0]), torch.tensor([0.0]), 3)
    with pytest.raises(ValueError, match=r"\(M, N, 2\)"):
        PoseRelations.fit(torch.rand(4, 3), torch.ones(4, 3, dtype=torch.bool))


def test_a_model_with_relations_saves_loads_and_predicts_the_same(tmp_path):
    from contrastive_landmarks import LandmarkModel

    model = make_tiny_model()
    model.framing = Framing(stages=1)
    n = model.regressor.num_landmarks
    frames = [torch.rand(3, 70, 90), torch.rand(3, 64, 64)]
    before = model.detect(frames, check_content=False)
    model.relations = PoseRelations(torch.tensor([0]), torch.tensor([2]), torch.tensor([1.0]), torch.tensor([0.05]), n)
    after = model.detect(frames, check_content=False)
    assert float((after - before)[:, 0, 0].abs().min()) > 1e-3 and torch.equal(after[:, 1:], before[:, 1:])
    model.save_pretrained(tmp_path / "m")
    loaded = LandmarkModel.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(loaded.detect(frames, check_content=False), after)
    with pytest.raises(ValueError, match="two stages"):
        LandmarkModel(
            model.hypercolumn, model.projector, model.regressor, framing=Framing(2), relations=model.relations
        )
