"""Feature caching: every image through the backbone once, identical maps from memory, disk or recompute."""

from __future__ import annotations

import pytest
import torch

from contrastive_landmarks import Hypercolumn, load_backbone
from contrastive_landmarks.train.feature_cache import CachedFeatures, FeatureCache


class Images:
    def __init__(self, n: int, size: int = 32):
        self.images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
        self.reads = 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        self.reads += 1
        return {"image": self.images[index], "index": index}


def direct(model, images):
    with torch.no_grad():
        return model.stage_maps(model.backbone.normalize(images))


def test_cache_spills_to_disk_and_computes_each_image_once(tmp_path):
    model = Hypercolumn(load_backbone("test_resnet")).eval()
    data = Images(10)
    per_image = sum(m[0].numel() * 4 for m in direct(model, data.images[:1]))
    cache = FeatureCache(memory_bytes=3 * per_image, cache_dir=tmp_path, tag="test_resnet-32px")
    features = CachedFeatures(model, data, cache=cache, batch_size=4)
    features.precompute()
    assert data.reads == 10
    assert cache.memory_used <= 3 * per_image and cache.spilled == 7
    assert len(list((tmp_path / "test_resnet-32px").glob("*.safetensors"))) == 7
    order = [9, 0, 4, 4, 7]
    for _ in range(3):  # epochs
        maps = features.get(order)
        reference = direct(model, data.images[order])
        for got, want in zip(maps, reference):
            torch.testing.assert_close(got, want)
    assert data.reads == 10  # never recomputed
    # a second cache on the same directory and tag reuses the files
    again = CachedFeatures(model, data, cache=FeatureCache(0, tmp_path, tag="test_resnet-32px"))
    assert 1 in again.cache and 2 in again.cache  # spilled first (least recently used)
    for got, want in zip(again.get([1, 2]), direct(model, data.images[[1, 2]])):
        torch.testing.assert_close(got, want)
    assert data.reads == 10


def test_cache_without_disk_recomputes_what_it_dropped_and_half_precision():
    model = Hypercolumn(load_backbone("test_resnet")).eval()
    data = Images(6)
    features = CachedFeatures(model, data, cache=FeatureCache(memory_bytes=1), batch_size=2)
    maps = features.get([5, 1])
    for got, want in zip(maps, direct(model, data.images[[5, 1]])):
        torch.testing.assert_close(got, want)
    half = CachedFeatures(model, data, cache=FeatureCache(dtype=torch.float16))
    for got, want in zip(half.get([0, 3]), direct(model, data.images[[0, 3]])):
        assert got.dtype == torch.float16
        torch.testing.assert_close(got.float(), want, atol=2e-3, rtol=2e-3)


def test_persisted_cache_is_reused_by_a_new_run(tmp_path):
    model = Hypercolumn(load_backbone("test_resnet")).eval()
    data = Images(4)
    CachedFeatures(model, data, cache=FeatureCache(cache_dir=tmp_path, tag="t", persist=True)).precompute()
    assert data.reads == 4 and len(list((tmp_path / "t").glob("*.safetensors"))) == 4
    later = CachedFeatures(model, data, cache=FeatureCache(cache_dir=tmp_path, tag="t", persist=True))
    later.precompute()
    for got, want in zip(later.get([3, 0]), direct(model, data.images[[3, 0]])):
        torch.testing.assert_close(got, want)
    assert data.reads == 4


def test_lru_order():
    cache = FeatureCache(memory_bytes=3 * 16)
    for key in "abc":
        cache.put(key, [torch.zeros(4)])
    cache.get("a")
    cache.put("d", [torch.zeros(4)])  # evicts b, the least recently used
    assert "b" not in cache and all(k in cache for k in "acd")
    assert cache.get("b") is None and cache.misses == 1


def _old_get(per_image: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """The original batch assembly: NCHW-contiguous per-image maps, stacked, then a channels-last copy."""
    stages = len(per_image[0])
    return [
        torch.stack([maps[s].contiguous() for maps in per_image]).contiguous(memory_format=torch.channels_last)
        for s in range(stages)
    ]


def test_get_equals_the_original_stacking_channels_last_without_views():
    model = Hypercolumn(load_backbone("test_resnet")).eval()
    data = Images(6)
    features = CachedFeatures(model, data, batch_size=4)
    order = [5, 0, 3, 3, 1]
    maps = features.get(order)  # computes 5, 0, 3, 1 as one batch
    unique = [5, 0, 3, 1]
    reference = direct(model, data.images[unique])  # the same batch, so the same floats
    old = _old_get([[m[unique.index(i)] for m in reference] for i in order])
    for got, want in zip(maps, old):
        assert torch.equal(got, want) and got.is_contiguous(memory_format=torch.channels_last)
    # stored entries are standalone copies, laid out (h, w, C), not views into the backbone's batch
    for stored in features.cache.get(0):
        assert stored.untyped_storage().nbytes() == stored.numel() * stored.element_size()
        assert stored.permute(1, 2, 0).is_contiguous()
    # an extractor returning NCHW-contiguous maps gives the same batches
    nchw = CachedFeatures(lambda x: [m.contiguous() for m in direct(model, x)], data)
    for got, want in zip(nchw.get(order), old):
        assert torch.equal(got, want) and got.is_contiguous(memory_format=torch.channels_last)


def test_half_storage_and_disk_round_trip_keep_values(tmp_path):
    model = Hypercolumn(load_backbone("test_resnet")).eval()
    data = Images(3)
    reference = direct(model, data.images[[2, 0]])
    cache = FeatureCache(cache_dir=tmp_path, tag="t", dtype=torch.float16, persist=True)
    half = CachedFeatures(model, data, cache=cache).get([2, 0])
    from_disk = CachedFeatures(model, data, cache=FeatureCache(0, tmp_path, tag="t")).get([2, 0])
    for got, disk, want in zip(half, from_disk, reference):
        assert got.dtype == torch.float16 and torch.equal(got, want.half()) and torch.equal(disk, got)


def test_a_backbone_is_read_as_its_hypercolumn_and_other_modules_are_refused():
    model = Hypercolumn(load_backbone("test_resnet")).eval()
    data = Images(3)
    for got, want in zip(CachedFeatures(model.backbone, data).get([1, 2]), direct(model, data.images[[1, 2]])):
        assert torch.equal(got, want)
    with pytest.raises(TypeError, match="Hypercolumn"):
        CachedFeatures(torch.nn.Linear(2, 2), data)
