"""LandmarkModel: the bundle of backbone, hypercolumn, projector and regressor, saved and loaded strictly."""

from __future__ import annotations

import pytest
import torch

from contrastive_landmarks import Hypercolumn, LandmarkModel, LandmarkRegressor, SpatialProjector, load_backbone


def _model(regressor_input: str = "projector") -> LandmarkModel:
    torch.manual_seed(0)
    hc = Hypercolumn(load_backbone("test_resnet"), size=24)
    projector = SpatialProjector(hc.channels, 16, size=24)
    channels = 16 if regressor_input == "projector" else hc.channels
    regressor = LandmarkRegressor(channels, 5, 4, size=24)
    return LandmarkModel(hc, projector, regressor, regressor_input=regressor_input,
                         landmark_names=("left_eye", "right_eye", "nose", "left_mouth", "right_mouth"))


@pytest.mark.parametrize("regressor_input", ["projector", "hypercolumn"])
def test_detect_shapes_and_pixel_range(regressor_input):
    model = _model(regressor_input)
    points = model.detect(torch.rand(2, 3, 64, 48))
    assert points.shape == (2, 5, 2)
    assert bool((points[..., 0] >= -0.5).all() and (points[..., 0] <= 47.5).all())
    assert model.descriptors(torch.rand(1, 3, 64, 64)).shape == (1, 16, 24, 24)


def test_round_trip(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path / "bundle")
    loaded = LandmarkModel.from_pretrained(tmp_path / "bundle")
    images = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(loaded.detect(images), model.detect(images))
    assert loaded.landmark_names == model.landmark_names
    # the backbone alone loads from the same directory
    assert load_backbone(str(tmp_path / "bundle")).arch == "test_resnet"


def test_missing_head_file_is_named(tmp_path):
    _model().save_pretrained(tmp_path)
    (tmp_path / "regressor.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"regressor\.safetensors is missing"):
        LandmarkModel.from_pretrained(tmp_path)


def test_regressor_needs_projector():
    hc = Hypercolumn(load_backbone("test_resnet"), size=24)
    with pytest.raises(ValueError, match="needs a projector"):
        LandmarkModel(hc, None, LandmarkRegressor(16, 5, 4))


def test_round_trip_keeps_input_size(tmp_path):
    model = _model()
    model.backbone.with_preprocessing(input_size=(40, 40))
    loaded = LandmarkModel.from_pretrained(model.save_pretrained(tmp_path / "bundle"))
    assert loaded.backbone.input_size == (40, 40)


def test_from_config_builds_the_same_structure_with_fresh_weights(tmp_path):
    model = _model()
    loaded = LandmarkModel.from_pretrained(model.save_pretrained(tmp_path / "bundle"))
    fresh = LandmarkModel.from_config(loaded.config)
    assert fresh.config == loaded.config
    assert sorted(fresh.state_dict()) == sorted(loaded.state_dict())
    assert not torch.equal(fresh.projector.weight, loaded.projector.weight)
