"""LandmarkModel: the bundle of backbone, hypercolumn, projector and regressor, saved and loaded strictly."""

from __future__ import annotations

import dataclasses
import itertools
import json
import warnings
from types import SimpleNamespace

import pytest
import torch

from contrastive_landmarks import Hypercolumn, LandmarkModel, LandmarkRegressor, SpatialProjector, load_backbone
from contrastive_landmarks.framing import Framing
from tests.conftest import make_tiny_model


def _model(regressor_input: str = "projector") -> LandmarkModel:
    torch.manual_seed(0)
    hc = Hypercolumn(load_backbone("test_resnet"), size=24)
    projector = SpatialProjector(hc.channels, 16, size=24)
    channels = 16 if regressor_input == "projector" else hc.channels
    regressor = LandmarkRegressor(channels, 5, 4, size=24)
    return LandmarkModel(
        hc,
        projector,
        regressor,
        regressor_input=regressor_input,
        landmark_names=("left_eye", "right_eye", "nose", "left_mouth", "right_mouth"),
    )


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


def test_a_head_file_that_does_not_fit_names_its_keys(tmp_path):
    """Heads load as strictly as the backbone: the file, and every missing, unexpected and mis-shaped key."""
    from safetensors.torch import load_file, save_file

    from contrastive_landmarks import CheckpointMismatchError

    _model().save_pretrained(tmp_path)
    path = tmp_path / "regressor.safetensors"
    tensors = load_file(str(path))
    tensors["extra"] = tensors.pop("combine")
    tensors["weight"] = tensors["weight"][:3]
    save_file(tensors, str(path))
    with pytest.raises(CheckpointMismatchError) as error:
        LandmarkModel.from_pretrained(tmp_path)
    message = str(error.value)
    assert str(path) in message and "LandmarkRegressor" in message
    assert "missing keys: combine" in message and "unexpected keys: extra" in message
    assert "shape mismatches: weight: checkpoint (3," in message


def test_one_writer_writes_every_file_of_the_directory(tmp_path):
    """hub.save_pretrained writes the heads too: the same dtype, the same safetensors metadata as the backbone."""
    from safetensors import safe_open

    model = make_tiny_model()
    directory = model.save_pretrained(tmp_path / "half", dtype=torch.float16, card="card\n")
    names = ["README.md", "config.json", "model.safetensors", "projector.safetensors", "regressor.safetensors"]
    assert sorted(p.name for p in directory.iterdir()) == names
    for name in names[2:]:
        with safe_open(str(directory / name), "pt") as handle:
            assert handle.metadata() == {"format": "pt"}
            tensors = [handle.get_tensor(k) for k in handle.keys()]  # noqa: SIM118 (a safe_open handle has no __iter__)
            assert {t.dtype for t in tensors if t.is_floating_point()} == {torch.float16}
    loaded = LandmarkModel.from_pretrained(directory)
    torch.testing.assert_close(loaded.regressor.weight, model.regressor.weight.half().float())
    assert loaded.config == model.config and (directory / "README.md").read_text() == "card\n"


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


# -- round trips compare outputs, with non-ImageNet statistics and a non-default grid ----------------------
IMAGES = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("regressor_input", ["projector", "hypercolumn"])
def test_save_load_round_trip_gives_the_same_outputs(tmp_path, regressor_input):
    from tests.conftest import make_tiny_model

    model = make_tiny_model(regressor_input)
    loaded = LandmarkModel.from_pretrained(model.save_pretrained(tmp_path / "bundle"))
    torch.testing.assert_close(loaded.detect(IMAGES), model.detect(IMAGES))
    torch.testing.assert_close(loaded.descriptors(IMAGES), model.descriptors(IMAGES))
    torch.testing.assert_close(loaded.detect(IMAGES[:1]), model.detect(IMAGES[:1]))


def test_round_trip_is_sensitive_to_the_statistics(tmp_path, tiny_model):
    """The test above would catch a loader that falls back to ImageNet statistics."""
    loaded = LandmarkModel.from_pretrained(tiny_model.save_pretrained(tmp_path / "bundle"))
    loaded.backbone.with_preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert not torch.allclose(loaded.descriptors(IMAGES), tiny_model.descriptors(IMAGES))


def test_from_pretrained_uses_the_directory_config_for_the_backbone(tmp_path, tiny_model):
    loaded = LandmarkModel.from_pretrained(tiny_model.save_pretrained(tmp_path / "bundle"))
    assert loaded.backbone.preprocessing == tiny_model.backbone.preprocessing
    assert loaded.config == tiny_model.config


def test_grid_size_comes_from_the_hypercolumn_section(tmp_path, tiny_model):
    directory = tiny_model.save_pretrained(tmp_path / "bundle")
    config = json.loads((directory / "config.json").read_text())
    assert config["hypercolumn"]["size"] == config["projector"]["size"] == config["regressor"]["size"] == [12, 12]
    config["hypercolumn"]["size"] = [10, 10]  # the one place: the heads follow
    (directory / "config.json").write_text(json.dumps(config))
    loaded = LandmarkModel.from_pretrained(directory)
    assert loaded.descriptors(IMAGES).shape == (3, 16, 10, 10)
    assert loaded.projector.size == loaded.regressor.size == loaded.hypercolumn.size == (10, 10)
    assert loaded.config["projector"]["size"] == loaded.config["regressor"]["size"] == [10, 10]


def test_saved_grid_is_the_one_the_computation_used(tmp_path):
    """A projector built with another default size is saved with the grid the model actually computes on."""
    hc = Hypercolumn(load_backbone("test_resnet"), size=12)
    model = LandmarkModel(hc, SpatialProjector(hc.channels, 16, size=48))
    before = model.descriptors(IMAGES)
    assert before.shape[-2:] == (12, 12)
    loaded = LandmarkModel.from_pretrained(model.save_pretrained(tmp_path / "bundle"))
    assert loaded.config["projector"]["size"] == [12, 12]
    torch.testing.assert_close(loaded.descriptors(IMAGES), before)


def test_preprocessing_is_read_only(tiny_model):
    backbone = tiny_model.backbone
    for name, value in (("mean", (0.1, 0.1, 0.1)), ("std", (1.0, 1.0, 1.0)), ("input_size", (8, 8))):
        with pytest.raises(AttributeError, match=rf"{name} is read-only.*with_preprocessing"):
            setattr(backbone, name, value)
    with pytest.raises(dataclasses.FrozenInstanceError):
        backbone.preprocessing.mean = (0.0, 0.0, 0.0)
    assert backbone.mean == (0.5, 0.5, 0.5) and backbone.input_size == (32, 32)


def test_with_preprocessing_changes_what_normalize_computes(tiny_model):
    backbone = tiny_model.backbone
    images = torch.full((1, 3, 4, 4), 0.75)
    torch.testing.assert_close(backbone.normalize(images), torch.full((1, 3, 4, 4), 0.5))
    assert backbone.with_preprocessing(mean=(0.25, 0.25, 0.25)) is backbone
    torch.testing.assert_close(backbone.normalize(images), torch.full((1, 3, 4, 4), 1.0))
    assert backbone.config["mean"] == [0.25, 0.25, 0.25] and backbone.config["std"] == [0.5, 0.5, 0.5]


# -- per-landmark confidence (detect(return_scores=True)) ------------------------------------------------
def test_scores_shape_range_and_points_unchanged(tiny_model):
    images = torch.rand(3, 3, 40, 48)
    points, scores = tiny_model.detect(images, return_scores=True)
    assert scores.shape == (3, 5) and scores.dtype == torch.float32
    assert bool(((scores >= 0) & (scores <= 1)).all())
    torch.testing.assert_close(points, tiny_model.detect(images))  # the same computation as detect()
    listed_points, listed_scores = tiny_model.detect([images[0], images[1, :, :32, :32]], return_scores=True)
    assert listed_points.shape == (2, 5, 2) and listed_scores.shape == (2, 5)
    torch.testing.assert_close(listed_scores[0], scores[0])


def _scores_naive(heatmaps: torch.Tensor, intermediate: torch.Tensor) -> torch.Tensor:
    """landmark_scores as its docstring states it: softmax at SCORE_MULTIPLIER, its mass in a mask of every cell
    within SCORE_RADIUS of the peak (mean over K), times exp(-spread / SCORE_SPREAD)."""
    from contrastive_landmarks.regression import SCORE_MULTIPLIER, SCORE_RADIUS, SCORE_SPREAD

    b, n, k, h, w = heatmaps.shape
    probs = torch.softmax(heatmaps.reshape(b, n, k, h * w).double() * SCORE_MULTIPLIER, -1).reshape(b, n, k, h, w)
    focus = torch.zeros(b, n, k, dtype=torch.float64)
    for index in itertools.product(range(b), range(n), range(k)):
        py, px = divmod(int(heatmaps[index].flatten().argmax()), w)
        rows = slice(max(0, py - SCORE_RADIUS), py + SCORE_RADIUS + 1)
        focus[index] = probs[index][rows, max(0, px - SCORE_RADIUS) : px + SCORE_RADIUS + 1].sum()
    points = intermediate.double()
    spread = (points - points.mean(-2, keepdim=True)).pow(2).sum(-1).mean(-1).sqrt()
    return (focus.mean(-1) * torch.exp(-spread / SCORE_SPREAD)).clamp(0, 1)


def test_scores_are_the_formula_near_the_grid_edges_too():
    """Peaks in corners and on edges (a window cut by the grid) and inside, against the loop over every heatmap."""
    from contrastive_landmarks.regression import Regression, landmark_scores

    g = torch.Generator().manual_seed(0)
    heatmaps = torch.randn(2, 3, 4, 9, 11, generator=g) * 3
    heatmaps[0, 0, 0, 0, 0] = heatmaps[0, 1, 2, 8, 10] = heatmaps[1, 2, 3, 4, 0] = 40.0  # corners, an edge
    intermediate = torch.rand(2, 3, 4, 2, generator=g) - 0.5
    result = Regression(torch.zeros(2, 3, 2), torch.zeros(2, 3, 2), intermediate, heatmaps, heatmaps)
    torch.testing.assert_close(
        landmark_scores(result).double(), _scores_naive(heatmaps, intermediate), rtol=1e-5, atol=1e-6
    )
    given = torch.rand(2, 3)
    assert landmark_scores(result._replace(scores=given)) is given  # computed once per pass, then reused


def test_scores_need_a_regressor(tiny_model):
    tiny_model.regressor = None
    with pytest.raises(RuntimeError, match="no landmark regressor"):
        tiny_model.detect(torch.rand(1, 3, 32, 32), return_scores=True)


def test_a_face_scores_higher_than_noise_and_blank_images(faces_model, hopper_face):
    face = torch.nn.functional.interpolate(hopper_face[None], size=(64, 64), mode="bilinear", antialias=True)
    generator = torch.Generator().manual_seed(0)
    negatives = torch.cat(
        [torch.rand(2, 3, 64, 64, generator=generator), torch.zeros(1, 3, 64, 64), torch.full((1, 3, 64, 64), 0.5)]
    )
    _, face_scores = faces_model.detect(face.clamp(0, 1), return_scores=True)
    _, other_scores = faces_model.detect(negatives, return_scores=True)
    # per image (mean over landmarks), the face beats every negative by a clear margin
    assert float(face_scores.mean()) > 1.2 * float(other_scores.mean(-1).max())
    _, mirrored = faces_model.detect(face.clamp(0, 1).flip(-1), return_scores=True)
    assert float(mirrored.mean()) > float(other_scores.mean(-1).max())


def test_scores_survive_save_and_load(tmp_path, tiny_model):
    images = torch.rand(2, 3, 32, 32)
    points, scores = tiny_model.detect(images, return_scores=True)
    loaded = LandmarkModel.from_pretrained(tiny_model.save_pretrained(tmp_path / "bundle"))
    loaded_points, loaded_scores = loaded.detect(images, return_scores=True)
    torch.testing.assert_close(loaded_points, points, rtol=0, atol=0)
    torch.testing.assert_close(loaded_scores, scores, rtol=0, atol=0)


def test_detect_on_an_empty_batch_returns_empty_points_and_scores():
    """An empty (0, 3, H, W) batch gives (0, N, 2) points and (0, N) scores (it raised IndexError)."""
    model = _model()
    points = model.detect(torch.rand(0, 3, 64, 48))
    assert points.shape == (0, 5, 2) and points.dtype == torch.float32
    points, scores = model.detect(torch.zeros(0, 3, 64, 64, dtype=torch.uint8), return_scores=True)
    assert points.shape == (0, 5, 2) and scores.shape == (0, 5)
    # the same model on a non-empty batch still works after it
    assert model.detect(torch.rand(1, 3, 64, 48)).shape == (1, 5, 2)


@pytest.mark.parametrize("regressor_input", ["hypercolumn", "projector"])
def test_detect_and_the_fitting_side_run_the_one_regress(regressor_input):
    """issue 28: detect, evaluation.predict_dataset and train's predict are regression.regress, not copies of it."""
    from contrastive_landmarks.evaluation.regression import predict_dataset
    from contrastive_landmarks.regression import regress
    from contrastive_landmarks.train.regressor_fitting import predict

    model = make_tiny_model(regressor_input)
    projector = model.projector if regressor_input == "projector" else None
    images = IMAGES  # at the model's input size: detect does not resize them
    ran = regress(model.hypercolumn, model.regressor, images, projector=projector)
    for got, want in zip(model.regression(images), ran, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(model.detect(images), ran.points, rtol=0, atol=0)
    # the normalised landmarks are the regressor's own decode of the heatmaps
    heatmaps = ran.heatmaps.flatten(1, 2)
    torch.testing.assert_close(ran.normalized, model.regressor.decode(heatmaps), rtol=0, atol=0)
    labels = {"keypoints": torch.zeros(5, 2), "visible": torch.ones(5, dtype=torch.bool)}
    data = [{"image": image, **labels} for image in images]
    fit = SimpleNamespace(regressor=model.regressor)  # all that predict_dataset reads of a RegressorFit
    # one batch, as detect ran: another batch size may round differently in the BLAS kernels
    evaluated, _, _ = predict_dataset(model.hypercolumn, fit, data, projector=projector, batch_size=len(images))
    torch.testing.assert_close(evaluated, ran.points, rtol=0, atol=0)
    if projector is None:
        torch.testing.assert_close(predict(model.hypercolumn, model.regressor, images), ran.points, rtol=0, atol=0)


def test_detect_checks_its_input_once(tiny_model, monkeypatch):
    """issue 28: the input is checked at detect, not again in each step it goes through (framed or not)."""
    import contrastive_landmarks.pipeline as pipeline

    calls = {"as_image_list": 0, "content_problem": 0}

    def counted(name):
        real = getattr(pipeline, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(pipeline, name, wrapper)

    counted("as_image_list")
    counted("content_problem")
    images = [IMAGES[0], IMAGES[1, :, :24, :28]]
    for framing in (None, Framing(stages=2)):
        tiny_model.framing = framing
        calls.update(as_image_list=0, content_problem=0)
        tiny_model.detect(images, return_scores=True)
        assert calls == {"as_image_list": 1, "content_problem": 2}
    calls.update(as_image_list=0, content_problem=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a blank image, and no warning: the caller checks content itself
        tiny_model.detect(torch.zeros(1, 3, 32, 32), check_content=False)
    assert calls == {"as_image_list": 1, "content_problem": 0}
    with pytest.warns(UserWarning, match=r"images\[0\] is blank"):
        tiny_model.detect(torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize("regressor_input", ["hypercolumn", "projector"])
def test_a_normalized_hypercolumn_predicts_as_it_was_fitted(regressor_input):
    """normalize=True: fit_regressor trains on the materialised normalised hypercolumn (train.features.regressor_maps),
    so the model must give its heads the same, not the raw stage maps (which would skip the normalisation)."""
    from contrastive_landmarks.evaluation.regression import predict_dataset
    from contrastive_landmarks.train import fit_regressor

    torch.manual_seed(0)
    hc = Hypercolumn(load_backbone("test_resnet"), size=12, normalize=True)
    projector = SpatialProjector(hc.channels, 8, size=12) if regressor_input == "projector" else None
    g = torch.Generator().manual_seed(1)
    data = [
        {"image": torch.rand(3, 32, 32, generator=g), "keypoints": torch.rand(3, 2, generator=g) * 24 + 4}
        for _ in range(12)
    ]
    for sample in data:
        sample["visible"] = torch.ones(3, dtype=torch.bool)
    fit = fit_regressor(hc, data[:8], data[8:], projector=projector, steps=3, heatmaps_per_landmark=2, warn=False)
    fitted, _, _ = predict_dataset(hc, fit, data, projector=projector)
    model = LandmarkModel(hc, projector, fit.regressor, regressor_input=regressor_input)
    images = torch.stack([s["image"] for s in data])
    torch.testing.assert_close(model.detect(images), fitted, rtol=0, atol=0)  # one runner: exactly
    raw = LandmarkModel(Hypercolumn(hc.backbone, size=12), projector, fit.regressor, regressor_input=regressor_input)
    assert (raw.detect(images) - fitted).abs().max() > 0.01  # the unnormalised stage maps predict otherwise
    if projector is not None:  # descriptors: the projector on the normalised hypercolumn, as fit_projector trains it
        expected = projector([hc(hc.backbone.normalize(images))], 12)
        torch.testing.assert_close(model.descriptors(images), expected, rtol=0, atol=1e-5)


# -- detect_in_boxes: the one pass detect runs, on crops a caller places ------------------------------------
def _framed(stages: int = 2) -> LandmarkModel:
    from contrastive_landmarks.framing import Framing
    from tests.conftest import make_tiny_model

    model = make_tiny_model()
    model.framing = Framing(stages=stages, margin=1.5, min_fraction=0.2)
    return model


FRAMES = [
    torch.rand(3, 48, 80, generator=torch.Generator().manual_seed(1)),
    torch.rand(3, 90, 40, generator=torch.Generator().manual_seed(2)),
]


@pytest.mark.parametrize("stages", [1, 2])
def test_detect_in_boxes_on_detects_own_boxes_is_detect(stages):
    from contrastive_landmarks.framing import frame_boxes

    model = _framed(stages)
    sizes = [tuple(f.shape[-2:]) for f in FRAMES]
    points, scores = model.detect(FRAMES, return_scores=True)
    first = model.detect_in_boxes(FRAMES, frame_boxes(sizes))
    boxes = model.boxes_around(first, sizes) if stages == 2 else frame_boxes(sizes)
    again, again_scores = model.detect_in_boxes(FRAMES, boxes, return_scores=True)
    torch.testing.assert_close(again, points, rtol=0, atol=0)
    torch.testing.assert_close(again_scores, scores, rtol=0, atol=0)
    if stages == 2:  # the second pass moved the points: the test above compares two different passes
        assert float((first - points).abs().max()) > 1e-3


def test_a_model_directory_written_before_the_crop_cap_frames_as_before(tmp_path):
    """A config.json whose framing has no ``max_fraction`` (written before the cap) loads without one: its second
    pass's crops are margin x the points' spread even where that is wider than the frame, as it was fitted."""
    model = _framed()
    model.save_pretrained(tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())
    assert config["framing"]["max_fraction"] == 1.0
    del config["framing"]["max_fraction"]
    config_path.write_text(json.dumps(config))
    old = LandmarkModel.from_pretrained(tmp_path / "m")
    sizes = [(48, 80)]
    wide = torch.tensor([[[2.0, 5.0], [77.0, 40.0]]])  # 75 px apart: margin 1.5 makes 112.5 px of an 80-px frame
    assert old.boxes_around(wide, sizes)[0, 2].item() == pytest.approx(112.5)
    assert model.boxes_around(wide, sizes)[0, 2].item() == pytest.approx(80.0)
    # detect runs its second pass on the uncapped boxes of its first pass's points
    from contrastive_landmarks.framing import frame_boxes, keypoint_boxes

    frames, sizes = FRAMES, [tuple(f.shape[-2:]) for f in FRAMES]
    first = old.detect_in_boxes(frames, frame_boxes(sizes))
    uncapped = keypoint_boxes(first, None, sizes, margin=1.5, min_fraction=0.2)
    torch.testing.assert_close(old.detect(frames), old.detect_in_boxes(frames, uncapped), rtol=0, atol=0)


def test_a_decode_window_round_trips_through_the_model_directory(tmp_path):
    model = _framed()
    model.regressor.decode_window = 1
    model.save_pretrained(tmp_path / "m")
    loaded = LandmarkModel.from_pretrained(tmp_path / "m")
    assert loaded.regressor.decode_window == 1
    points, scores = model.detect(FRAMES, return_scores=True)
    again, again_scores = loaded.detect(FRAMES, return_scores=True)
    torch.testing.assert_close(again, points, rtol=0, atol=0)
    torch.testing.assert_close(again_scores, scores, rtol=0, atol=0)


def test_detect_in_boxes_follows_the_box_and_checks_it():
    model = _framed()
    sizes = [tuple(f.shape[-2:]) for f in FRAMES]
    boxes = model.boxes_around(torch.tensor([[[38.0, 24.0], [42.0, 26.0]], [[10.0, 40.0], [30.0, 70.0]]]), sizes)
    assert boxes.tolist()[0] == pytest.approx([40.0, 25.0, 0.2 * 80, 0.0])  # at least min_fraction of the frame
    assert boxes.tolist()[1] == pytest.approx([20.0, 55.0, 1.5 * 30, 0.0])  # margin x the box's longer side
    # a frame and its shifted copy, each cropped at the same content: the points shift with it
    frame = torch.rand(3, 60, 60)
    shifted = torch.zeros(3, 60, 60)
    shifted[:, 5:, 7:] = frame[:, :-5, :-7]
    box = torch.tensor([[25.0, 25.0, 30.0, 0.0]])
    here = model.detect_in_boxes([frame], box)
    there = model.detect_in_boxes([shifted], box + torch.tensor([7.0, 5.0, 0.0, 0.0]))
    torch.testing.assert_close(there, here + torch.tensor([7.0, 5.0]), rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match=r"boxes must be a \(2, 4\) tensor"):
        model.detect_in_boxes(FRAMES, boxes[:1])
    with pytest.raises(ValueError, match="positive side"):
        model.detect_in_boxes(FRAMES, boxes * torch.tensor([1.0, 1.0, 0.0, 1.0]))


# -- the calibrated likelihood in detect, save and load ---------------------------------------------------
def _calibration(n: int = 5, radius: float | None = 4.0):
    from contrastive_landmarks.calibration import LikelihoodCalibration

    return LikelihoodCalibration([(2.0 + 0.5 * i, 1.0 - 0.3 * i) for i in range(n)], radius=radius)


def test_detect_applies_the_calibration_and_the_directory_keeps_it(tmp_path):
    from contrastive_landmarks.pipeline import landmark_scores

    model = _framed()
    raw_points, raw = model.detect(FRAMES, return_scores=True)
    torch.testing.assert_close(raw, landmark_scores(model.regression(FRAMES)), rtol=0, atol=0)
    model.calibration = _calibration()
    points, likelihood = model.detect(FRAMES, return_scores=True)
    torch.testing.assert_close(points, raw_points, rtol=0, atol=0)  # the points do not change
    torch.testing.assert_close(likelihood, model.calibration(raw), rtol=0, atol=0)
    assert float((likelihood - raw).abs().max()) > 0.05
    directory = model.save_pretrained(tmp_path / "calibrated")
    assert json.loads((directory / "config.json").read_text())["likelihood"]["radius_px"] == 4.0
    loaded = LandmarkModel.from_pretrained(directory)
    assert loaded.calibration.config == model.calibration.config
    loaded_points, loaded_likelihood = loaded.detect(FRAMES, return_scores=True)
    torch.testing.assert_close(loaded_points, points, rtol=0, atol=0)
    torch.testing.assert_close(loaded_likelihood, likelihood, rtol=0, atol=0)


def test_a_directory_without_a_calibration_keeps_its_raw_scores(tmp_path, tiny_model):
    """Model directories written before calibrations existed load without one and score exactly as before."""
    from contrastive_landmarks.pipeline import landmark_scores

    directory = tiny_model.save_pretrained(tmp_path / "old")
    assert "likelihood" not in json.loads((directory / "config.json").read_text())
    loaded = LandmarkModel.from_pretrained(directory)
    assert loaded.calibration is None
    _, scores = loaded.detect(IMAGES, return_scores=True)
    torch.testing.assert_close(scores, landmark_scores(tiny_model.regression(IMAGES)), rtol=0, atol=0)


def test_a_calibration_must_fit_the_model():
    model = _model()
    with pytest.raises(ValueError, match="calibration of 3 landmarks does not fit a model with 5 landmarks"):
        model.calibration = _calibration(3)
    with pytest.raises(TypeError, match="must be a LikelihoodCalibration"):
        model.calibration = {"method": "platt"}


def test_fit_calibration_runs_the_model_on_raw_scores_and_attaches_the_result():
    from contrastive_landmarks.calibration import fit_calibration, fit_likelihood
    from contrastive_landmarks.pipeline import landmark_scores

    model = _framed()
    g = torch.Generator().manual_seed(5)
    frames = [torch.rand(3, 40 + 4 * i, 56, generator=g) for i in range(6)]
    keypoints = torch.rand(6, 5, 2, generator=g) * 30 + 5
    visible = torch.ones(6, 5, dtype=torch.bool)
    visible[0, 2] = False
    calibration = fit_calibration(model, frames, keypoints, visible, radius=12.0)
    assert model.calibration is calibration and calibration.points == [6, 6, 5, 6, 6]
    assert calibration.own_fit == [False] * 5  # 29 points: one shared fit
    points = model.detect(frames)
    raw = landmark_scores(model.regression(frames))
    expected = fit_likelihood(raw, (points - keypoints).norm(dim=-1), visible, radius=12.0)
    assert calibration.config == expected.config
    errors = (points - keypoints).norm(dim=-1)
    assert calibration.good_share[0] == pytest.approx(float((errors[:, 0] <= 12.0).double().mean()))
    # fitting again on a calibrated model reads the raw scores, so it gives the same mapping
    assert fit_calibration(model, frames, keypoints, visible, radius=12.0).config == calibration.config
    with pytest.raises(ValueError, match="6 frames but 5 sets of keypoints"):
        fit_calibration(model, frames, keypoints[:5], visible[:5])
