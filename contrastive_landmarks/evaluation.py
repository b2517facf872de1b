"""The paper's evaluation protocols, as functions returning result dicts.

- :func:`evaluate_matching` (Table 1): each image is TPS-warped twice with the benchmark's halved
  warps (:meth:`~contrastive_landmarks.tps.TPSParams.matching`); consecutive images ``(2i, 2i+1)``
  form the pairs. The ground-truth landmarks of image ``2i``'s doubly warped view are matched, by
  nearest neighbour (:func:`contrastive_landmarks.match`), into its singly warped view
  (*same identity*) and into image ``2i+1``'s singly warped view (*different identity*); the error
  is the mean pixel distance scaled to the 70-pixel frame (``err · 70 / W``).
- :func:`evaluate_regression` (Tables 2-5, Fig. 4): a linear landmark regressor
  (:class:`~contrastive_landmarks.regressor.LandmarkRegressor`) on frozen features, every choice
  (epoch, learning rate) made on a validation split carved out of the training set with a fixed
  seed; the test set is evaluated once per seed with the selected model. ``num_labelled`` gives the
  few-shot setting, ``seeds`` several runs (mean ± std), ``stages`` the single-stage / hypercolumn
  ablation (Table 3) and ``projector`` a projected representation (Tables 2, 4; dimension sweep).

Results carry the full configuration and library / torch versions; :func:`results_table` renders a
markdown table and :func:`save_results` writes JSON. Backbone features are computed once per image
(:mod:`contrastive_landmarks.features`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from .coords import pixels_to_normalized
from .features import CachedFeatures, FeatureCache
from .hypercolumn import Hypercolumn
from .matching import match
from .metrics import inter_ocular_error, matching_error, pck
from .regressor import LandmarkRegressor, regression_loss

__all__ = [
    "ProjectedDescriptors",
    "environment",
    "evaluate_matching",
    "evaluate_regression",
    "results_table",
    "save_results",
    "split_indices",
]


# -- small helpers -------------------------------------------------------------------------------------------
def environment() -> dict:
    """Versions and machine, recorded with every result."""
    from . import __version__

    return {
        "contrastive_landmarks": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def split_indices(n: int, val_fraction: float, seed: int, max_val: int | None = None) -> tuple[list[int], list[int]]:
    """A fixed random ``(train, val)`` split of ``range(n)`` (``torch.Generator`` seeded with ``seed``)."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    count = round(n * val_fraction)
    if max_val is not None:
        count = min(count, max_val)
    return sorted(order[count:]), sorted(order[:count])


def _normalizer(model: nn.Module, normalize: Callable[[Tensor], Tensor] | None) -> Callable[[Tensor], Tensor]:
    if normalize is not None:
        return normalize
    for owner in (model, getattr(model, "backbone", None), getattr(getattr(model, "hypercolumn", None),
                                                                   "backbone", None)):
        if owner is not None and hasattr(owner, "normalize") and callable(owner.normalize):
            return owner.normalize
    raise TypeError(f"cannot find the input normalisation of {type(model).__name__}; pass normalize=")


class ProjectedDescriptors(nn.Module):
    """Hypercolumn + :class:`~contrastive_landmarks.projector.SpatialProjector` as one descriptor model
    (for :func:`evaluate_matching`): ``(B, 3, H, W)`` normalised images -> ``(B, dim, S, S)``.

    Args:
        hypercolumn: the frozen :class:`~contrastive_landmarks.Hypercolumn`.
        projector: a trained projector whose ``in_channels`` equals ``hypercolumn.channels``.
        size: descriptor grid (default: the input resolution, as the authors match at 96²).
    """

    def __init__(self, hypercolumn: Hypercolumn, projector: nn.Module, size: int | Sequence[int] | None = None):
        super().__init__()
        self.hypercolumn, self.projector, self.size = hypercolumn, projector, size
        self.backbone = hypercolumn.backbone

    def forward(self, images: Tensor) -> Tensor:
        size = self.size if self.size is not None else tuple(images.shape[-2:])
        return self.projector(self.hypercolumn.stage_maps(images), size)


# -- matching (Table 1) ----------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_matching(
    model: nn.Module,
    dataset,
    *,
    num_images: int | None = None,
    seed: int = 1,
    crop: int = 0,
    similarity: str | None = None,
    size: int | Sequence[int] | None = None,
    frame: float = 70.0,
    batch_size: int = 16,
    normalize: Callable[[Tensor], Tensor] | None = None,
    tps_params=None,
    return_matches: bool = False,
) -> dict:
    """Landmark matching on TPS-warped same-identity and consecutive different-identity pairs (Table 1).

    Args:
        model: a :class:`~contrastive_landmarks.Hypercolumn` (default similarity: per-stage cosine,
            the authors') or any module mapping normalised images to ``(B, C, h, w)`` descriptor maps,
            e.g. :class:`ProjectedDescriptors` (cosine).
        dataset: labelled samples (``image`` in ``[0, 1]``, ``keypoints``); all images the same size.
        num_images: use the first ``num_images`` images (rounded down to even; default all, giving
            ``num_images // 2`` pairs of each kind, 500 for MAFL's 1,000 test images).
        seed: seed of the warps (a CPU generator; the warps of image ``i`` depend only on ``seed`` and
            the images before it).
        crop: pixels removed from every side after warping (the paper warps 136² images and crops 20).
        similarity: ``stage_cosine`` / ``cosine`` / ``dot`` (default: ``stage_cosine`` for a
            Hypercolumn, else ``cosine``).
        size: descriptor grid (default: the full warped-image resolution, as the authors).
        frame: the canonical frame errors are reported in (70 px: ``error · frame / W``).
        tps_params: warp distribution (default :meth:`~contrastive_landmarks.tps.TPSParams.matching`).

    Returns:
        ``{"same": {"error", "count"}, "different": {...}, "config": {...}, "environment": {...}}``;
        errors are mean distances over all visible landmarks in the ``frame``-pixel frame.
    """
    from .tps import TPSParams, make_pair

    params = tps_params or TPSParams.matching()
    normalize = _normalizer(model, normalize)
    if isinstance(model, nn.Module):
        model.eval()
    total = len(dataset) if num_images is None else min(num_images, len(dataset))
    total -= total % 2
    if total < 2:
        raise ValueError(f"matching needs at least 2 images, got {total}")
    similarity = similarity or ("stage_cosine" if isinstance(model, Hypercolumn) else "cosine")
    grid_size = size
    generator = torch.Generator().manual_seed(seed)
    errors = {"same": [], "different": []}
    kept = []
    chunk = max(2, batch_size - batch_size % 2)
    for start in range(0, total, chunk):
        samples = [dataset[i] for i in range(start, min(start + chunk, total))]
        images = torch.stack([s["image"] for s in samples])
        keypoints = torch.stack([s["keypoints"] for s in samples]).float()
        visible = torch.stack([s["visible"] for s in samples]) if "visible" in samples[0] else None
        pair = make_pair(images, keypoints, params, generator=generator, crop=crop)
        view1, view2 = pair.image1.clamp(0, 1), pair.image2.clamp(0, 1)
        height, width = view1.shape[-2:]
        kp1, kp2 = pair.keypoints1.float(), pair.keypoints2.float()
        source, src_kp = view1[0::2], kp1[0::2]
        # queries outside the warped image cannot be sampled: clamp them to the border (rare)
        src_kp = torch.stack([src_kp[..., 0].clamp(-0.5, width - 0.5), src_kp[..., 1].clamp(-0.5, height - 0.5)], -1)
        src_norm = normalize(source)
        for name, target, truth, vis in (
            ("same", view2[0::2], kp2[0::2], None if visible is None else visible[0::2]),
            ("different", view2[1::2], kp2[1::2], None if visible is None else visible[0::2] & visible[1::2]),
        ):
            found = match(model, src_norm, src_kp, normalize(target), similarity=similarity, size=grid_size)
            distance = matching_error(found.points, truth, (height, width), frame, vis, reduction="none")
            errors[name].append(distance[~distance.isnan()])
            if return_matches and name == "different" and not kept:
                kept.append({"source": source[:4], "source_points": src_kp[:4], "target": target[:4],
                             "points": found.points[:4], "truth": truth[:4]})
    result = {name: {"error": float(torch.cat(e).mean()), "count": int(torch.cat(e).numel())}
              for name, e in errors.items()}
    result["config"] = {
        "protocol": "matching", "pairs": total // 2, "seed": seed, "crop": crop, "similarity": similarity,
        "size": size, "frame": frame, "image_size": [int(height), int(width)], "model": _describe(model),
        "tps": {k: getattr(params, k) for k in vars(params)} if hasattr(params, "__dict__") else str(params),
    }
    result["environment"] = environment()
    if return_matches:
        result["examples"] = kept[0] if kept else None
    return result


def _describe(model) -> dict:
    info: dict = {"class": type(model).__name__}
    backbone = getattr(model, "backbone", None)
    if backbone is not None and hasattr(backbone, "config"):
        info["backbone"] = backbone.config
    if isinstance(model, Hypercolumn):
        info["size"] = list(model.size) if model.size else None
    projector = getattr(model, "projector", None)
    if projector is not None and hasattr(projector, "config"):
        info["projector"] = projector.config
    return info


# -- regression (Tables 2-5, Fig. 4) -----------------------------------------------------------------------------
class _Head(nn.Module):
    """Optional per-channel standardisation, optional projector, then the regressor, on stage maps."""

    def __init__(self, regressor: LandmarkRegressor, projector: nn.Module | None, size: tuple[int, int],
                 mean: list[Tensor] | None, std: list[Tensor] | None):
        super().__init__()
        self.regressor, self.projector, self.size = regressor, projector, size
        self.mean, self.std = mean, std

    def forward(self, maps: list[Tensor]) -> Tensor:
        if self.mean is not None:
            maps = [(m - mu.view(1, -1, 1, 1)) / sd.view(1, -1, 1, 1) for m, mu, sd in zip(maps, self.mean, self.std)]
        if self.projector is not None:
            return self.regressor(self.projector(maps, self.size))
        return self.regressor(maps, self.size)


def _channel_stats(features: CachedFeatures, indices: list[int], stages: list[int], batch: int = 256):
    sums = sq = None
    count = 0
    for start in range(0, len(indices), batch):
        batch_maps = features.get(indices[start : start + batch])  # once per batch, not once per stage
        maps = [batch_maps[s].float() for s in stages]
        if sums is None:
            sums = [torch.zeros(m.shape[1], dtype=torch.float64) for m in maps]
            sq = [torch.zeros(m.shape[1], dtype=torch.float64) for m in maps]
            count = [0] * len(maps)
        for i, m in enumerate(maps):
            sums[i] += m.sum((0, 2, 3)).double()
            sq[i] += (m.double() ** 2).sum((0, 2, 3))
            count[i] += m.shape[0] * m.shape[2] * m.shape[3]
    mean = [(s / c).float() for s, c in zip(sums, count)]
    std = [((q / c - (s / c) ** 2).clamp_min(0).sqrt() + 1e-6).float() for s, q, c in zip(sums, sq, count)]
    return mean, std


def _predict(head: _Head, features: CachedFeatures, indices: list[int], stages: list[int], batch: int) -> Tensor:
    head.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(indices), batch):
            maps = features.get(indices[start : start + batch])
            out.append(head([maps[s].float() for s in stages]))
    return torch.cat(out)


def _score(pred_norm: Tensor, indices: list[int], targets: Tensor, visible: Tensor, image_size: tuple[int, int],
           metric: str, eye_indices: Sequence[int] | None) -> float:
    from .coords import normalized_to_pixels

    pred = normalized_to_pixels(pred_norm, image_size)
    gt, vis = targets[indices], visible[indices]
    if metric == "iod":
        return float(inter_ocular_error(pred, gt, tuple(eye_indices), vis))
    return float(pck(pred, gt, vis, image_size=image_size))


def evaluate_regression(
    model: Hypercolumn,
    train_set,
    test_set,
    *,
    num_labelled: int | None = None,
    seeds: Sequence[int] = (0,),
    val_fraction: float = 0.1,
    max_val: int | None = 1000,
    split_seed: int = 0,
    stages: Sequence[str] | None = None,
    projector: nn.Module | None = None,
    heatmaps_per_landmark: int = 50,
    size: int = 48,
    epochs: int = 30,
    lrs: Sequence[float] = (1e-3,),
    weight_decay: float = 5e-4,
    batch_size: int = 32,
    samples_per_epoch: int | None = None,
    eval_every: int = 1,
    standardize: bool = True,
    metric: str = "iod",
    eye_indices: Sequence[int] | None = None,
    cache: FeatureCache | None = None,
    feature_batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Linear landmark regression on frozen features, selected on validation, tested once per seed.

    Protocol: ``train_set`` is split (``split_seed``, fixed) into a training part and a validation
    part of ``val_fraction`` (at most ``max_val`` images). For each seed, ``num_labelled`` images are
    drawn from the training part (all if ``None``), a regressor is trained for ``epochs`` with each
    learning rate in ``lrs`` (Adam β=(0.5, 0.999), weight decay, cosine schedule to lr·8e-4, the
    authors' optimiser), and the (learning rate, epoch) with the lowest validation error is kept; that
    model is evaluated on ``test_set`` once. Report mean ± std over seeds.

    Args:
        model: the frozen :class:`~contrastive_landmarks.Hypercolumn` (its backbone's stages).
        train_set, test_set: labelled datasets (sample contract) with deterministic transforms.
        num_labelled: few-shot size (``None``: the whole training part).
        seeds: seeds of the few-shot draw and of the regressor initialisation / batch order.
        stages: subset of the backbone's stages to use (e.g. ``["conv4_x"]`` for Table 3's single
            layer); default all (the hypercolumn).
        projector: a trained :class:`~contrastive_landmarks.projector.SpatialProjector` applied to the
            (selected) stage maps before the regressor (``+ proj.`` rows).
        heatmaps_per_landmark: ``K`` (50 in the paper, 10 in Table 4's small regressor).
        size: hypercolumn grid (48).
        samples_per_epoch: tile the labelled images (fresh shuffles) to at least this many samples per
            epoch (the authors' few-shot setting uses 1000); ``None``: one pass.
        standardize: standardise every feature channel with training-part statistics (helps a
            randomly initialised backbone train; the paper does not mention it).
        metric: ``"iod"`` (inter-ocular error %, needs eye indices) or ``"pck"`` (% correct within
            5 % of the longer side, visible points only).
        cache: where stage maps are kept (default 1 GiB in memory, no disk).

    Returns:
        ``{"test": {"mean", "std", "per_seed"}, "val": {...}, "selected": [...], "config", "environment"}``.
    """
    if metric not in ("iod", "pck"):
        raise ValueError(f"metric must be 'iod' or 'pck', got {metric!r}")
    eye_indices = eye_indices or getattr(train_set, "eye_indices", None)
    if metric == "iod" and eye_indices is None:
        raise ValueError("metric='iod' needs eye_indices (the dataset defines none)")
    say = progress or (lambda message: None)
    backbone_stages = list(model.backbone.stages)
    chosen = list(stages) if stages is not None else backbone_stages
    unknown = [s for s in chosen if s not in backbone_stages]
    if unknown:
        raise ValueError(f"stages {unknown} are not computed by the backbone (it has {backbone_stages})")
    stage_ids = [backbone_stages.index(s) for s in chosen]
    channels = sum(model.backbone.channels[i] for i in stage_ids)
    if projector is not None and getattr(projector, "in_channels", channels) != channels:
        raise ValueError(f"the projector expects {projector.in_channels} channels, the stages give {channels}")

    started = time.time()
    # the feature pass reads every sample once; it records their labels on the way (no second read)
    both = _Concat(train_set, test_set, record=("keypoints", "visible"))
    features = CachedFeatures(model, both, cache=cache, batch_size=feature_batch_size, device=device)
    image_size = tuple(train_set[0]["image"].shape[-2:])
    test_size = tuple(test_set[0]["image"].shape[-2:])
    if test_size != image_size:
        raise ValueError(f"train images are {image_size} but test images are {test_size}")
    train_part, val_part = split_indices(len(train_set), val_fraction, split_seed, max_val)
    test_part = [len(train_set) + i for i in range(len(test_set))]
    say(f"features: {len(train_set)} train + {len(test_set)} test images")
    features.precompute()
    _warn_if_cache_too_small(features.cache, len(both), say)
    labels = _labels(both)
    targets, visible = labels["keypoints"].float(), labels["visible"].bool()
    target_norm = pixels_to_normalized(targets, image_size)
    feature_seconds = time.time() - started
    mean = std = None
    if standardize:
        mean, std = _channel_stats(features, train_part, stage_ids)

    per_seed, val_scores, selections = [], [], []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        if num_labelled is not None:
            if num_labelled > len(train_part):
                raise ValueError(f"num_labelled={num_labelled} but the training part has {len(train_part)} images")
            perm = torch.randperm(len(train_part), generator=generator)[:num_labelled]
            labelled = sorted(train_part[i] for i in perm.tolist())
        else:
            labelled = list(train_part)
        best = (math.inf, None, None, None)
        for lr in lrs:
            torch.manual_seed(seed)
            regressor = LandmarkRegressor(
                projector.dim if projector is not None else channels, targets.shape[1], heatmaps_per_landmark,
                size=size)
            regressor.reset_parameters(torch.Generator().manual_seed(seed))
            head = _Head(regressor, projector, (size, size), mean, std)
            if device is not None:
                head.to(device)
            if projector is not None:
                for p in projector.parameters():
                    p.requires_grad_(False)
            optimizer = torch.optim.Adam(regressor.parameters(), lr=lr, betas=(0.5, 0.999), weight_decay=weight_decay)
            per_epoch = max(len(labelled), samples_per_epoch or 0)
            steps_per_epoch = max(1, math.ceil(per_epoch / batch_size))
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch,
                                                                  eta_min=lr * 8e-4)
            order_generator = torch.Generator().manual_seed(seed + 1)
            for epoch in range(1, epochs + 1):
                head.train()
                order: list[int] = []
                while len(order) < per_epoch:
                    order += torch.randperm(len(labelled), generator=order_generator).tolist()
                for start in range(0, len(order), batch_size):
                    batch = [labelled[i] for i in order[start : start + batch_size]]
                    maps = features.get(batch)
                    pred = head([maps[s].float() for s in stage_ids])
                    tgt = target_norm[batch].to(pred.device)
                    loss = regression_loss(pred, tgt, visible[batch].to(pred.device))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                if epoch % eval_every == 0 or epoch == epochs:
                    score = _score(_predict(head, features, val_part, stage_ids, 256).cpu(), val_part, targets,
                                   visible, image_size, metric, eye_indices) if val_part else -epoch
                    better = score < best[0] if metric == "iod" else -score < best[0]
                    if better:
                        best = (score if metric == "iod" else -score, lr, epoch,
                                {k: v.detach().clone() for k, v in regressor.state_dict().items()})
                    say(f"seed {seed} lr {lr:g} epoch {epoch}: val {metric} {score:.3f} "
                        f"(loss {float(loss.detach()):.4f})")
        _, lr, epoch, state = best
        regressor.load_state_dict(state)
        test_score = _score(_predict(head, features, test_part, stage_ids, 256).cpu(), test_part, targets, visible,
                            image_size, metric, eye_indices)
        val_best = best[0] if metric == "iod" else -best[0]
        per_seed.append(test_score)
        val_scores.append(val_best)
        selections.append({"seed": seed, "lr": lr, "epoch": epoch, "labelled": len(labelled)})
        say(f"seed {seed}: selected lr {lr:g} epoch {epoch} (val {val_best:.3f}); test {metric} {test_score:.3f}")

    def summary(values: list[float]) -> dict:
        t = torch.tensor(values, dtype=torch.float64)
        return {"mean": float(t.mean()), "std": float(t.std()) if len(values) > 1 else 0.0, "per_seed": values}

    return {
        "test": summary(per_seed),
        "val": summary(val_scores),
        "selected": selections,
        "metric": "inter-ocular error (%)" if metric == "iod" else "PCK@0.05 (%)",
        "config": {
            "protocol": "regression", "num_labelled": num_labelled, "seeds": list(seeds),
            "val_fraction": val_fraction, "max_val": max_val, "split_seed": split_seed,
            "train_images": len(train_part), "val_images": len(val_part), "test_images": len(test_set),
            "stages": chosen, "channels": channels, "heatmaps_per_landmark": heatmaps_per_landmark, "size": size,
            "epochs": epochs, "lrs": list(lrs), "weight_decay": weight_decay, "batch_size": batch_size,
            "samples_per_epoch": samples_per_epoch,
            "optimizer": "Adam(betas=(0.5, 0.999)), cosine to lr*8e-4", "standardize": standardize,
            "metric": metric, "eye_indices": list(eye_indices) if eye_indices is not None else None,
            "image_size": list(image_size), "model": _describe(model),
            "projector": projector.config if projector is not None and hasattr(projector, "config") else None,
        },
        "timing": {"features_s": round(feature_seconds, 1), "total_s": round(time.time() - started, 1)},
        "environment": environment(),
    }


class _Concat:
    """``first`` then ``second`` as one dataset; remembers the ``record`` fields of every sample it serves."""

    def __init__(self, first, second, record: Sequence[str] = ()):
        self.first, self.second = first, second
        self.record = tuple(record)
        self.recorded: dict[int, dict[str, Tensor]] = {}

    def __len__(self) -> int:
        return len(self.first) + len(self.second)

    def __getitem__(self, index: int) -> dict:
        n = len(self.first)
        sample = self.first[index] if index < n else self.second[index - n]
        if self.record:
            self.recorded[index] = {key: sample[key] for key in self.record}
        return sample


def _stored_table(dataset, key: str) -> Tensor | None:
    table = getattr(dataset, key, None)
    transform = getattr(dataset, "transform", "none")
    if isinstance(table, Tensor) and transform is None:
        return table.clone()  # stored annotations are final when there is no transform
    return None


def _labels(both: _Concat) -> dict[str, Tensor]:
    """``{key: (len(both), ...)}`` for ``both.record``: stored tables where final, else the samples' own
    fields, from what the feature pass recorded (reading only samples it did not serve, once each)."""
    out: dict[str, list[Tensor]] = {key: [] for key in both.record}
    for part, offset in ((both.first, 0), (both.second, len(both.first))):
        tables = {key: _stored_table(part, key) for key in both.record}
        if any(table is None for table in tables.values()):
            for index in range(offset, offset + len(part)):
                if index not in both.recorded:
                    _ = both[index]  # reading a sample records its fields
        for key in both.record:
            table = tables[key]
            out[key].append(table if table is not None else
                            torch.stack([both.recorded[offset + i][key] for i in range(len(part))]))
    return {key: torch.cat(parts) for key, parts in out.items()}


def _warn_if_cache_too_small(cache: FeatureCache, count: int, say: Callable[[str], None]) -> None:
    """Warn when the stage maps of ``count`` images do not all fit in ``cache`` and it has no directory: every
    epoch then recomputes evicted images through the backbone (LRU evicts what the next pass needs first)."""
    held = len(cache)
    if cache.directory is not None or held >= count:
        return
    need = f" >= {math.ceil(cache.memory_used / held * count)}" if held else ""
    message = (f"the feature cache holds {held} of {count} images' stage maps ({cache.memory_used / 2**30:.2f} GiB) "
               "and has no cache_dir: evicted maps are recomputed on every pass, which multiplies the backbone "
               f"time; give the FeatureCache memory_bytes{need} (CLI: --cache-memory-gb) or a cache_dir")
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    say(message)


# -- reporting ----------------------------------------------------------------------------------------------------
def results_table(rows: Mapping[str, Mapping] | Sequence[tuple[str, Mapping]]) -> str:
    """A markdown table of ``{label: result}`` (from :func:`evaluate_regression` or :func:`evaluate_matching`)."""
    items = list(rows.items()) if isinstance(rows, Mapping) else list(rows)
    lines = []
    if items and items[0][1].get("config", {}).get("protocol") == "matching":
        lines += ["| model | same identity (px @70) | different identity (px @70) | pairs |", "|---|---|---|---|"]
        for label, r in items:
            lines.append(f"| {label} | {r['same']['error']:.2f} | {r['different']['error']:.2f} | "
                         f"{r['config']['pairs']} |")
    else:
        lines += ["| model | labelled | test metric | mean ± std | seeds | selected (lr, epoch) |",
                  "|---|---|---|---|---|---|"]
        for label, r in items:
            cfg = r["config"]
            labelled = cfg["num_labelled"] if cfg["num_labelled"] is not None else cfg["train_images"]
            chosen = ", ".join(f"({s['lr']:g}, {s['epoch']})" for s in r["selected"])
            lines.append(f"| {label} | {labelled} | {r['metric']} | {r['test']['mean']:.2f} ± {r['test']['std']:.2f}"
                         f" | {len(cfg['seeds'])} | {chosen} |")
    return "\n".join(lines)


def save_results(results: Mapping, path: str | os.PathLike) -> Path:
    """Write results (with their configuration and environment) as indented JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in results.items() if k != "examples"}
    path.write_text(json.dumps(clean, indent=2, default=str) + "\n")
    return path
