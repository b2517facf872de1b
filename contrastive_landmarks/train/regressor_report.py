"""What :func:`~contrastive_landmarks.train.fit_regressor` returns and says: :class:`RegressorFit` (a
:class:`~._loop.FitResult`), built by :func:`report` from the fitting loop's pieces, with the plain-words
warnings of :func:`~._loop.diagnose` (shared with :func:`~contrastive_landmarks.train.finetuning.finetune`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..metrics import mean_shape, spread_ratio
from ..regressor import LandmarkRegressor
from ._loop import FitResult, diagnose
from .regressor_training import Head, Run, Schedule, Views

__all__ = ["RegressorFit", "diagnose", "report"]


@dataclass
class RegressorFit(FitResult):
    """What :func:`~contrastive_landmarks.train.fit_regressor` returns: a :class:`~._loop.FitResult` (``score``,
    ``baseline`` (the training set's mean shape scored the same way on the same images), ``best_step``,
    ``steps``, ``history``, ``warnings``, ``config``, ``improvement``) and the regressor's own.

    Attributes:
        regressor: the selected regressor (lowest validation error), on raw features, in eval mode.
        metric: the error's name (``"iod"``: inter-ocular error in %, ``"pixel"``: mean pixel distance).
        mean_shape: the baseline's mean shape, ``(N, 2)`` pixels (of the training images, without the augmentation).
        peakiness_init, peakiness_final: mean peak probability of the spatial softmax on validation
            views at initialisation and for the selected state (:meth:`LandmarkRegressor.peakiness`).
        spread: how far the predictions move between images relative to the truth (the ratio of their
            spreads about each landmark's mean); near 0 means the regressor predicts one layout for all.
    """

    regressor: LandmarkRegressor
    metric: str
    mean_shape: Tensor
    peakiness_init: float
    peakiness_final: float
    spread: float


def report(
    head: Head, views: Views, run: Run, metric: str, score_fn, schedule: Schedule, options: dict[str, Any], warn: bool
) -> RegressorFit:
    """The fit's result: the regressor on raw features, its score beside the training set's mean shape scored
    on the same views, the warnings (:func:`diagnose`; issued with ``warn``) and every option used
    (``options``: ``init``, ``copies``, ``augment``, ``standardize``, ``seed``, ``eye_indices``, ``flip_pairs``)."""
    check, n = views.check, views.n_train
    shape = mean_shape(views.train.keypoints[:n].cpu(), views.train.visible[:n].cpu())  # the unaugmented views
    truth, visible = check.keypoints.cpu(), check.visible.cpu()
    baseline = score_fn(shape.expand_as(truth).clone(), truth, visible)
    spread = spread_ratio(run.pred, truth, visible)
    regressor = head.fold()
    problems = diagnose(metric, run.score, baseline, run.history, schedule.steps, run.steps_run, views.val is not None)
    if warn:
        for message in problems:
            warnings.warn(message, UserWarning, stacklevel=3)  # at fit_regressor's caller
    eye_indices, flip_pairs = options["eye_indices"], options["flip_pairs"]
    config = {
        "heatmaps_per_landmark": regressor.heatmaps_per_landmark,
        "init": options["init"],
        "softmax_multiplier": regressor.softmax_multiplier,
        "steps": schedule.steps,
        "batch_size": schedule.batch_size,
        "lr": schedule.lr,
        "weight_decay": schedule.weight_decay,
        "betas": list(schedule.betas),
        "copies": options["copies"],
        "views": len(views.train),
        "augment": repr(options["augment"]),
        "standardize": options["standardize"],
        "metric": metric,
        "grid": list(views.grid),
        "image_size": list(views.image_size),
        "train_images": n,
        "val_images": 0 if views.val is None else len(views.val),
        "seed": options["seed"],
        "eye_indices": None if eye_indices is None else list(eye_indices),
        "flip_pairs": None if not flip_pairs else [list(p) for p in flip_pairs],
    }
    return RegressorFit(
        regressor,
        metric,
        shape,
        run.peakiness_init,
        run.peakiness_final,
        spread,
        score=run.score,
        baseline=baseline,
        best_step=run.best_step,
        steps=run.steps_run,
        history=run.history,
        warnings=problems,
        config=config,
    )
