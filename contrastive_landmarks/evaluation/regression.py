"""Linear landmark regression on frozen features (the paper's Tables 2-5, Fig. 4), as a protocol.

What is protocol lives here: the fixed train / validation split, the few-shot draw per seed, the choice
among learning rates on validation, one evaluation of the test set per seed with the selected model, and
the report, in which every error stands beside the training set's mean shape scored on the same images.
The fitting itself is :func:`contrastive_landmarks.train.fit_regressor`, the library's only regressor loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..data.base import KeypointSubset
from ..hypercolumn import Hypercolumn
from ..metrics import resolve_metric
from ..regression import regress
from ..train._loop import holdout_split
from ..train.features import collate, eval_mode, index_batches
from ..train.regressor_fitting import RegressorFit, fit_regressor
from .matching import describe
from .report import environment

__all__ = ["StageSubset", "evaluate_regression", "predict_dataset", "split_indices"]


def split_indices(n: int, val_fraction: float, seed: int, max_val: int | None = None) -> tuple[list[int], list[int]]:
    """A fixed random ``(train, val)`` split of ``range(n)``: ``round(val_fraction · n)`` held out (at most
    ``max_val``), drawn with ``seed``; the training recipes' own split (:func:`~.train._loop.holdout_split`)."""
    return holdout_split(n, val_fraction, seed, max_count=max_val)


class StageSubset(nn.Module):
    """A :class:`~contrastive_landmarks.Hypercolumn` restricted to some of its backbone's stages (Table 3).

    Args:
        hypercolumn: the full hypercolumn.
        stages: stage names to keep, e.g. ``["conv4_x"]``.
    """

    def __init__(self, hypercolumn: Hypercolumn, stages: Sequence[str]):
        super().__init__()
        available = list(hypercolumn.backbone.stages)
        unknown = [s for s in stages if s not in available]
        if unknown:
            raise ValueError(f"stages {unknown} are not computed by the backbone (it has {available})")
        self.hypercolumn = hypercolumn
        self.backbone = hypercolumn.backbone
        self.size = hypercolumn.size
        self.normalize = hypercolumn.normalize
        self.ids = [available.index(s) for s in stages]
        self.channels = sum(hypercolumn.backbone.channels[i] for i in self.ids)

    def image_stage_maps(self, images: Tensor) -> list[Tensor]:
        """The kept stages of ``(B, 3, H, W)`` images in ``[0, 1]`` (:meth:`Hypercolumn.image_stage_maps`)."""
        maps = self.hypercolumn.image_stage_maps(images)
        return [maps[i] for i in self.ids]

    def stage_maps(self, images: Tensor) -> list[Tensor]:
        """The kept stages of normalised ``(B, 3, H, W)`` images (:meth:`Hypercolumn.stage_maps`)."""
        maps = self.hypercolumn.stage_maps(images)
        return [maps[i] for i in self.ids]

    def output_size(self, images: Tensor) -> tuple[int, int]:
        return self.hypercolumn.output_size(images)


@torch.no_grad()
def predict_dataset(
    features: nn.Module,
    fit: RegressorFit,
    data: Any,
    *,
    projector: nn.Module | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(predictions, keypoints, visible)`` of a labelled dataset, ``(M, N, 2)`` pixels each.

    The fitted regressor runs as :meth:`~contrastive_landmarks.LandmarkModel.detect` runs it
    (:func:`~contrastive_landmarks.regression.regress`), on the dataset's images as they are, on its own grid.
    """
    regressor = fit.regressor
    preds, kps, viss = [], [], []
    with eval_mode(features), eval_mode(regressor), eval_mode(projector):
        for idx in index_batches(len(data), batch_size):
            batch = collate(data, idx.tolist())
            images = batch["image"] if device is None else batch["image"].to(device)
            preds.append(regress(features, regressor, images, projector=projector, size=regressor.size).points.cpu())
            kps.append(batch["keypoints"])
            viss.append(batch["visible"] & torch.isfinite(batch["keypoints"]).all(-1))
    return torch.cat(preds), torch.nan_to_num(torch.cat(kps)), torch.cat(viss)


def _summary(values: list[float]) -> dict:
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(t.mean()), "std": float(t.std()) if len(values) > 1 else 0.0, "per_seed": values}


def _few_shot(train_part: list[int], num_labelled: int | None, seed: int) -> list[int]:
    """The labelled images of one seed: all of ``train_part``, or ``num_labelled`` of them drawn with ``seed``."""
    if num_labelled is None:
        return list(train_part)
    if num_labelled > len(train_part):
        raise ValueError(f"num_labelled={num_labelled} but the training part has {len(train_part)} images")
    perm = torch.randperm(len(train_part), generator=torch.Generator().manual_seed(seed))[:num_labelled]
    return sorted(train_part[i] for i in perm.tolist())


def _best_fit(
    features: nn.Module,
    labelled: Any,
    val_set: Any,
    lrs: Sequence[float] | None,
    fit_options: dict,
    *,
    say: Callable[[str], None],
    metric_name: str,
    seed: int,
    **fit_kwargs: Any,
) -> tuple[RegressorFit, float]:
    """One :func:`fit_regressor` per learning rate (``None``: its default); the best on validation, and its rate."""
    best: RegressorFit | None = None
    best_lr = math.nan
    for lr in lrs or (None,):
        options = dict(fit_options) if lr is None else {**fit_options, "lr": lr}
        fit = fit_regressor(features, labelled, val_set, seed=seed, warn=False, **fit_kwargs, **options)
        say(
            f"seed {seed} lr {options.get('lr', 'default')}: val {metric_name} {fit.score:.3f} "
            f"(mean shape {fit.baseline:.3f}, step {fit.best_step})"
        )
        if best is None or fit.score < best.score:
            best, best_lr = fit, options.get("lr", math.nan)
    assert best is not None
    return best, best_lr


def _train_and_val(
    train_set: Any, val_set: Any | None, val_fraction: float, split_seed: int, max_val: int | None
) -> tuple[list[int], Any | None]:
    """The training part's indices and the validation samples: ``val_set``, else a split of ``train_set``."""
    if val_set is not None:
        return list(range(len(train_set))), val_set
    train_part, val_part = split_indices(len(train_set), val_fraction, split_seed, max_val)
    return train_part, (KeypointSubset(train_set, val_part) if val_part else None)


def _test_scores(
    features: nn.Module, fit: RegressorFit, test_set: Any, score_fn, projector, device
) -> tuple[float, float]:
    """The selected fit's error on the test set, and the training set's mean shape's, scored the same way."""
    pred, truth, visible = predict_dataset(features, fit, test_set, projector=projector, device=device)
    return score_fn(pred, truth, visible), score_fn(fit.mean_shape.expand_as(truth).clone(), truth, visible)


def evaluate_regression(
    model: Hypercolumn,
    train_set: Any,
    test_set: Any,
    *,
    val_set: Any | None = None,
    num_labelled: int | None = None,
    seeds: Sequence[int] = (0,),
    val_fraction: float = 0.1,
    max_val: int | None = 1000,
    split_seed: int = 0,
    stages: Sequence[str] | None = None,
    projector: nn.Module | None = None,
    lrs: Sequence[float] | None = None,
    metric: str = "auto",
    eye_indices: Sequence[int] | None = None,
    device: torch.device | str | None = None,
    progress: Callable[[str], None] | None = None,
    fits: list[RegressorFit] | None = None,
    **fit_options: Any,
) -> dict:
    """Fit on training labels, select on validation, test once per seed; every error beside the mean shape's.

    Args:
        model: the frozen :class:`~contrastive_landmarks.Hypercolumn`.
        train_set, test_set: labelled datasets (sample contract). ``train_set`` may augment at random.
        val_set: validation samples; default: ``val_fraction`` of ``train_set`` (at most ``max_val``), split
            once with ``split_seed``. Pass ``val_set`` with deterministic transforms when ``train_set``
            augments (and give ``train_set`` without those rows: see :func:`split_indices`).
        num_labelled: few-shot size, drawn from the training part per seed (``None``: all of it).
        seeds: seeds of the draw and of the fit.
        stages: a subset of the backbone's stages (Table 3); default all (the hypercolumn).
        projector: a frozen :class:`~contrastive_landmarks.SpatialProjector` before the regressor.
        lrs: learning rates to choose among on validation (default: :func:`fit_regressor`'s).
        metric: ``"auto"`` (inter-ocular error where the dataset names eyes, else pixels), ``"iod"``, ``"pixel"``.
        fits: a list that receives each seed's selected :class:`~contrastive_landmarks.train.RegressorFit`
            (its fitted regressor included), to keep or save the models the protocol chose.
        fit_options: passed to :func:`~contrastive_landmarks.train.fit_regressor` (``steps``, ...).

    Returns:
        ``{"test", "test_baseline", "val", "val_baseline": {"mean", "std", "per_seed"}, "selected", "metric",
        "warnings", "config", "timing", "environment"}``.
    """
    say = progress or (lambda message: None)
    eye_indices = eye_indices if eye_indices is not None else getattr(train_set, "eye_indices", None)
    metric_name, score_fn = resolve_metric(metric, eye_indices)
    features = StageSubset(model, stages) if stages is not None else model
    train_part, val_set = _train_and_val(train_set, val_set, val_fraction, split_seed, max_val)
    started = time.time()
    rows, selections, problems = [], [], []
    for seed in seeds:
        labelled = _few_shot(train_part, num_labelled, seed)
        best, best_lr = _best_fit(
            features,
            KeypointSubset(train_set, labelled),
            val_set,
            lrs,
            fit_options,
            say=say,
            metric_name=metric_name,
            projector=projector,
            metric=metric,
            eye_indices=eye_indices,
            seed=seed,
            device=device,
        )
        if fits is not None:
            fits.append(best)
        test, test_baseline = _test_scores(features, best, test_set, score_fn, projector, device)
        rows.append({"test": test, "test_baseline": test_baseline, "val": best.score, "val_baseline": best.baseline})
        selections.append({"seed": seed, "lr": best_lr, "step": best.best_step, "labelled": len(labelled)})
        problems += [f"seed {seed}: {w}" for w in best.warnings]
        say(f"seed {seed}: test {metric_name} {test:.3f} (mean shape {test_baseline:.3f})")
    return {
        **{key: _summary([row[key] for row in rows]) for key in ("test", "test_baseline", "val", "val_baseline")},
        "selected": selections,
        "metric": {"iod": "inter-ocular error (%)", "pixel": "mean pixel error"}.get(metric_name, metric_name),
        "warnings": problems,
        "config": {
            "protocol": "regression",
            "num_labelled": num_labelled,
            "seeds": list(seeds),
            "val_fraction": val_fraction,
            "max_val": max_val,
            "split_seed": split_seed,
            "train_images": len(train_part),
            "val_images": 0 if val_set is None else len(val_set),
            "test_images": len(test_set),
            "stages": list(stages) if stages is not None else list(model.backbone.stages),
            "lrs": lrs,
            "fit": best.config,
            "model": describe(model),
            "projector": projector.config if projector is not None and hasattr(projector, "config") else None,
        },
        "timing": {"total_s": round(time.time() - started, 1)},
        "environment": environment(),
    }
