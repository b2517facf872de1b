"""Per-image stage maps kept under a byte budget, spilling to disk: for unlabelled sets too large for memory
(projector fitting, matching).

With a frozen backbone the stage maps of an image never change, so a regressor trained for many
epochs, or a protocol that uses an image in several pairs, needs the backbone once per image.
:class:`FeatureCache` keeps per-image stage maps in memory up to a byte budget (least recently used
first out) and, given a ``cache_dir``, spills what does not fit to ``safetensors`` files there
(otherwise it drops them and they are recomputed). :class:`CachedFeatures` ties a cache to a model
and a dataset: ``features.get(indices)`` returns the batch's stage maps, running the backbone only
on images it has not seen (through :meth:`Hypercolumn.image_stage_maps
<contrastive_landmarks.Hypercolumn.image_stage_maps>`, the library's one ``images -> stage maps`` function).

Stage maps are stored without the hypercolumn upsampling (the small maps: a ResNet-18 at 96² holds
69 k floats per image, against 885 k for its 960-channel 48² hypercolumn), so the cache is ~13×
smaller than caching hypercolumns, and the upsampling stays cheap and exact. In memory each map is
kept channels-last (the backbone's layout, and the layout :meth:`CachedFeatures.get` returns), so a batch
is one stack of contiguous blocks; spill files hold plain contiguous ``(C_s, h_s, w_s)`` tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..backbone import Backbone
from ..hypercolumn import Hypercolumn

__all__ = ["CachedFeatures", "FeatureCache"]


def _nbytes(maps: Sequence[Tensor]) -> int:
    return sum(m.numel() * m.element_size() for m in maps)


def _stored(m: Tensor, dtype: torch.dtype | None) -> Tensor:
    """A CPU copy of ``m`` in ``dtype``; ``(C, h, w)`` maps are laid out channels-last (``(h, w, C)`` in memory).

    One copy (with the dtype conversion folded in), never a view of the batch ``m`` came from. The
    channels-last layout is what the backbone produces and what :meth:`CachedFeatures.get` returns, so
    batches are assembled by stacking contiguous ``(h, w, C)`` blocks (no transposing copy per batch).
    """
    m = m.detach()
    if m.ndim != 3:
        return m.to("cpu", dtype or m.dtype, copy=True).contiguous()
    hwc = m.permute(1, 2, 0)
    out = torch.empty(hwc.shape, dtype=dtype or m.dtype, device="cpu")
    out.copy_(hwc)
    return out.permute(2, 0, 1)


def _stack_maps(maps: Sequence[Tensor]) -> Tensor:
    """Stack per-image maps into a batch; ``(C, h, w)`` maps give a channels-last ``(B, C, h, w)`` batch."""
    if maps[0].ndim != 3:
        return torch.stack(list(maps))
    return torch.stack([m.permute(1, 2, 0) for m in maps]).permute(0, 3, 1, 2)


def _safe_name(key: Hashable) -> str:
    text = str(key)
    if len(text) < 100 and text.replace("-", "").replace("_", "").replace(".", "").isalnum() and text[0] != ".":
        return text
    return hashlib.sha1(text.encode()).hexdigest()


class FeatureCache:
    """Per-key lists of tensors in memory under a byte budget, spilling to disk beyond it.

    Args:
        memory_bytes: in-memory budget (default 1 GiB); ``0`` keeps nothing in memory.
        cache_dir: folder for ``safetensors`` spill files; ``None`` drops what does not fit.
        dtype: storage dtype (e.g. ``torch.float16`` halves memory; values come back in this dtype,
            cast them back as needed); ``None`` stores as given.
        tag: a string identifying what is cached (model, weights, preprocessing); files are kept
            under ``cache_dir/<tag>`` and a cache directory written with another tag is never read.
        persist: also write every entry to ``cache_dir`` as it is stored (write-through), so a later
            run with the same ``tag`` reuses all of it; by default only what overflows is written.

    Attributes:
        hits, misses, spilled: counters (memory or disk hits, misses, entries written to disk).
    """

    def __init__(
        self,
        memory_bytes: int = 1 << 30,
        cache_dir: str | os.PathLike | None = None,
        *,
        dtype: torch.dtype | None = None,
        tag: str = "default",
        persist: bool = False,
    ) -> None:
        if memory_bytes < 0:
            raise ValueError(f"memory_bytes must be >= 0, got {memory_bytes}")
        self.memory_bytes = int(memory_bytes)
        self.dtype = dtype
        self.tag = str(tag)
        if persist and cache_dir is None:
            raise ValueError("persist=True needs a cache_dir")
        self.persist = persist
        self._memory: OrderedDict[Hashable, list[Tensor]] = OrderedDict()
        self._used = 0
        self._on_disk: set[Hashable] = set()
        self.hits = self.misses = self.spilled = 0
        self.directory = None
        if cache_dir is not None:
            self.directory = Path(cache_dir) / _safe_name(self.tag)
            self.directory.mkdir(parents=True, exist_ok=True)
            meta = self.directory / "cache.json"
            if meta.is_file() and json.loads(meta.read_text()).get("tag") != self.tag:  # pragma: no cover
                raise ValueError(f"{self.directory} holds a cache for another tag")
            meta.write_text(json.dumps({"tag": self.tag}))

    @property
    def memory_used(self) -> int:
        """Bytes currently held in memory."""
        return self._used

    def __len__(self) -> int:
        return len(set(self._memory) | self._on_disk)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._memory or key in self._on_disk or self._file(key) is not None

    def _path(self, key: Hashable) -> Path:
        assert self.directory is not None
        return self.directory / f"{_safe_name(key)}.safetensors"

    def _file(self, key: Hashable) -> Path | None:
        if self.directory is None:
            return None
        path = self._path(key)
        return path if path.is_file() else None

    def put(self, key: Hashable, maps: Sequence[Tensor]) -> None:
        """Store a copy of ``maps`` (e.g. one image's ``[(C_s, h_s, w_s)]``) under ``key`` (3-D maps are kept
        channels-last in memory; values and shapes are unchanged)."""
        stored = [_stored(m, self.dtype) for m in maps]
        if key in self._memory:
            self._used -= _nbytes(self._memory.pop(key))
        size = _nbytes(stored)
        if self.persist:
            self._spill(key, stored)
        if size <= self.memory_bytes:
            self._memory[key] = stored
            self._used += size
            self._evict()
        else:
            self._spill(key, stored)

    def get(self, key: Hashable) -> list[Tensor] | None:
        """The maps stored under ``key``, or ``None``."""
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key]
        path = self._file(key)
        if path is not None:
            from safetensors.torch import load_file

            loaded = load_file(str(path))
            self.hits += 1
            return [loaded[f"m{i}"] for i in range(len(loaded))]
        self.misses += 1
        return None

    def _spill(self, key: Hashable, maps: list[Tensor]) -> None:
        if self.directory is None:
            return
        from safetensors.torch import save_file

        path = self._path(key)
        if not path.is_file():
            save_file({f"m{i}": m.contiguous() for i, m in enumerate(maps)}, str(path))
            self.spilled += 1
        self._on_disk.add(key)

    def _evict(self) -> None:
        while self._used > self.memory_bytes and self._memory:
            key, maps = self._memory.popitem(last=False)
            self._used -= _nbytes(maps)
            self._spill(key, maps)

    def clear(self, *, disk: bool = False) -> None:
        """Forget everything in memory (and delete the spill files with ``disk=True``)."""
        self._memory.clear()
        self._used = 0
        if disk and self.directory is not None:
            for path in self.directory.glob("*.safetensors"):
                path.unlink()
            self._on_disk.clear()


class CachedFeatures:
    """Stage maps of a dataset's images, computed once per image.

    Args:
        model: a :class:`~contrastive_landmarks.Hypercolumn` (its :meth:`image_stage_maps
            <contrastive_landmarks.Hypercolumn.image_stage_maps>`) or a :class:`~contrastive_landmarks.Backbone`
            (as ``Hypercolumn(backbone)``), frozen, run in eval mode under ``torch.no_grad``; or any function
            ``images in [0, 1] -> list of stage maps``.
        dataset: indexable, ``dataset[i]["image"]`` a ``(3, H, W)`` image in ``[0, 1]`` (the sample
            contract). Deterministic transforms only: the cache assumes an image never changes.
        cache: a :class:`FeatureCache` (default: 1 GiB in memory, no disk).
        batch_size: images per backbone call when filling the cache.
        device: where the model runs (maps are stored on the CPU and returned on ``device``).

    Example:
        >>> import torch
        >>> from contrastive_landmarks import Hypercolumn, load_backbone
        >>> dataset = [{"image": torch.rand(3, 32, 32)} for _ in range(4)]
        >>> features = CachedFeatures(Hypercolumn(load_backbone("test_resnet")), dataset)
        >>> [tuple(m.shape[:2]) for m in features.get([0, 1, 2])]  # (3, C_s) per stage
        [(3, 96), (3, 192), (3, 48), (3, 32)]
    """

    def __init__(
        self,
        model: nn.Module | Callable[[Tensor], list[Tensor]],
        dataset,
        *,
        cache: FeatureCache | None = None,
        batch_size: int = 64,
        device: torch.device | str | None = None,
    ) -> None:
        self.model = model
        if isinstance(model, Backbone):
            model = Hypercolumn(model)
        if isinstance(model, nn.Module) and not hasattr(model, "image_stage_maps"):
            raise TypeError(f"expected a Hypercolumn, a Backbone or a function, got {type(model).__name__}")
        self.extract = model.image_stage_maps if isinstance(model, nn.Module) else model
        self.dataset = dataset
        self.cache = cache if cache is not None else FeatureCache()
        self.batch_size = int(batch_size)
        self.device = torch.device(device) if device is not None else None

    def __len__(self) -> int:
        return len(self.dataset)

    @torch.no_grad()
    def _compute(self, indices: list[int]) -> None:
        if isinstance(self.model, nn.Module):
            self.model.eval()
        for start in range(0, len(indices), self.batch_size):
            chunk = indices[start : start + self.batch_size]
            images = torch.stack([self.dataset[i]["image"] for i in chunk])
            if self.device is not None:
                images = images.to(self.device)
            maps = self.extract(images)
            for row, index in enumerate(chunk):
                self.cache.put(index, [m[row] for m in maps])

    def precompute(self, indices: Sequence[int] | None = None, progress: bool = False) -> None:
        """Fill the cache for ``indices`` (default: the whole dataset)."""
        indices = list(range(len(self.dataset))) if indices is None else [int(i) for i in indices]
        todo = [i for i in indices if i not in self.cache]
        steps = range(0, len(todo), self.batch_size * 8)
        if progress:
            try:
                from tqdm.auto import tqdm

                steps = tqdm(steps, desc="features", unit_scale=self.batch_size * 8)
            except ImportError:  # pragma: no cover
                pass
        for start in steps:
            self._compute(todo[start : start + self.batch_size * 8])

    def get(self, indices: Sequence[int] | Tensor) -> list[Tensor]:
        """Stage maps of the images at ``indices``: ``[(B, C_s, h_s, w_s)]`` (channels-last, float32
        unless the cache stores another dtype)."""
        indices = [int(i) for i in (indices.tolist() if isinstance(indices, Tensor) else indices)]
        found: dict[int, list[Tensor]] = {}
        missing = []
        for index in indices:
            maps = self.cache.get(index)
            if maps is None:
                missing.append(index)
            else:
                found[index] = maps
        if missing:
            unique = list(dict.fromkeys(missing))
            if self.cache.memory_bytes == 0 and self.cache.directory is None:
                # nothing can be stored: compute directly
                with torch.no_grad():
                    images = torch.stack([self.dataset[i]["image"] for i in unique])
                    if self.device is not None:
                        images = images.to(self.device)
                    maps = self.extract(images)
                for row, index in enumerate(unique):
                    found[index] = [m[row].cpu() for m in maps]
            else:
                self._compute(unique)
                for index in unique:
                    maps = self.cache.get(index)
                    if maps is None:  # evicted straight away with no disk: recompute just this one
                        with torch.no_grad():
                            image = self.dataset[index]["image"][None]
                            if self.device is not None:
                                image = image.to(self.device)
                            maps = [m[0].cpu() for m in self.extract(image)]
                    found[index] = maps
        stages = len(found[indices[0]])
        out = []
        for s in range(stages):
            batch = _stack_maps([found[i][s] for i in indices])
            if self.device is not None:
                batch = batch.to(self.device)
            out.append(batch.contiguous(memory_format=torch.channels_last) if batch.ndim == 4 else batch)
        return out
