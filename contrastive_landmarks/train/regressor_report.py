"""What :func:`~contrastive_landmarks.train.fit_regressor` returns and says: :class:`RegressorFit`, built by
:func:`report` from the fitting loop's pieces, and :func:`diagnose`, the plain-words warnings (also used by
:func:`~contrastive_landmarks.train.finetune.finetune`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..metrics import mean_shape, spread_ratio
from ..regressor import LandmarkRegressor
from .regressor_training import Head, Run, Schedule, Views

__all__ = ["RegressorFit", "diagnose", "report"]


@dataclass
class RegressorFit:
    """What :func:`~contrastive_landmarks.train.fit_regressor` returns.

    Attributes:
        regressor: the selected regressor (lowest validation error), on raw features, in eval mode.
        metric: the error's name (``"iod"``: inter-ocular error in %, ``"pixel"``: mean pixel distance).
        score: its validation error (training error when there was no validation data).
        baseline: the training set's mean shape scored the same way on the same images.
        mean_shape: that mean shape, ``(N, 2)`` pixels (of the training images, without the augmentation).
        best_step: the optimiser step of the selected state; ``steps``: steps run (early stopping may end sooner).
        history: one dict per evaluation: ``step``, ``lr``, ``train_loss``, ``val_error``.
        peakiness_init, peakiness_final: mean peak probability of the spatial softmax on validation
            views at initialisation and for the selected state (:meth:`LandmarkRegressor.peakiness`).
        spread: how far the predictions move between images relative to the truth (the ratio of their
            spreads about each landmark's mean); near 0 means the regressor predicts one layout for all.
        warnings: plain-words problems (not clearly better than the mean shape; still improving at the end).
        config: every option used, for reports.
    """

    regressor: LandmarkRegressor
    metric: str
    score: float
    baseline: float
    mean_shape: Tensor
    best_step: int
    steps: int
    history: list[dict[str, float]]
    peakiness_init: float
    peakiness_final: float
    spread: float
    warnings: list[str]
    config: dict[str, Any]

    @property
    def improvement(self) -> float:
        """``1 - score / baseline``: the fraction of the mean-shape error the regressor removes."""
        return 1.0 - self.score / self.baseline if self.baseline > 0 else float("nan")


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
        run.score,
        baseline,
        shape,
        run.best_step,
        run.steps_run,
        run.history,
        run.peakiness_init,
        run.peakiness_final,
        spread,
        problems,
        config,
    )


def diagnose(
    metric: str, score: float, baseline: float, history: list[dict], steps: int, ran: int, has_val: bool
) -> list[str]:
    """Plain-words problems of a fit: no validation data, not clearly better (by 10 %) than the mean shape's
    ``baseline``, or (``ran == steps``, at least 4 evaluations in ``history``) still improving at the end."""
    problems = []
    unit = "%" if metric == "iod" else (" px" if metric == "pixel" else "")
    where = "validation" if has_val else "training (no validation data)"
    if not has_val:
        problems.append(
            "no validation images (fewer than 10 labelled): the regressor could not be selected or "
            "checked on held-out data; its error below is on the training images"
        )
    if not score < 0.9 * baseline:
        problems.append(
            f"the regressor is not clearly better than predicting the training set's mean shape "
            f"({metric} {score:.3g}{unit} vs {baseline:.3g}{unit} on the {where} images): it has "
            "learned little beyond the average layout; try more steps, more labels or another backbone"
        )
    if ran == steps and len(history) >= 4:
        late = [h["val_error"] for h in history[-max(2, len(history) // 4) :]]
        earlier = history[-max(2, len(history) // 4) - 1]["val_error"]
        if late[-1] < earlier * 0.95 and late[-1] <= min(late) * 1.001:
            problems.append(
                f"the {where} error was still falling at the last of {steps} steps "
                f"({earlier:.4g} -> {late[-1]:.4g}{unit} over the last quarter): the regressor is "
                f"probably undertrained; pass more steps (e.g. steps={2 * steps})"
            )
    return problems
