"""A keypoint model on a user's own test frames, in their own pixels: what ``evaluate keypoints`` reports.

Errors are Euclidean distances in pixels of each stored frame, over the labelled points only:

- mean and median, overall and per body part;
- PCK at 5 and 10 pixels, and at 0.05 of the animal's box diagonal (the bounding box of the frame's labelled
  points): :func:`~contrastive_landmarks.metrics.pck`, fractions in ``[0, 1]`` of the points within the
  threshold (``<=``);
- DeepLabCut's p-cutoff view: the mean error over the points whose likelihood is at least ``p_cutoff``
  (0.6, DeepLabCut's default) and the share of labelled points kept;
- how well the likelihood separates good from bad points: the ROC AUC of ``1 - likelihood`` for "error above
  10 pixels";
- for a model with a calibrated likelihood (:class:`~contrastive_landmarks.calibration.LikelihoodCalibration`,
  fitted by ``finetune``), how well it holds on these frames (:func:`likelihood_reliability`): among the points
  kept at ``p_cutoff``, the share within the calibration's radius, the share of the points within the radius that
  are kept, and the reliability table (predicted vs observed share of good points per likelihood bin);
- the training frames' mean pose scored the same way (:func:`~contrastive_landmarks.framing.mean_pose`),
  where it is known.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..metrics import pck

__all__ = ["evaluate_keypoints", "keypoint_errors", "likelihood_reliability", "roc_auc"]


def roc_auc(scores: Tensor, positive: Tensor) -> float:
    """Area under the ROC curve of ``scores`` for the ``positive`` labels (ties count half); NaN with one class."""
    scores, positive = scores.flatten().double(), positive.flatten().bool()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    greater = (scores[positive][:, None] > scores[~positive][None]).double()
    ties = (scores[positive][:, None] == scores[~positive][None]).double()
    return float((greater + 0.5 * ties).sum() / (n_pos * n_neg))


def keypoint_errors(
    pred: Tensor,
    truth: Tensor,
    visible: Tensor,
    *,
    likelihood: Tensor | None = None,
    names: Sequence[str] | None = None,
    p_cutoff: float = 0.6,
) -> dict[str, Any]:
    """The metrics of the module docstring for ``(M, N, 2)`` predictions and truth in pixels, ``(M, N)`` visible."""
    if pred.shape != truth.shape or pred.shape[:2] != visible.shape:
        raise ValueError(f"pred {tuple(pred.shape)}, truth {tuple(truth.shape)}, visible {tuple(visible.shape)}")
    visible = visible.bool() & torch.isfinite(truth).all(-1)
    if not bool(visible.any()):
        raise ValueError("no labelled point to evaluate on")
    error = (pred.float() - torch.nan_to_num(truth.float())).norm(dim=-1)
    e = error[visible]
    low = torch.where(visible[..., None], truth, torch.full_like(truth, math.inf)).amin(1)
    high = torch.where(visible[..., None], truth, torch.full_like(truth, -math.inf)).amax(1)
    diagonal = (high - low).norm(dim=-1).nan_to_num(0.0)  # (M,) each frame's box of labelled points
    names = list(names) if names else [str(j) for j in range(pred.shape[1])]
    result: dict[str, Any] = {
        "frames": int(pred.shape[0]),
        "points": int(visible.sum()),
        "mean_px": float(e.mean()),
        "median_px": float(e.median()),
        "pck_5px": float(pck(pred, truth, visible, threshold=5.0)),
        "pck_10px": float(pck(pred, truth, visible, threshold=10.0)),
        "pck_0.05_diagonal": float(pck(pred, truth, visible, threshold=0.05 * diagonal)),
        "per_part": {
            name: (
                {"mean_px": float(error[:, j][visible[:, j]].mean()), "points": int(visible[:, j].sum())}
                if bool(visible[:, j].any())
                else {"mean_px": None, "points": 0}
            )
            for j, name in enumerate(names)
        },
    }
    if likelihood is not None:
        kept = visible & (likelihood >= p_cutoff)
        result["p_cutoff"] = {
            "p": p_cutoff,
            "mean_px": float(error[kept].mean()) if bool(kept.any()) else None,
            "share_kept": float(kept.sum() / visible.sum()),
        }
        result["likelihood_auc_error_above_10px"] = roc_auc(1 - likelihood[visible], e > 10)
    return result


def likelihood_reliability(
    calibration, pred: Tensor, truth: Tensor, visible: Tensor, likelihood: Tensor, *, p_cutoff: float = 0.6
) -> dict[str, Any]:
    """How a calibrated likelihood holds on labelled frames: ``(M, N, 2)`` pred / truth pixels, ``(M, N)`` visible
    and likelihood (what the model returned, calibrated), under ``calibration``'s radius.

    Returns:
        ``radius`` (in words), ``p_cutoff``, ``kept_within_radius`` (the share of the points with likelihood
        ``>= p_cutoff`` whose error is within the radius: what the likelihood promises), ``within_radius_kept``
        (the share of the points within the radius that are kept), ``expected_calibration_error`` and
        ``reliability`` (10 bins: ``low``, ``high``, ``predicted``, ``observed``, ``count``); shares are ``None``
        where nothing counts.
    """
    from ..calibration import calibration_error, reliability

    truth = truth.float()
    errors = (pred.float() - torch.nan_to_num(truth)).norm(dim=-1)
    usable = calibration.usable(visible.bool() & torch.isfinite(truth).all(-1), truth)
    good = calibration.good(errors, usable, truth) & usable
    kept = usable & (likelihood >= p_cutoff)
    rows = reliability(likelihood, good, usable)

    def share(part: Tensor, whole: Tensor) -> float | None:
        return float(part.sum() / whole.sum()) if bool(whole.any()) else None

    return {
        "radius": calibration.describe(),
        "p_cutoff": p_cutoff,
        "points": int(usable.sum()),
        "kept_within_radius": share(good & kept, kept),
        "within_radius_kept": share(good & kept, good),
        "expected_calibration_error": calibration_error(rows),
        "reliability": [row._asdict() for row in rows],
    }


@torch.no_grad()
def evaluate_keypoints(
    model, data: Any, *, mean_pose: Tensor | None = None, batch_size: int = 8, p_cutoff: float = 0.6
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Run ``model.detect(..., return_scores=True)`` on every frame of ``data`` (frames at their stored sizes).

    Args:
        model: a :class:`~contrastive_landmarks.LandmarkModel` with a regressor.
        data: labelled samples (``image``, ``keypoints``, ``visible``), any sizes.
        mean_pose: the training frames' mean pose (:func:`~contrastive_landmarks.framing.mean_pose`).

    Returns:
        ``(metrics, arrays)``: the metrics (:func:`keypoint_errors`, plus ``mean_pose`` scored the same way),
        and ``pred`` / ``truth`` ``(M, N, 2)``, ``visible`` / ``likelihood`` ``(M, N)`` tensors.
    """
    from ..framing import pose_in_frames
    from ..train.finetuning import load_frames

    frames, truth, visible = load_frames(data)
    preds, scores = [], []
    for start in range(0, len(frames), batch_size):
        points, score = model.detect(frames[start : start + batch_size], return_scores=True)
        preds.append(points.float())
        scores.append(score.float())
    pred, likelihood = torch.cat(preds), torch.cat(scores)
    names = list(getattr(model, "landmark_names", ()) or getattr(data, "names", None) or [])
    metrics = keypoint_errors(pred, truth, visible, likelihood=likelihood, names=names, p_cutoff=p_cutoff)
    if getattr(model, "calibration", None) is not None:
        metrics["likelihood"] = likelihood_reliability(
            model.calibration, pred, truth, visible, likelihood, p_cutoff=p_cutoff
        )
    if mean_pose is not None:
        sizes = [tuple(f.shape[-2:]) for f in frames]
        baseline = keypoint_errors(pose_in_frames(mean_pose, sizes), truth, visible, names=names)
        metrics["mean_pose"] = {k: baseline[k] for k in ("mean_px", "median_px", "pck_5px", "pck_10px")}
    arrays = {"pred": pred, "truth": truth, "visible": visible, "likelihood": likelihood, "frames": frames}
    return metrics, arrays
