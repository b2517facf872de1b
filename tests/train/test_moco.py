"""MoCo pretraining: augmentations against references, the MoCo maths, data sources, resume and export."""

from __future__ import annotations

import io
import json
import math
import random

import numpy as np
import pytest
import torch

pytest.importorskip("PIL")
pytest.importorskip("tqdm")
from PIL import Image

from contrastive_landmarks import load_backbone
from contrastive_landmarks.train import PretrainConfig, export_backbone, pretrain
from contrastive_landmarks.train.checkpoint import (
    get_rng_state,
    load_checkpoint,
    resume_checkpoint,
    save_checkpoint,
    set_rng_state,
    training_state,
)
from contrastive_landmarks.train.image_ops import (
    color_jitter,
    gaussian_blur,
    jpeg_compress,
    jpeg_noise,
    pca_lighting,
    random_resized_crop,
    resized_crop,
)
from contrastive_landmarks.train.images import ImageSource, PretrainImages
from contrastive_landmarks.train.moco import MoCo, moco_loss
from contrastive_landmarks.train.moco_views import MoCoAugment, get_preset


def _smooth_image(size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    rng = np.random.default_rng(1)
    image = np.stack([np.sin(6 * xx + 2 * yy), np.cos(5 * yy - xx), np.sin(9 * xx * yy)], -1) * 0.4 + 0.5
    image += rng.normal(0, 0.03, image.shape)
    return (image.clip(0, 1) * 255).astype(np.uint8)


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float()[None] / 255


def _gratings(folder, count: int = 8, size: int = 40):
    """Distinct oriented gratings (learnable instance discrimination under crops and jitter)."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    colours = np.array([[1, 0.3, 0.3], [0.3, 1, 0.3], [0.3, 0.3, 1], [1, 1, 0.3]])
    for i in range(count):
        angle, freq = math.pi * i / count, 0.15 + 0.1 * (i % 2)
        g = 0.5 + 0.5 * np.sin(freq * (xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / 1.5)
        Image.fromarray((g[..., None] * colours[i % 4] * 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
    return folder


# -- augmentations --------------------------------------------------------------------------------
@pytest.mark.parametrize("quality", [30, 75])
def test_jpeg_compress_matches_pillow(quality):
    array = _smooth_image()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    reference = _to_tensor(np.asarray(Image.open(buffer).convert("RGB")))
    original = _to_tensor(array)
    simulated = jpeg_compress(original, quality)
    compression_error = (reference - original).abs().mean()
    assert compression_error > 1 / 255  # the image is really degraded
    assert (simulated - reference).abs().mean() < 0.35 * compression_error
    # lower quality degrades more
    assert (jpeg_compress(original, 10) - original).abs().mean() > (simulated - original).abs().mean()


def test_jpeg_noise_shapes_range_and_determinism():
    images = torch.rand(5, 3, 24, 24)
    a = jpeg_noise(images, torch.Generator().manual_seed(3))
    b = jpeg_noise(images, torch.Generator().manual_seed(3), chunk=2)  # chunking does not change the result
    assert a.shape == images.shape and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert not torch.equal(a, images)


def test_resized_crop_against_slicing():
    images = torch.rand(3, 3, 20, 16)
    boxes = torch.tensor([[0, 0, 16, 20], [2, 3, 8, 10], [5, 1, 8, 10]], dtype=torch.float64)
    out_full = resized_crop(images[:1], boxes[:1], (20, 16))
    torch.testing.assert_close(out_full, images[:1], rtol=0, atol=1e-5)
    out = resized_crop(images[1:], boxes[1:], (10, 8))  # same size as the box: a pure crop
    torch.testing.assert_close(out[0], images[1, :, 3:13, 2:10], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[1], images[2, :, 1:11, 5:13], rtol=0, atol=1e-5)


def test_random_resized_crop_keeps_content_statistics():
    constant = torch.full((4, 3, 30, 30), 0.25)
    out = random_resized_crop(constant, 12, torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 12, 12)
    torch.testing.assert_close(out, torch.full_like(out, 0.25))
    with pytest.raises(ValueError, match="scale"):
        random_resized_crop(constant, 12, scale=(0.0, 1.0))


def test_color_jitter_against_naive_loop():
    images = torch.rand(6, 3, 8, 8)
    out = color_jitter(images, torch.Generator().manual_seed(5))
    # replay the generator's draws in the documented order: factors (3 x B), then order
    g = torch.Generator().manual_seed(5)
    factors = torch.stack([torch.rand(6, generator=g, dtype=torch.float64) * 0.8 + 0.6 for _ in range(3)], 1)
    order = torch.argsort(torch.rand(6, 3, generator=g), dim=1)
    weights = torch.tensor([0.2989, 0.587, 0.114]).view(3, 1, 1)
    for i in range(6):
        x = images[i].clone()
        for op in order[i].tolist():
            f = float(factors[i, op])
            gray = (x * weights).sum(0, keepdim=True)
            if op == 0:
                x = (x * f).clamp(0, 1)
            elif op == 1:
                x = (f * x + (1 - f) * gray.mean()).clamp(0, 1)
            else:
                x = (f * x + (1 - f) * gray).clamp(0, 1)
        torch.testing.assert_close(out[i], x, rtol=0, atol=1e-5)
    torch.testing.assert_close(color_jitter(images, brightness=0, contrast=0, saturation=0), images)


def test_pca_lighting_adds_a_colour_in_the_eigen_span():
    images = torch.rand(4, 3, 5, 5, dtype=torch.float64)
    out = pca_lighting(images, torch.Generator().manual_seed(0), std=0.1)
    shift = out - images
    assert torch.allclose(shift, shift[..., :1, :1].expand_as(shift))  # one colour per sample
    assert shift.abs().max() > 0 and shift.abs().max() < 0.5
    torch.testing.assert_close(pca_lighting(images, std=0.0), images)


def test_gaussian_blur():
    images = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(gaussian_blur(images, p=0.0), images)
    blurred = gaussian_blur(images, torch.Generator().manual_seed(0), sigma=(1.0, 1.5), p=1.0)
    assert blurred.std() < images.std()  # smoothing reduces the variance of noise
    torch.testing.assert_close(blurred.mean(), images.mean(), rtol=0, atol=0.02)


def test_augment_module_and_presets():
    faces = get_preset("faces")
    assert (faces.image_size, faces.border, faces.resize) == (96, 20, 136)
    assert get_preset("faces", 64).resize == 90 and get_preset("birds").border == 0
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("cats")
    augment = MoCoAugment.from_preset(get_preset("faces", 32))
    batch = torch.randint(0, 256, (4, 3, augment.resize, augment.resize), dtype=torch.uint8)
    a = augment(batch, torch.Generator().manual_seed(1))
    b = augment(batch, torch.Generator().manual_seed(1))
    c = augment(batch, torch.Generator().manual_seed(2))
    assert a.shape == (4, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        augment(torch.rand(3, 8, 8))


# -- MoCo maths ----------------------------------------------------------------------------------
def test_moco_loss_against_naive_reference():
    q = torch.nn.functional.normalize(torch.randn(5, 7, dtype=torch.float64), dim=1)
    k = torch.nn.functional.normalize(torch.randn(5, 7, dtype=torch.float64), dim=1)
    queue = torch.nn.functional.normalize(torch.randn(7, 11, dtype=torch.float64), dim=0)
    loss, accuracy = moco_loss(q, k, queue, 0.07)
    losses, wins = [], 0
    for i in range(5):
        logits = [float(q[i] @ k[i]) / 0.07] + [float(q[i] @ queue[:, j]) / 0.07 for j in range(11)]
        top = max(logits)
        losses.append(-(logits[0] - top - math.log(sum(math.exp(v - top) for v in logits))))
        wins += logits[0] == top
    assert loss.item() == pytest.approx(sum(losses) / 5, rel=1e-5)
    assert accuracy.item() == pytest.approx(wins / 5)
    with pytest.raises(ValueError, match="queue"):
        moco_loss(q, k, queue.T, 0.07)


def test_moco_momentum_update_and_queue():
    model = MoCo("test_resnet", dim=8, queue_size=6, momentum=0.9)
    for p in model.encoder_q.parameters():
        p.data.add_(1.0)
    before_k = [p.clone() for p in model.encoder_k.parameters()]
    q_params = list(model.encoder_q.parameters())
    model.momentum_update()
    for old, new, q in zip(before_k, model.encoder_k.parameters(), q_params):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * q)
    keys = torch.arange(32, dtype=torch.float32).view(4, 8)
    model.queue_ptr.fill_(4)
    model.enqueue(keys)
    assert int(model.queue_ptr) == 2  # wrapped around
    for row, slot in enumerate([4, 5, 0, 1]):
        torch.testing.assert_close(model.queue[:, slot], keys[row])
    assert all(not p.requires_grad for p in model.encoder_k.parameters())
    loss, _ = model(torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32))
    loss.backward()
    assert all(p.grad is not None for p in model.encoder_q.parameters())


# -- data and checkpoints -------------------------------------------------------------------------
def test_image_sources(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    Image.fromarray(np.zeros((218, 178, 3), np.uint8) + 7).save(tmp_path / "a" / "sub" / "celeb.jpg")
    Image.fromarray(np.full((10, 12, 3), 200, np.uint8)).save(tmp_path / "a" / "small.png")
    (tmp_path / "list.csv").write_text("image,x1\na/small.png,3\n")
    dataset = PretrainImages(
        [str(tmp_path / "a"), str(tmp_path / "list.csv") + ";crop=1,2,6,8"], 16, default_crop="auto"
    )
    assert len(dataset) == 3
    assert [p.name for p, *_ in dataset.items] == ["small.png", "celeb.jpg", "small.png"]
    sample = dataset[1]
    assert sample["image"].shape == (3, 16, 16) and sample["image"].dtype == torch.uint8
    assert ImageSource.parse("x;crop=celeba").crop == "celeba"
    with pytest.raises(FileNotFoundError, match="missing"):
        PretrainImages([str(tmp_path / "missing")], 16)
    with pytest.raises(ValueError, match="TOP,LEFT,HEIGHT,WIDTH"):
        ImageSource.parse("x;crop=1,2")
    with pytest.raises(ValueError, match="does not fit"):
        PretrainImages([str(tmp_path / "a" / "small.png").replace("small.png", "") + ";crop=0,0,50,50"], 8)[0]


def test_real_face_sources(shared_data):
    celeba = shared_data / "celeba-6k" / "images"
    mtfl = shared_data / "mtfl" / "train.csv"
    # the 2,350 misaligned rows left train.csv (2026-12-02); their images still serve as unlabelled faces
    aside = shared_data / "mtfl" / "train_misaligned.csv"
    dataset = PretrainImages([str(celeba), str(mtfl), str(aside)], 90, default_crop="auto")
    assert len(dataset) == 6000 + 7650 + 2350
    assert dataset.items[0][1] == "auto" and dataset.items[-1][0].parent.parent.name == "images"
    assert all("AFLW" not in str(p) for p, *_ in dataset.items[6000:])  # MTFL test faces never listed
    with Image.open(dataset.items[0][0]) as image:
        expected = np.asarray(image.convert("RGB").crop((0, 30, 178, 208)).resize((90, 90), Image.BILINEAR))
    assert torch.equal(dataset[0]["image"], torch.from_numpy(expected.copy()).permute(2, 0, 1))
    assert dataset[len(dataset) - 1]["image"].shape == (3, 90, 90)


def test_checkpoint_atomic_roundtrip_and_rng(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint({"a": torch.arange(3), "b": [1, "x", None]}, path)
    assert load_checkpoint(path)["b"] == [1, "x", None]
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left behind
    state = get_rng_state()
    save_checkpoint({"rng": state}, path)
    first = (random.random(), np.random.rand(), torch.rand(2))
    set_rng_state(load_checkpoint(path)["rng"])
    second = (random.random(), np.random.rand(), torch.rand(2))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])


def test_training_state_resumes_only_its_recipe_and_settings(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(training_state("demo/2", {"lr": 0.1, "seed": 0}, step=7), path)
    assert resume_checkpoint(path, {"lr": 0.1, "seed": 0}, formats=("demo/2",), kind="demo checkpoint")["step"] == 7
    with pytest.raises(ValueError, match=r"cannot resume .*ck\.pt: .*\(lr: 0\.1 -> 0\.2; seed: 0 -> 1\)"):
        resume_checkpoint(path, {"lr": 0.2, "seed": 1}, formats=("demo/2",), kind="demo checkpoint")
    with pytest.raises(ValueError, match=r"ck\.pt is not a other checkpoint of this library"):
        resume_checkpoint(path, {"lr": 0.1, "seed": 0}, formats=("other/1",), kind="other checkpoint")
    # an older layout: no tag (None among the formats), its settings derived from what it recorded instead
    save_checkpoint({"config": {"lr": 0.1, "seed": 0}, "step": 3}, path)
    saved = resume_checkpoint(
        path, {"lr": 0.1, "seed": 0}, formats=("demo/2", None), kind="demo checkpoint", recorded=lambda s: s["config"]
    )
    assert saved["step"] == 3


# -- training ------------------------------------------------------------------------------------------
def _config(data, out, **kwargs) -> PretrainConfig:
    base = dict(
        data=[str(data)],
        output_dir=str(out),
        preset="generic",
        image_size=32,
        arch="test_resnet",
        queue_size=16,
        batch_size=4,
        epochs=3,
        num_workers=0,
        log_every=1,
        progress=False,
        checkpoint_every=2,
        export=False,
        threads=1,
    )
    base.update(kwargs)
    return PretrainConfig(**base)


def test_resume_is_bit_identical(tmp_path):
    data = _gratings(tmp_path / "images", count=10)  # 2 steps per epoch at batch 4 (drop last)
    full = pretrain(_config(data, tmp_path / "full", max_steps=5))
    assert full["global_step"] == 5 and full["epoch"] == 2
    part = pretrain(_config(data, tmp_path / "part", max_steps=3))  # stops mid-epoch 1
    assert load_checkpoint(part["checkpoint"])["position"] == {"global_step": 3, "epoch": 1, "step_in_epoch": 1}
    with pytest.raises(FileExistsError, match="resume"):
        pretrain(_config(data, tmp_path / "part", max_steps=5))
    resumed = pretrain(_config(data, tmp_path / "part", max_steps=5, resume=True))
    assert resumed["global_step"] == 5
    a, b = load_checkpoint(full["checkpoint"]), load_checkpoint(resumed["checkpoint"])
    for key in ("encoder_q", "encoder_k"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resume"
    assert torch.equal(a["queue"], b["queue"]) and torch.equal(a["queue_ptr"], b["queue_ptr"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    # the logged losses of the resumed steps equal the uninterrupted run's
    assert [h["loss"] for h in full["history"][3:]] == [h["loss"] for h in resumed["history"]]
    records = [json.loads(line) for line in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="different settings"):
        pretrain(_config(data, tmp_path / "part", max_steps=6, resume=True, batch_size=2))


def test_loss_goes_down(tmp_path):
    data = _gratings(tmp_path / "images", count=8)
    result = pretrain(
        _config(
            data,
            tmp_path / "run",
            batch_size=8,
            queue_size=8,
            epochs=60,
            lr=0.1,
            temperature=0.2,
            key_momentum=0.9,
            min_scale=0.5,
            jpeg=False,
            schedule="constant",
            checkpoint_every=1000,
        )
    )
    losses = [h["loss"] for h in result["history"]]
    assert len(losses) == 60
    early, late = np.mean(losses[2:12]), np.mean(losses[-10:])
    assert late < 0.8 * early, (early, late)
    assert late < math.log(9)  # better than chance among 1 positive + 8 negatives


def test_export_backbone_reproduces_query_encoder(tmp_path):
    data = _gratings(tmp_path / "images", count=8)
    result = pretrain(_config(data, tmp_path / "run", epochs=1, preset="faces", image_size=32, export=True))
    exported = result["backbone"]
    assert exported is not None and (exported / "README.md").read_text().count("MoCo") >= 2
    backbone = load_backbone(str(exported))
    config = json.loads((exported / "config.json").read_text())
    assert config["input_size"] == [32, 32] and config["mean"] == pytest.approx([0.5084, 0.4224, 0.3769])
    saved = load_checkpoint(result["checkpoint"])
    model = MoCo("test_resnet", dim=128, queue_size=16)
    model.encoder_q.load_state_dict(saved["encoder_q"])
    query_backbone = model.encoder_q.backbone.eval()
    query_backbone.stage_indices = backbone.stage_indices  # same network, all default stages
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for ours, theirs in zip(backbone(images), query_backbone(images)):
            assert torch.equal(ours, theirs)
    again = export_backbone(result["checkpoint"], tmp_path / "copy", {"license": "test"})
    assert "| license | test |" in (again / "README.md").read_text()


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="data"):
        pretrain(PretrainConfig(output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="schedule"):
        PretrainConfig(data=["x"], schedule="linear").validate()
    assert "queue" in PretrainConfig.field_help()["queue_size"]
    with pytest.raises(ValueError, match="fewer than one batch"):
        pretrain(_config(_gratings(tmp_path / "few", count=2), tmp_path / "run"))


def test_channels_last_training_matches_contiguous(tmp_path):
    data = _gratings(tmp_path / "images", count=8)
    runs = {}
    for memory_format in ("contiguous", "channels-last"):
        runs[memory_format] = pretrain(
            _config(
                data,
                tmp_path / memory_format,
                batch_size=8,
                queue_size=8,
                epochs=3,
                jpeg=False,
                checkpoint_every=1000,
                memory_format=memory_format,
            )
        )
    a = load_checkpoint(runs["contiguous"]["checkpoint"])["encoder_q"]
    b = load_checkpoint(runs["channels-last"]["checkpoint"])["encoder_q"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key].contiguous(), b[key].contiguous(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="memory_format"):
        _config(data, tmp_path / "bad", memory_format="nhwc").validate()


def test_equivariance_term_against_a_naive_formula():
    """MoCo(equivariance=λ): loss = InfoNCE + λ Eq. 3 between each query view's cells and a warp of it,
    on per-stage L2-normalised conv3_x + conv4_x maps; checked against a per-location loop."""
    import copy

    import torch.nn.functional as F

    from contrastive_landmarks.tps import TPSParams, make_pair

    torch.manual_seed(0)
    model = MoCo("test_resnet", dim=8, queue_size=6, equivariance=0.5)
    reference = copy.deepcopy(model)  # the state before forward() moves the key encoder and the queue
    im_q, im_k = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    pair = make_pair(
        im_q, params=TPSParams(im1_multiplier=0, im1_multiplier_aff=0), generator=torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(pair.image2, im_q, atol=1e-4, rtol=0)  # the first warp is the identity
    # the grid gives, for each pixel of the warped view, where it comes from in im_q
    resampled = F.grid_sample(im_q, pair.grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    torch.testing.assert_close(resampled, pair.image1, atol=1e-4, rtol=0)
    loss, _ = model(im_q, im_k, warped=(pair.image1, pair.grid))

    body = reference.encoder_q.backbone.body
    stages = []
    x = body.maxpool(body.act1(body.bn1(body.conv1(torch.cat([im_q, pair.image1])))))
    for layer in (body.layer1, body.layer2, body.layer3, body.layer4):
        x = layer(x)
        stages.append(x)
    query = F.normalize(reference.encoder_q.head.fc(stages[3].mean((2, 3))), dim=1)[:2]
    conv3, conv4 = stages[1], stages[2]
    h, w = conv3.shape[-2:]
    conv4 = F.interpolate(conv4 / conv4.norm(dim=1, keepdim=True), size=(h, w), mode="bilinear")
    desc = torch.cat([conv3 / conv3.norm(dim=1, keepdim=True), conv4], 1)
    # g at the cell centres of the warped view, in its pixels; cells of the source view at their centres
    step = 64 / h
    centres = (torch.arange(h) + 0.5) * step - 0.5
    cells = torch.stack(torch.meshgrid(centres, centres, indexing="xy"), -1).reshape(-1, 2)  # (h*w, 2) x, y
    g = F.interpolate(pair.grid.permute(0, 3, 1, 2), size=(h, w), mode="bilinear").permute(0, 2, 3, 1)
    g = ((g + 1) * 64 - 1) / 2  # normalised (align_corners=False) -> pixels
    total = 0.0
    for b in range(2):
        source, warped = desc[b].reshape(desc.shape[1], -1), desc[2 + b].reshape(desc.shape[1], -1)
        for u in range(h * w):
            cos = (warped[:, u] @ source) / (warped[:, u].norm() * source.norm(dim=0))
            p = torch.softmax(cos * 7, 0)
            total += (p * (g[b].reshape(-1, 2)[u] - cells).norm(dim=1).sqrt()).sum()
    equivariance = total / (2 * h * w)
    with torch.no_grad():
        reference.momentum_update()
        key = reference.encoder_k(im_k)
    infonce, _ = moco_loss(query, key, reference.queue, reference.temperature)
    torch.testing.assert_close(model.terms["equivariance"], equivariance.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.terms["moco"], infonce.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss.detach(), (infonce + 0.5 * equivariance).detach(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="warped views are needed"):
        model(im_q, im_k)
    with pytest.raises(ValueError, match="warped views are needed"):
        MoCo("test_resnet", dim=8, queue_size=6)(im_q, im_k, warped=(pair.image1, pair.grid))


def test_video_only_runs_get_the_cpu_sized_recipe_and_images_the_authors():
    from contrastive_landmarks.train.pretrain_config import RECIPE_DEFAULTS

    video = PretrainConfig(video=["a.mp4"])
    video.validate()
    assert (video.arch, video.batch_size, video.queue_size, video.epochs) == ("resnet18", 64, 512, 10)
    faces = PretrainConfig(data=["faces/"])
    faces.validate()
    assert (faces.arch, faces.batch_size, faces.queue_size, faces.epochs) == ("resnet50", 256, 4096, 800)
    chosen = PretrainConfig(video=["a.mp4"], arch="resnet50", epochs=3)
    chosen.validate()  # what the user sets is kept
    assert (chosen.arch, chosen.epochs, chosen.batch_size) == ("resnet50", 3, RECIPE_DEFAULTS["animals"]["batch_size"])
