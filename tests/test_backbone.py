"""load_backbone: architectures, stages, every checkpoint layout, strict loading, bad input."""

from __future__ import annotations

import argparse

import pytest
import timm
import torch

from contrastive_landmarks import CheckpointMismatchError, load_backbone
from contrastive_landmarks.backbone import Backbone
from contrastive_landmarks.state_dicts import convert_state_dict, guess_arch, read_state_dict


def _timm_reference(arch: str, state_dict: dict, images: torch.Tensor) -> list[torch.Tensor]:
    """Stage maps from timm's own features_only model, loaded with the same weights."""
    model = timm.create_model(arch, features_only=True, out_indices=(1, 2, 3, 4), zero_init_last=False)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()(images)


@pytest.fixture(scope="module")
def trained_like_state() -> dict:
    """A test_resnet state dict with non-trivial BN statistics, as if trained."""
    torch.manual_seed(1)
    model = timm.create_model("test_resnet", num_classes=10)
    for name, tensor in model.state_dict().items():
        if name.endswith(("running_mean", "running_var")):
            tensor.copy_(torch.rand_like(tensor) + 0.5)
    return model.state_dict()


def test_stage_shapes_and_channels():
    backbone = load_backbone("test_resnet", stages=("conv1", "conv2_x", "conv5_x"))
    maps = backbone(torch.randn(2, 3, 64, 64))
    assert [tuple(m.shape) for m in maps] == [(2, 32, 32, 32), (2, 32, 16, 16), (2, 96, 2, 2)]
    assert backbone.channels == (32, 32, 96)
    assert backbone.reductions == (2, 4, 32)
    assert not backbone.training


@pytest.mark.parametrize("arch, channels", [("resnet18", (512, 256, 128, 64)), ("resnet50", (2048, 1024, 512, 256))])
def test_paper_architectures_channels(arch, channels):
    with torch.device("meta"):
        backbone = Backbone(arch)
    assert backbone.channels == channels


@pytest.mark.parametrize("size", [100, 70, 33])
def test_any_input_size(size):
    """No multiple-of-32 requirement (the authors' code crashes at 100 px)."""
    maps = load_backbone("test_resnet")(torch.randn(1, 3, size, size))
    assert maps[0].shape[-1] == -(-size // 32)


def test_stage_maps_equal_timm_features(trained_like_state):
    images = torch.randn(2, 3, 64, 64)
    backbone = load_backbone("test_resnet", trained_like_state, stages=("conv2_x", "conv3_x", "conv4_x", "conv5_x"))
    reference = _timm_reference(
        "test_resnet", {k: v for k, v in trained_like_state.items() if not k.startswith("fc.")}, images
    )
    for ours, theirs in zip(backbone(images), reference):
        torch.testing.assert_close(ours, theirs)


def _check_loaded(backbone, state):
    for name, value in backbone.body.state_dict().items():
        torch.testing.assert_close(value, state[name])


def test_plain_timm_state_dict_file(tmp_path, trained_like_state):
    path = tmp_path / "plain.pth"
    torch.save(trained_like_state, path)
    backbone = load_backbone("test_resnet", path)
    _check_loaded(backbone, trained_like_state)
    assert backbone.load_report.dropped_heads == ["fc.weight", "fc.bias"]


def test_safetensors_file(tmp_path, trained_like_state):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in trained_like_state.items()}, str(path))
    _check_loaded(load_backbone("test_resnet", path), trained_like_state)


def test_moco_checkpoint(tmp_path, trained_like_state):
    """Official MoCo layout: query encoder under module.encoder_q., key encoder and queue beside it."""
    state = {f"module.encoder_q.{k}": v for k, v in trained_like_state.items() if not k.startswith("fc.")}
    state["module.encoder_q.fc.0.weight"] = torch.randn(96, 96)  # MoCo v2 MLP head
    state["module.encoder_q.fc.2.weight"] = torch.randn(128, 96)
    state.update({f"module.encoder_k.{k}": torch.zeros_like(v) for k, v in trained_like_state.items()})
    state["module.queue"] = torch.randn(128, 64)
    path = tmp_path / "moco.pth.tar"
    torch.save({"epoch": 200, "arch": "test_resnet", "state_dict": state, "optimizer": {}}, path)
    backbone = load_backbone("test_resnet", path)
    _check_loaded(backbone, trained_like_state)
    assert backbone.load_report.prefix == "module.encoder_q."
    assert set(backbone.load_report.dropped_heads) == {"fc.0.weight", "fc.2.weight"}
    assert "module.queue" in backbone.load_report.dropped_other


def test_authors_checkpoint_with_namespace(tmp_path, trained_like_state):
    """The paper authors' files: {'model': encoder.module.* keys, 'opt': argparse.Namespace, ...}."""
    opt = argparse.Namespace(model="resnet50", nce_k=4096, nce_t=0.07, learning_rate=0.03)
    model = {f"encoder.module.{k}": v for k, v in trained_like_state.items()}
    ema = {f"encoder.module.{k}": torch.zeros_like(v) for k, v in trained_like_state.items()}
    path = tmp_path / "ckpt_epoch_800.pth"
    torch.save({"opt": opt, "model": model, "model_ema": ema, "epoch": 800}, path)
    backbone = load_backbone("test_resnet", path)
    _check_loaded(backbone, trained_like_state)
    assert backbone.load_report.prefix == "encoder.module."


def test_unsafe_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.pth"
    torch.save({"model": {"conv1.weight": torch.zeros(1)}, "payload": Evil()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        read_state_dict(path)


def test_prefix_is_removed_not_stripped():
    """str.lstrip('backbone.') would eat 'b' of 'bn1'; removeprefix must not."""
    clean, report = convert_state_dict({"backbone.conv1.weight": torch.zeros(1), "backbone.bn1.weight": torch.ones(1)})
    assert set(clean) == {"conv1.weight", "bn1.weight"}
    assert report.prefix == "backbone."


def test_wrong_depth_names_keys_and_architecture(tmp_path):
    state = timm.create_model("resnet18", num_classes=0).state_dict()
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError) as error:
        load_backbone("resnet34", path)
    message = str(error.value)
    assert "'resnet34'" in message and "looks like a resnet18" in message
    assert "missing keys" in message and "layer1.2.conv1.weight" in message


def test_shape_mismatch_is_reported(trained_like_state):
    state = dict(trained_like_state)
    state["conv1.0.weight"] = torch.zeros(1, 1, 3, 3)
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatches: conv1\.0\.weight"):
        load_backbone("test_resnet", state)


def test_unexpected_keys_are_reported(trained_like_state):
    state = {**trained_like_state, "layer5.0.conv1.weight": torch.zeros(1)}
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys: layer5\.0\.conv1\.weight"):
        load_backbone("test_resnet", state)


def test_guess_arch():
    assert guess_arch(timm.create_model("resnet50", num_classes=0).state_dict()) == "resnet50"
    assert guess_arch(timm.create_model("resnet34", num_classes=0).state_dict()) == "resnet34"


@pytest.mark.parametrize(
    "images, error, pattern",
    [
        (torch.randn(3, 32, 32), ValueError, r"\(B, 3, H, W\)"),
        (torch.randn(1, 1, 32, 32), ValueError, "3 channels"),
        (torch.randn(1, 4, 32, 32), ValueError, "3 channels"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError, "floating point"),
    ],
)
def test_bad_images(images, error, pattern):
    with pytest.raises(error, match=pattern):
        load_backbone("test_resnet")(images)


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'"):
        load_backbone("vgg16")
    with pytest.raises(ValueError, match="unknown stage"):
        load_backbone("test_resnet", stages=("conv6_x",))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_backbone("test_resnet", "no/such/file.pth")


# -- a backbone loads its own state dict (and those of the modules that hold one) --------------------------
@pytest.mark.parametrize("arch", ["test_resnet", "resnet18"])
def test_own_state_dict_round_trip(tmp_path, arch):
    torch.manual_seed(0)
    backbone = load_backbone(arch)
    for name, tensor in backbone.state_dict().items():
        if name.endswith("running_var"):
            tensor.copy_(torch.rand_like(tensor) + 0.5)
    path = tmp_path / "backbone.pth"
    torch.save(backbone.state_dict(), path)
    loaded = load_backbone(arch, path)
    assert loaded.load_report.prefix == "body."
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(backbone(images), loaded(images)):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("prefix", ["hypercolumn.backbone.", "backbone.", "encoder_q.backbone.", "module."])
def test_state_dicts_of_modules_holding_a_backbone(trained_like_state, prefix):
    """LandmarkModel, Hypercolumn, this library's MoCo and a DDP-wrapped Backbone."""
    state = {f"{prefix}body.{k}": v for k, v in trained_like_state.items() if not k.startswith("fc.")}
    backbone = load_backbone("test_resnet", state)
    _check_loaded(backbone, trained_like_state)
    assert backbone.load_report.prefix == f"{prefix}body."


def test_own_state_dict_mismatch_is_still_strict_and_named(tmp_path):
    state = load_backbone("test_resnet").state_dict()
    state.pop("body.layer2.0.conv1.weight")
    with pytest.raises(CheckpointMismatchError, match=r"missing keys: layer2\.0\.conv1\.weight"):
        load_backbone("test_resnet", state)
    with pytest.raises(CheckpointMismatchError, match="looks like a resnet18"):
        load_backbone("resnet34", load_backbone("resnet18").state_dict())


def test_save_pretrained_round_trip_gives_the_same_outputs(tmp_path, trained_like_state):
    backbone = load_backbone("test_resnet", trained_like_state, stages=("conv3_x", "conv2_x"))
    backbone.with_preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), input_size=(40, 40))
    loaded = load_backbone(backbone.save_pretrained(tmp_path / "model"))
    assert loaded.preprocessing == backbone.preprocessing and loaded.stages == ("conv3_x", "conv2_x")
    images = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        for a, b in zip(backbone(backbone.normalize(images)), loaded(loaded.normalize(images))):
            torch.testing.assert_close(a, b)


def test_preprocessing_is_validated():
    from contrastive_landmarks.preprocessing import Preprocessing

    assert Preprocessing([0.5] * 3, [0.25] * 3, [64, 48]) == Preprocessing((0.5,) * 3, (0.25,) * 3, (64, 48))
    with pytest.raises(ValueError, match="3 numbers"):
        Preprocessing((0.5, 0.5), (0.2, 0.2, 0.2))
    with pytest.raises(ValueError, match="std must be positive"):
        Preprocessing((0.5,) * 3, (0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="input_size"):
        Preprocessing(input_size=(0, 64))
    with pytest.raises(ValueError, match="not both"):
        Backbone("test_resnet", mean=(0.5,) * 3, preprocessing=Preprocessing())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_forward_casts_other_float_dtypes(dtype):
    backbone = load_backbone("test_resnet")
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = backbone(images.to(dtype).float())
        for a, b in zip(backbone(images.to(dtype)), expected):
            assert a.dtype == torch.float32
            torch.testing.assert_close(a, b)
