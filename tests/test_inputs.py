"""Inputs users actually pass (issue #14): one test per case, each with the error or result it gets.

Images: NaN / Inf, 0..255 floats, already-normalised floats, uint8, float16 / bfloat16 / float64, wrong
rank, wrong channels, any size, lists of sizes, too small. Files: a missing model directory, a missing
relative path, a truncated / random / mislabelled ``model.safetensors``, a corrupt ``config.json``.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F

from contrastive_landmarks import LandmarkModel, load_backbone


def _smooth_images(batch: int, height: int, width: int, seed: int = 3) -> torch.Tensor:
    """Random images with the neighbouring-pixel correlation of photos (plain noise gets a warning)."""
    coarse = torch.rand(batch, 3, height // 4 + 2, width // 4 + 2, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)


IMAGES = _smooth_images(2, 32, 32)


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


# -- values -----------------------------------------------------------------------------------------------
def test_nan_images_are_refused_by_name(tiny_model):
    images = IMAGES.clone()
    images[1, 0, 5, 7] = float("nan")
    with pytest.raises(ValueError, match=r"images contains 1 NaN and 0 infinite values .*\(1, 0, 5, 7\)"):
        tiny_model.detect(images)
    with pytest.raises(ValueError, match="images contains 1 NaN"):
        tiny_model.descriptors(images)


def test_infinite_images_are_refused_by_name(tiny_model):
    images = IMAGES.clone()
    images[0, 2, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="images contains 0 NaN and 1 infinite values"):
        tiny_model.detect(images)


def test_nan_in_one_image_of_a_list_names_that_image(tiny_model):
    bad = IMAGES[1].clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"images\[1\] contains 1 NaN"):
        tiny_model.detect([IMAGES[0], bad])


def test_0_255_float_images_say_divide_by_255(tiny_model):
    with pytest.raises(ValueError, match=r"images must be float images in \[0, 1\].*divide by 255"):
        tiny_model.detect(IMAGES * 255)


def test_already_normalised_images_say_pass_the_raw_ones(tiny_model):
    normalised = (IMAGES - 0.5) / 0.2  # values in [-2.5, 2.5]
    with pytest.raises(ValueError, match="pass the unnormalised"):
        tiny_model.descriptors(normalised)


def test_small_overshoots_are_accepted(tiny_model):
    assert tiny_model.detect(IMAGES * 1.2 - 0.1).shape == (2, 5, 2)  # e.g. bicubic resizing or colour jitter


def test_backbone_normalize_checks_values_too(tiny_model):
    with pytest.raises(ValueError, match="divide by 255"):
        tiny_model.backbone.normalize(IMAGES * 255)
    with pytest.raises(ValueError, match="NaN"):
        tiny_model.backbone.normalize(torch.full((1, 3, 4, 4), float("nan")))


# -- dtypes -----------------------------------------------------------------------------------------------
def test_uint8_images_are_divided_by_255(tiny_model):
    as_uint8 = (IMAGES * 255).round().to(torch.uint8)
    torch.testing.assert_close(tiny_model.detect(as_uint8), tiny_model.detect(as_uint8.float() / 255))
    torch.testing.assert_close(
        tiny_model.backbone.normalize(as_uint8), tiny_model.backbone.normalize(as_uint8.float() / 255)
    )


def test_scores_take_the_same_inputs_as_detect(tiny_model):
    as_uint8 = (IMAGES * 255).round().to(torch.uint8)
    _, from_uint8 = tiny_model.detect(as_uint8, return_scores=True)
    _, from_float = tiny_model.detect(as_uint8.float() / 255, return_scores=True)
    torch.testing.assert_close(from_uint8, from_float)
    with pytest.raises(ValueError, match="NaN"):
        tiny_model.detect(torch.full_like(IMAGES, float("nan")), return_scores=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes_run_in_the_model_dtype(tiny_model, dtype):
    images = IMAGES.to(dtype)
    points = tiny_model.detect(images)
    assert points.dtype == torch.float32
    torch.testing.assert_close(points, tiny_model.detect(images.float()))
    torch.testing.assert_close(tiny_model.descriptors(images), tiny_model.descriptors(images.float()))


def test_integer_images_other_than_uint8_are_refused_by_name(tiny_model):
    with pytest.raises(TypeError, match=r"images must be floating point or uint8 .*got torch\.int64"):
        tiny_model.detect((IMAGES * 255).long())


def test_non_tensors_are_refused_by_name(tiny_model):
    with pytest.raises(TypeError, match="images must be a"):
        tiny_model.detect(IMAGES.numpy())


# -- shapes -----------------------------------------------------------------------------------------------
def test_one_image_without_batch_dimension_says_how_to_add_it(tiny_model):
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, H, W\).*images\[None\]"):
        tiny_model.detect(IMAGES[0])


def test_grayscale_images_are_refused_with_the_fix(tiny_model):
    with pytest.raises(ValueError, match=r"3 channels.*got 1.*expand"):
        tiny_model.detect(IMAGES[:, :1])


def test_rgba_images_are_refused_with_the_fix(tiny_model):
    with pytest.raises(ValueError, match=r"3 channels.*got 4.*alpha"):
        tiny_model.detect(torch.rand(1, 4, 32, 32))


def test_channels_last_images_are_refused_with_the_fix(tiny_model):
    with pytest.raises(ValueError, match=r"channels-last.*permute\(0, 3, 1, 2\)"):
        tiny_model.detect(IMAGES.permute(0, 2, 3, 1).contiguous()[:, :20, :20])


def test_a_bad_image_in_a_list_is_named(tiny_model):
    with pytest.raises(ValueError, match=r"images\[1\] must have shape \(3, H, W\)"):
        tiny_model.detect([IMAGES[0], IMAGES[1:]])
    with pytest.raises(ValueError, match="empty list"):
        tiny_model.detect([])


# -- sizes ------------------------------------------------------------------------------------------------
def test_any_size_is_resized_and_points_come_back_in_the_input_frame(tiny_model):
    """x_in = (x_model + 0.5) W / w_model - 0.5 (pixel centres at integers), here for a 48x64 (H x W) input."""
    big = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(4))
    in_model_frame = tiny_model.detect(_resize(big, (32, 32)))
    scale = torch.tensor([64 / 32, 48 / 32])
    torch.testing.assert_close(tiny_model.detect(big), (in_model_frame + 0.5) * scale - 0.5)
    torch.testing.assert_close(tiny_model.descriptors(big), tiny_model.descriptors(_resize(big, (32, 32))))


def test_a_list_of_differently_sized_images(tiny_model):
    images = [torch.rand(3, 32, 32), torch.rand(3, 50, 70), torch.rand(3, 100, 40)]
    points = tiny_model.detect(images)
    assert points.shape == (3, 5, 2)
    for image, ours in zip(images, points):
        torch.testing.assert_close(ours, tiny_model.detect(image[None])[0])
    assert tiny_model.descriptors(images).shape == (3, 16, 12, 12)


def test_the_same_face_at_64_128_256_and_1024_px_gives_the_same_points(faces_model, hopper_face):
    """Scaled back to 64 px, detections agree within 1 px whatever size the face is passed at."""
    at_64 = None
    for side in (64, 128, 256, 1024):
        face = _resize(hopper_face[None], (side, side)).clamp(0, 1)
        points = (faces_model.detect(face) + 0.5) * (64 / side) - 0.5
        if at_64 is None:
            at_64 = points
        distance = (points - at_64).norm(dim=-1)
        assert float(distance.max()) < 1.0, (side, distance)
    assert float(at_64.min()) > 0 and float(at_64.max()) < 63  # on the face, not at the border


def test_small_images_are_upscaled_with_a_warning(faces_model):
    with pytest.warns(UserWarning, match=r"images is 23x17 pixels, less than half the model's input size 64x64"):
        points = faces_model.detect(_smooth_images(1, 17, 23))
    assert points.shape == (1, 5, 2)
    assert bool((points[..., 0] >= -0.5).all() and (points[..., 0] <= 22.5).all())
    assert bool((points[..., 1] >= -0.5).all() and (points[..., 1] <= 16.5).all())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        faces_model.detect(_smooth_images(1, 40, 40))  # more than half: upscaled silently


# -- files ------------------------------------------------------------------------------------------------
def test_load_backbone_of_a_missing_directory_says_it_does_not_exist():
    with pytest.raises(FileNotFoundError, match=r"model directory /nonexistent/model_dir does not exist"):
        load_backbone("/nonexistent/model_dir")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backbone("./runs/model")


def test_load_backbone_of_a_weights_file_as_name_says_how_to_call_it(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(load_backbone("test_resnet").state_dict(), path)
    with pytest.raises(ValueError, match=r"is a weights file.*load_backbone\('resnet50'"):
        load_backbone(str(path))


@pytest.mark.parametrize("name", ["./no_such_model", "runs/exp1/model", "local/model", "~/no_such_model_dir_here"])
def test_from_pretrained_missing_local_path_is_not_called_a_hub_repo(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local").mkdir()  # 'local/model': the first part exists here, so it is a path
    with pytest.raises(FileNotFoundError) as error:
        LandmarkModel.from_pretrained(name)
    assert "no such local file or directory" in str(error.value)
    assert "Hugging Face" not in str(error.value)


def test_from_pretrained_missing_hub_repo_also_says_no_local_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"not in the local cache.*Nor is there a local directory"):
        LandmarkModel.from_pretrained("nobody-here/no-such-model")


@pytest.fixture
def saved(tmp_path, tiny_model):
    return tiny_model.save_pretrained(tmp_path / "bundle")


def test_truncated_safetensors_names_the_file(saved):
    path = saved / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=rf"{path}.*not a readable safetensors file"):
        LandmarkModel.from_pretrained(saved)
    with pytest.raises(ValueError, match=rf"{path}.*not a readable safetensors file"):
        load_backbone(str(saved))


def test_random_bytes_safetensors_names_the_file(saved):
    path = saved / "projector.safetensors"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=rf"{path}.*not a readable safetensors file"):
        LandmarkModel.from_pretrained(saved)


def test_pickle_renamed_safetensors_says_rename_it(saved, tiny_model):
    path = saved / "model.safetensors"
    torch.save(tiny_model.backbone.body.state_dict(), path)
    with pytest.raises(ValueError, match=rf"{path} is not a safetensors file: it is a torch.save pickle.*\.pth"):
        LandmarkModel.from_pretrained(saved)


def test_corrupt_config_json_names_the_file(saved):
    path = saved / "config.json"
    path.write_text(path.read_text()[:-20])
    with pytest.raises(ValueError, match=rf"{path} is not valid JSON"):
        LandmarkModel.from_pretrained(saved)
    with pytest.raises(ValueError, match=rf"{path} is not valid JSON"):
        load_backbone(str(saved))


def test_config_json_without_architecture_names_the_file(saved):
    path = saved / "config.json"
    path.write_text(json.dumps({"stages": ["conv5_x"]}))
    with pytest.raises(ValueError, match=rf"{path} has no 'architecture'"):
        LandmarkModel.from_pretrained(saved)


def test_truncated_jpeg_names_the_file(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    from contrastive_landmarks.data import load_image

    path = tmp_path / "face.jpg"
    Image.fromarray((torch.rand(64, 64, 3) * 255).byte().numpy()).save(path, quality=90)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"cannot read image {path}: image file is truncated"):
        load_image(path)
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(ValueError, match=r"cannot read image .*notes\.jpg"):
        load_image(tmp_path / "notes.jpg")


# -- content ----------------------------------------------------------------------------------------------
def test_blank_and_noise_images_get_a_warning_naming_them(tiny_model):
    batch = torch.stack([IMAGES[0], torch.rand(3, 32, 32), torch.full((3, 32, 32), 0.3), IMAGES[1]])
    with pytest.warns(UserWarning) as caught:
        points = tiny_model.detect(batch)
    assert points.shape[0] == 4  # points still come back, for every image
    (message,) = [str(w.message) for w in caught]
    assert message == (
        "images[1] is noise (neighbouring pixels uncorrelated), images[2] is blank (a single colour): "
        "their points are guesses, not landmarks"
    )
    with pytest.warns(UserWarning, match=r"images\[0\] is blank"):
        tiny_model.detect([torch.zeros(3, 20, 30, dtype=torch.uint8), (IMAGES[0] * 255).to(torch.uint8)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_model.detect(IMAGES)  # smooth images: no warning


def test_real_photos_and_frames_are_not_flagged(shared_data):
    from contrastive_landmarks.check import content_problem
    from contrastive_landmarks.data.base import load_image

    files = sorted(shared_data.glob("mtfl/images/AFLW/*.jpg"))[:40]
    files += sorted(shared_data.glob("dlc-reaching/labeled-data/*/*.png"))[:20]
    files += sorted(shared_data.glob("lp-mirror-mouse/labeled-data/**/*.png"))[:20]
    assert len(files) == 80, "the development data changed"
    flagged = {str(f): content_problem(load_image(f)) for f in files}
    assert not {f: why for f, why in flagged.items() if why}
    # a low-contrast noise image is noise, not blank; a faint but smooth gradient is neither
    assert content_problem(0.5 + 0.02 * torch.rand(3, 64, 64)).startswith("noise")
    assert content_problem(torch.linspace(0.4, 0.45, 64).expand(3, 64, 64)) is None
