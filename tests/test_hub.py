"""Model directories, the registry, offline behaviour and the torch.hub entry points."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch

from contrastive_landmarks import Hypercolumn, PretrainedNotAvailableError, load_backbone, save_pretrained
from contrastive_landmarks.hub import get_model_info, list_models, read_config, resolve_weights

ROOT = Path(__file__).resolve().parents[1]


def _trained_backbone():
    torch.manual_seed(3)
    backbone = load_backbone("test_resnet", stages=("conv2_x", "conv4_x"))
    for name, tensor in backbone.body.state_dict().items():
        if name.endswith("running_var"):
            tensor.copy_(torch.rand_like(tensor) + 0.5)
    return backbone.with_preprocessing(mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))


def test_save_and_load_round_trip(tmp_path):
    backbone = _trained_backbone()
    save_pretrained(
        tmp_path / "model", backbone.body.state_dict(), backbone.config, card="# test model\n\nAFLW_M: 9.99 %IOD\n"
    )
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = load_backbone(str(tmp_path / "model"))
    assert loaded.arch == "test_resnet" and loaded.stages == ("conv2_x", "conv4_x")
    assert loaded.mean == (0.5, 0.4, 0.3)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(backbone(images), loaded(images)):
            torch.testing.assert_close(a, b)
    assert "9.99" in (tmp_path / "model" / "README.md").read_text()


def test_half_precision_directory_loads_into_float32(tmp_path):
    backbone = _trained_backbone()
    save_pretrained(tmp_path, backbone.body.state_dict(), backbone.config, dtype=torch.float16)
    loaded = load_backbone("test_resnet", tmp_path)
    weight = loaded.body.conv1[0].weight
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight, backbone.body.conv1[0].weight.half().float())


def test_directory_of_other_architecture_is_refused(tmp_path):
    backbone = _trained_backbone()
    save_pretrained(tmp_path, backbone.body.state_dict(), backbone.config)
    with pytest.raises(ValueError, match="holds a 'test_resnet' backbone but 'resnet18' was asked for"):
        load_backbone("resnet18", tmp_path)


def test_damaged_directory_fails_strictly(tmp_path):
    backbone = _trained_backbone()
    state = backbone.body.state_dict()
    state.pop("layer2.0.conv1.weight")
    save_pretrained(tmp_path, state, backbone.config)
    with pytest.raises(ValueError, match=r"missing keys: layer2\.0\.conv1\.weight"):
        load_backbone(str(tmp_path))


def test_extra_files_are_safetensors_names_beside_the_weights(tmp_path):
    backbone = _trained_backbone()
    for name in ("model.safetensors", "head.pt", "sub/head.safetensors"):
        with pytest.raises(ValueError, match=r"extra_files are \.safetensors file names"):
            save_pretrained(tmp_path, backbone.body.state_dict(), backbone.config, extra_files={name: {}})


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json is missing"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "test_resnet"}))
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors is missing"):
        resolve_weights(tmp_path)


def test_registry_entries_are_complete():
    assert list_models()
    for name in list_models():
        info = get_model_info(name)
        assert info.arch.startswith("resnet") and "/" in info.repo_id and info.training_data
        assert len(info.mean) == 3 and len(info.std) == 3


def test_unpublished_name_fails_clearly():
    with pytest.raises(PretrainedNotAvailableError, match="not published yet"):
        load_backbone("resnet50-celeba")


def test_offline_hub_miss_is_fast_and_clear():
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="not in the local cache"):
        load_backbone("resnet18", "nobody-here/no-such-model")
    assert time.perf_counter() - start < 5.0


def test_torch_hub_load_local():
    model = torch.hub.load(str(ROOT), "resnet18_celeba", source="local", pretrained=False, size=24)
    assert isinstance(model, Hypercolumn) and model.channels == 960
    assert model.backbone.mean == get_model_info("resnet18-celeba").mean
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 96)).shape == (1, 960, 24, 24)
    with pytest.raises(PretrainedNotAvailableError):
        torch.hub.load(str(ROOT), "resnet50_celeba", source="local", pretrained=True)


def test_hubconf_entry_points_are_documented():
    spec = importlib.util.spec_from_file_location("hubconf_under_test", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = [n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")]
    assert entries
    for name in entries:
        assert len((getattr(hubconf, name).__doc__ or "").strip()) > 40, name
    for package in hubconf.dependencies:
        assert importlib.util.find_spec(package) is not None, package


def test_builtin_face_model_loads_offline_everywhere():
    from contrastive_landmarks import LandmarkModel
    from contrastive_landmarks.hub import builtin_dir

    directory = builtin_dir("resnet18-faces")
    assert directory is not None, "the built-in face model is missing from contrastive_landmarks/weights"
    info = get_model_info("resnet18-faces")
    model = LandmarkModel.from_pretrained("resnet18-faces")
    assert model.backbone.arch == "resnet18" and model.backbone.input_size == info.input_size
    assert model.landmark_names == ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
    images = torch.rand(2, 3, *info.input_size)
    points = model.detect(images)
    assert points.shape == (2, 5, 2) and bool(torch.isfinite(points).all())
    assert model.descriptors(images).shape[:2] == (2, 256)
    # the same weights through load_backbone and torch.hub, with no network
    backbone = load_backbone("resnet18-faces")
    for a, b in zip(backbone.state_dict().values(), model.backbone.state_dict().values()):
        torch.testing.assert_close(a, b)
    hub_model = torch.hub.load(str(ROOT), "resnet18_faces", source="local")
    torch.testing.assert_close(hub_model.detect(images), points)
    fresh = torch.hub.load(str(ROOT), "resnet18_faces", source="local", pretrained=False)
    assert fresh.config == model.config
    assert (directory / "README.md").read_text().count("|") > 20  # a model card with a table


def test_builtin_face_model_normalises_with_its_own_statistics(faces_model):
    """config.json's CelebA statistics are what normalize() computes with (it used ImageNet's after loading)."""
    info = get_model_info("resnet18-faces")
    images = torch.rand(1, 3, 8, 8)
    mean, std = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)
    torch.testing.assert_close(faces_model.backbone.normalize(images), (images - mean) / std)
    assert faces_model.backbone.preprocessing.input_size == faces_model.input_size == (64, 64)
    torch.testing.assert_close(load_backbone("resnet18-faces").normalize(images), (images - mean) / std)


def test_torch_hub_random_init_records_the_registry_preprocessing():
    model = torch.hub.load(str(ROOT), "resnet18_celeba", source="local", pretrained=False, size=24)
    info = get_model_info("resnet18-celeba")
    assert model.backbone.preprocessing.mean == info.mean and model.backbone.std == info.std
    assert model.backbone.input_size == info.input_size
    images = torch.rand(1, 3, 8, 8)
    expected = (images - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(info.std).view(1, 3, 1, 1)
    torch.testing.assert_close(model.backbone.normalize(images), expected)


def test_directory_round_trip_normalises_with_the_saved_statistics(tmp_path):
    backbone = _trained_backbone()
    loaded = load_backbone(backbone.save_pretrained(tmp_path / "model"))
    images = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(loaded.normalize(images), backbone.normalize(images))
    assert loaded.preprocessing == backbone.preprocessing


# -- issue 31: what push publishes ---------------------------------------------------------------------------
def test_training_state_files_are_the_checkpoints_beside_a_model(tmp_path):
    from contrastive_landmarks.hub import training_state_files

    backbone = _trained_backbone()
    folder = save_pretrained(tmp_path / "model", backbone.body.state_dict(), backbone.config)
    (folder / "finetune_checkpoint.pt").write_bytes(b"\0")
    (folder / "fit_projector_checkpoint.pt").write_bytes(b"\0")
    (folder / "tensorboard").mkdir()
    (folder / "tensorboard" / "events.out").write_bytes(b"\0")
    (folder / "old").mkdir()
    (folder / "old" / "epoch3.ckpt").write_bytes(b"\0")
    (folder / "footage" / "backbone").mkdir(parents=True)  # finetune's footage step: its run, not the model
    (folder / "footage" / "backbone" / "model.safetensors").write_bytes(b"\0")
    found = [str(path.relative_to(folder)) for path in training_state_files(folder)]
    assert found == [
        "finetune_checkpoint.pt",
        "fit_projector_checkpoint.pt",
        "footage/backbone/model.safetensors",
        "old/epoch3.ckpt",
    ]
    assert training_state_files(tmp_path / "model") and not training_state_files(tmp_path / "nowhere")
