"""A calibrated likelihood: a landmark's raw score mapped to the probability that the point is right.

:func:`~contrastive_landmarks.pipeline.landmark_scores` ranks points well (high on good points, low on bad
ones) but its scale means nothing in itself: on fine-tuned animal models its median is 0.45-0.61 and most
correct points fall below DeepLabCut's p-cutoff of 0.6. A :class:`LikelihoodCalibration` maps it to

    likelihood = P(error <= radius | raw score)

fitted on held-out labelled frames (:func:`fit_likelihood` on arrays, :func:`fit_calibration` on a model and its
validation frames), so that "likelihood >= 0.6" keeps points that are right at least about 60 % of the time.

**The radius.** By default 5 % of the diagonal of the labelled animal's bounding box (the box of the frame's
labelled points), :data:`DEFAULT_FRACTION`: the criterion ``evaluate`` reports as ``pck_0.05_diagonal``, which
follows the animal's size in frames of any resolution. A fixed radius in pixels of the frame (``radius=8.0``)
replaces it where the user thinks in pixels. Frames with fewer than two distinct labelled points have no box and
do not count towards a relative radius.

**The mapping.** A logistic fit on ``logit(score)`` (Platt scaling), ``likelihood = sigmoid(a · logit(s) + b)``
with ``a >= 0``:

- monotone by construction: a higher raw score never gets a lower likelihood;
- two numbers per landmark, which a fine-tuning project's validation frames can pin down: they hold tens to a few
  hundred points (``dlc-reaching``: about 8 frames of 5 parts; ``lp-mirror-mouse``: about 11 frames of 17), where
  isotonic regression (pool-adjacent-violators) is a staircase with as many steps as the data allows and is known
  to overfit below about a thousand points (Niculescu-Mizil & Caruana, ICML 2005);
- Platt's smoothed targets (``(n_good + 1) / (n_good + 2)`` for good points, ``1 / (n_bad + 2)`` for bad ones)
  keep it finite when the validation points are all good or cleanly separated, instead of claiming certainty;
- where the validation points are all good (or all bad) there is no slope to learn: the mapping keeps the raw
  score's own (``a = 1``) and shifts it so that its mean is the smoothed share, so that the points keep their
  order (a model whose validation points all fall within the radius, as pose relations made on
  ``lp-mirror-mouse``, would otherwise give every point the same likelihood).

Each landmark gets its own fit when it has at least :data:`MIN_POINTS` labelled validation points with at least
:data:`MIN_EACH` good and :data:`MIN_EACH` bad ones; the others share one fit on all points (body parts differ in
how hard they are, but a handful of points cannot say by how much).

:meth:`LikelihoodCalibration.reliability` (and :func:`reliability` on booleans) bins predicted likelihoods and
compares them with the observed share of good points, for ``evaluate``'s report on test frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_FRACTION",
    "LikelihoodCalibration",
    "ReliabilityRow",
    "animal_diagonal",
    "calibration_error",
    "fit_calibration",
    "fit_likelihood",
    "reliability",
]

#: The default radius: this fraction of the diagonal of the labelled points' bounding box in each frame.
DEFAULT_FRACTION = 0.05
#: A landmark gets its own fit with at least this many labelled points...
MIN_POINTS = 100
#: ... of which at least this many good and this many bad; otherwise it uses the shared fit.
MIN_EACH = 10
#: Raw scores are clamped to ``[EPS, 1 - EPS]`` before the logit.
EPS = 1e-4


class ReliabilityRow(NamedTuple):
    """One likelihood bin of a reliability table.

    Attributes:
        low, high: the bin's likelihood range (``[low, high)``; the last bin includes 1).
        predicted: the mean likelihood of the points in it (``None`` when empty).
        observed: the share of them within the radius (``None`` when empty).
        count: how many labelled points fall in it.
    """

    low: float
    high: float
    predicted: float | None
    observed: float | None
    count: int


def animal_diagonal(keypoints: Tensor, visible: Tensor) -> Tensor:
    """The diagonal of each frame's labelled-point bounding box, ``(M,)`` pixels; NaN with no box.

    Args:
        keypoints: ``(M, N, 2)`` labelled points, pixels of each frame (NaN where unlabelled).
        visible: ``(M, N)`` bool.

    Returns:
        ``(M,)``: NaN for frames with fewer than two distinct labelled points.
    """
    _check_points(keypoints, visible)
    mask = visible.bool() & torch.isfinite(keypoints).all(-1)
    points = keypoints.double()
    low = torch.where(mask[..., None], points, torch.full_like(points, math.inf)).amin(1)
    high = torch.where(mask[..., None], points, torch.full_like(points, -math.inf)).amax(1)
    diagonal = (high - low).norm(dim=-1)
    return torch.where(torch.isfinite(diagonal) & (diagonal > 0), diagonal, torch.full_like(diagonal, math.nan))


def reliability(
    likelihood: Tensor, good: Tensor, visible: Tensor | None = None, bins: int = 10
) -> list[ReliabilityRow]:
    """Predicted against observed share of good points, per equal-width likelihood bin.

    Args:
        likelihood: ``(M, N)`` (any shape) in ``[0, 1]``.
        good: the same shape, bool: the point is within the radius.
        visible: the same shape, bool: the points to count (``None``: all).
        bins: the number of bins over ``[0, 1]``.

    Returns:
        ``bins`` :class:`ReliabilityRow` rows, empty ones included (``predicted`` / ``observed`` ``None``).
    """
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    if likelihood.shape != good.shape or (visible is not None and visible.shape != good.shape):
        shapes = [tuple(t.shape) for t in (likelihood, good, visible) if t is not None]
        raise ValueError(f"likelihood, good and visible must have one shape, got {shapes}")
    mask = torch.isfinite(likelihood) if visible is None else visible.bool() & torch.isfinite(likelihood)
    p, g = likelihood[mask].double(), good[mask].bool()
    index = (p * bins).floor().clamp(0, bins - 1).long()
    rows = []
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        rows.append(
            ReliabilityRow(
                b / bins,
                (b + 1) / bins,
                float(p[inside].mean()) if count else None,
                float(g[inside].double().mean()) if count else None,
                count,
            )
        )
    return rows


def calibration_error(rows: Sequence[ReliabilityRow]) -> float:
    """The expected calibration error of a reliability table: ``Σ count · |predicted - observed| / Σ count``."""
    total = sum(row.count for row in rows)
    if total == 0:
        return math.nan
    return sum(row.count * abs(row.predicted - row.observed) for row in rows if row.count) / total


def _logit(scores: Tensor) -> Tensor:
    s = scores.clamp(EPS, 1 - EPS)
    return torch.log(s) - torch.log1p(-s)


def _platt(x: Tensor, good: Tensor, iterations: int = 100) -> tuple[float, float]:
    """``(a, b)`` with ``a >= 0`` minimising the cross-entropy of ``sigmoid(a x + b)`` to Platt's smoothed targets."""
    x, good = x.double(), good.bool()
    n_good, n_bad = int(good.sum()), int((~good).sum())
    target = torch.where(good, (n_good + 1.0) / (n_good + 2.0), 1.0 / (n_bad + 2.0))
    if n_good == 0 or n_bad == 0:  # no slope to learn: the raw score's own, shifted to the smoothed base rate
        return 1.0, _offset_to_rate(x, float(target.mean()))
    centre, scale = x.mean(), x.std().clamp_min(1e-6)
    z = (x - centre) / scale  # standardised, so that Newton's steps are well scaled
    design = torch.stack([z, torch.ones_like(z)], -1)  # (P, 2)
    theta = torch.tensor([0.0, float(_logit(target.mean().reshape(1)))], dtype=torch.float64)
    ridge = torch.diag(torch.tensor([1e-6, 0.0], dtype=torch.float64)) * len(z)
    for _ in range(iterations):
        p = torch.sigmoid(design @ theta)
        gradient = design.T @ (p - target) + ridge @ theta
        hessian = (design.T * (p * (1 - p))) @ design + ridge + 1e-12 * torch.eye(2, dtype=torch.float64)
        step = torch.linalg.solve(hessian, gradient)
        theta = theta - step
        if float(step.abs().max()) < 1e-10:
            break
    slope, intercept = float(theta[0]), float(theta[1])
    if slope < 0:  # scores that rank points the wrong way: no information, the base rate
        return 0.0, float(_logit(target.mean().reshape(1)))
    return slope / float(scale), intercept - slope * float(centre) / float(scale)


def _offset_to_rate(x: Tensor, rate: float, iterations: int = 60) -> float:
    """``b`` with ``mean(sigmoid(x + b)) = rate`` (bisection; the mean is increasing in ``b``)."""
    low, high = -50.0 - float(x.max()), 50.0 - float(x.min())
    for _ in range(iterations):
        middle = (low + high) / 2
        low, high = (middle, high) if float(torch.sigmoid(x + middle).mean()) < rate else (low, middle)
    return (low + high) / 2


def _check_points(keypoints: Tensor, visible: Tensor) -> None:
    if keypoints.ndim != 3 or keypoints.shape[-1] != 2 or tuple(visible.shape) != tuple(keypoints.shape[:2]):
        raise ValueError(
            f"keypoints must be (M, N, 2) and visible (M, N), got {tuple(keypoints.shape)} and {tuple(visible.shape)}"
        )


class LikelihoodCalibration:
    """The fitted mapping from raw scores to ``P(error <= radius)``, per landmark (see the module docs).

    Args:
        coefficients: ``N`` ``(a, b)`` pairs: landmark ``n``'s likelihood is ``sigmoid(a · logit(s) + b)``.
        radius: the fixed radius in pixels of the frame, or ``None`` for ``fraction`` of the animal's diagonal.
        fraction: the relative radius (used when ``radius`` is ``None``).
        own_fit: ``N`` bools: whether landmark ``n`` has its own fit (else the shared one).
        points: ``N`` counts of the labelled points each landmark was fitted on (for reports).
        good_share: ``N`` shares of those within the radius.

    Shape:
        ``__call__``: raw scores ``(..., N)`` in ``[0, 1]`` -> likelihood ``(..., N)`` in ``(0, 1)``, same dtype.
    """

    def __init__(
        self,
        coefficients: Sequence[Sequence[float]],
        *,
        radius: float | None = None,
        fraction: float | None = DEFAULT_FRACTION,
        own_fit: Sequence[bool] | None = None,
        points: Sequence[int] | None = None,
        good_share: Sequence[float | None] | None = None,
    ) -> None:
        pairs = [tuple(float(v) for v in pair) for pair in coefficients]
        if not pairs or any(len(pair) != 2 or not all(math.isfinite(v) for v in pair) for pair in pairs):
            raise ValueError(f"coefficients must be N >= 1 finite (a, b) pairs, got {coefficients!r}")
        if any(a < 0 for a, _ in pairs):
            raise ValueError(f"calibration slopes must be >= 0 (a monotone mapping), got {[a for a, _ in pairs]}")
        if radius is None and (fraction is None or not fraction > 0):
            raise ValueError(f"a likelihood needs a radius in pixels or a positive fraction, got fraction={fraction}")
        if radius is not None and not radius > 0:
            raise ValueError(f"radius must be a positive number of pixels, got {radius}")
        n = len(pairs)
        self.coefficients = pairs
        self.radius = None if radius is None else float(radius)
        self.fraction = None if radius is not None else float(fraction)
        self.own_fit = [bool(v) for v in own_fit] if own_fit is not None else [False] * n
        self.points = [int(v) for v in points] if points is not None else [0] * n
        self.good_share = list(good_share) if good_share is not None else [None] * n
        if not len(self.own_fit) == len(self.points) == len(self.good_share) == n:
            raise ValueError(f"own_fit, points and good_share must have one entry per landmark ({n})")

    @property
    def num_landmarks(self) -> int:
        return len(self.coefficients)

    def __call__(self, scores: Tensor) -> Tensor:
        """Raw scores ``(..., N)`` -> likelihood ``(..., N)``."""
        if scores.ndim < 1 or scores.shape[-1] != self.num_landmarks:
            raise ValueError(
                f"scores must be (..., {self.num_landmarks}) for this calibration's {self.num_landmarks} landmarks, "
                f"got {tuple(scores.shape)}"
            )
        ab = torch.tensor(self.coefficients, dtype=torch.float64, device=scores.device)
        x = _logit(scores.double())
        return torch.sigmoid(ab[:, 0] * x + ab[:, 1]).to(scores.dtype)

    def describe(self) -> str:
        """The radius in words, e.g. ``"within 5 % of the animal's box diagonal"``."""
        if self.radius is not None:
            return f"within {self.radius:g} px"
        return f"within {100 * self.fraction:g} % of the animal's box diagonal"

    def radii(self, truth: Tensor | None, visible: Tensor | None, shape: Sequence[int] | None = None) -> Tensor:
        """The radius of each point, ``(M, N)`` pixels (NaN where a relative radius has no box).

        Args:
            truth: ``(M, N, 2)`` labelled points (needed for a relative radius).
            visible: ``(M, N)`` bool.
            shape: ``(M, N)`` when ``truth`` is ``None`` (a fixed radius).
        """
        if self.radius is not None:
            shape = tuple(truth.shape[:2]) if truth is not None else tuple(shape)
            return torch.full(shape, self.radius, dtype=torch.float64)
        if truth is None or visible is None:
            raise ValueError(
                f"this likelihood is relative ({self.describe()}): pass the labelled points (truth) to measure it"
            )
        return (self.fraction * animal_diagonal(truth, visible))[:, None].expand(truth.shape[:2])

    def good(self, errors: Tensor, visible: Tensor, truth: Tensor | None = None) -> Tensor:
        """``(M, N)`` bool: the point's error is within its radius (``False`` where it has none)."""
        radii = self.radii(truth, visible, errors.shape)
        return (errors.double() <= radii.to(errors.device)) & torch.isfinite(radii).to(errors.device)

    def usable(self, visible: Tensor, truth: Tensor | None = None) -> Tensor:
        """``(M, N)`` bool: labelled points that have a radius (a relative radius needs a box)."""
        radii = self.radii(truth, visible, visible.shape)
        return visible.bool() & torch.isfinite(radii).to(visible.device)

    def reliability(
        self, likelihood: Tensor, errors: Tensor, visible: Tensor, bins: int = 10, *, truth: Tensor | None = None
    ) -> list[ReliabilityRow]:
        """:func:`reliability` of ``(M, N)`` likelihoods against pixel ``errors`` under this calibration's radius.

        Args:
            likelihood: ``(M, N)`` what ``detect(..., return_scores=True)`` returned.
            errors: ``(M, N)`` pixel distances to the labelled points.
            visible: ``(M, N)`` labelled points.
            bins: equal-width bins over ``[0, 1]``.
            truth: ``(M, N, 2)`` the labelled points (needed for a relative radius).
        """
        return reliability(likelihood, self.good(errors, visible, truth), self.usable(visible, truth), bins)

    @property
    def config(self) -> dict[str, Any]:
        """JSON-serialisable description (``config.json``'s ``likelihood`` section); :meth:`from_config` reads it."""
        return {
            "method": "platt",
            "radius_px": self.radius,
            "radius_fraction_of_diagonal": self.fraction,
            "coefficients": [list(pair) for pair in self.coefficients],
            "own_fit": list(self.own_fit),
            "points": list(self.points),
            "good_share": list(self.good_share),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LikelihoodCalibration:
        if config.get("method") != "platt":
            raise ValueError(f"unknown likelihood calibration method {config.get('method')!r} (expected 'platt')")
        return cls(
            config["coefficients"],
            radius=config.get("radius_px"),
            fraction=config.get("radius_fraction_of_diagonal"),
            own_fit=config.get("own_fit"),
            points=config.get("points"),
            good_share=config.get("good_share"),
        )

    def __repr__(self) -> str:
        own = sum(self.own_fit)
        return f"LikelihoodCalibration({self.describe()}, {self.num_landmarks} landmarks, {own} with their own fit)"


def fit_likelihood(
    scores: Tensor,
    errors: Tensor,
    visible: Tensor,
    *,
    radius: float | None = None,
    fraction: float = DEFAULT_FRACTION,
    truth: Tensor | None = None,
    min_points: int = MIN_POINTS,
    min_each: int = MIN_EACH,
) -> LikelihoodCalibration:
    """Fit the raw-score -> ``P(error <= radius)`` mapping on validation predictions (see the module docs).

    Args:
        scores: ``(M, N)`` raw scores (:func:`~contrastive_landmarks.pipeline.landmark_scores`) in ``[0, 1]``.
        errors: ``(M, N)`` distances of the predicted points to the labelled ones, pixels of each frame.
        visible: ``(M, N)`` bool, the labelled points.
        radius: a fixed radius in pixels; ``None``: ``fraction`` of each frame's animal diagonal (needs ``truth``).
        fraction: the relative radius.
        truth: ``(M, N, 2)`` the labelled points (for a relative radius).
        min_points, min_each: what a landmark needs for its own fit (:data:`MIN_POINTS`, :data:`MIN_EACH`).

    Returns:
        a :class:`LikelihoodCalibration` for the ``N`` landmarks.

    Raises:
        ValueError: mismatched shapes, or no labelled point with a radius to fit on.
    """
    if scores.ndim != 2 or scores.shape != errors.shape or scores.shape != visible.shape:
        raise ValueError(
            f"scores, errors and visible must all be (M, N), got {tuple(scores.shape)}, {tuple(errors.shape)} and "
            f"{tuple(visible.shape)}"
        )
    if truth is not None:
        _check_points(truth, visible)
    shape = LikelihoodCalibration([(1.0, 0.0)] * scores.shape[1], radius=radius, fraction=fraction)
    visible = visible.bool().cpu() & torch.isfinite(scores).cpu() & torch.isfinite(errors).cpu()
    truth = None if truth is None else truth.cpu()
    usable = shape.usable(visible, truth)
    if not bool(usable.any()):
        why = "" if radius is not None else " (a relative radius needs frames with two or more labelled points)"
        raise ValueError(f"no labelled point to calibrate the likelihood on{why}")
    good = shape.good(errors.cpu(), visible, truth)
    x = _logit(scores.detach().cpu().double())
    shared = _platt(x[usable], good[usable])
    coefficients, own_fit, points, shares = [], [], [], []
    for n in range(scores.shape[1]):
        mask = usable[:, n]
        count, n_good = int(mask.sum()), int((good[:, n] & mask).sum())
        own = count >= min_points and n_good >= min_each and count - n_good >= min_each
        coefficients.append(_platt(x[mask, n], good[mask, n]) if own else shared)
        own_fit.append(own)
        points.append(count)
        shares.append(n_good / count if count else None)
    return LikelihoodCalibration(
        coefficients, radius=radius, fraction=fraction, own_fit=own_fit, points=points, good_share=shares
    )


@torch.no_grad()
def fit_calibration(
    model,
    frames: Tensor | Sequence[Tensor],
    keypoints: Tensor,
    visible: Tensor,
    *,
    radius: float | None = None,
    fraction: float = DEFAULT_FRACTION,
    batch_size: int = 8,
    attach: bool = True,
) -> LikelihoodCalibration:
    """Run ``model`` on labelled validation frames, fit its likelihood, and (``attach``) give it to the model.

    Args:
        model: a :class:`~contrastive_landmarks.LandmarkModel` with a regressor (its raw scores are used, whatever
            calibration it holds already).
        frames: ``M`` frames, ``(M, 3, H, W)`` or a list of ``(3, H_i, W_i)`` in ``[0, 1]`` (or ``uint8``), at their
            own sizes, as :meth:`~contrastive_landmarks.LandmarkModel.detect` takes them. Never the test frames.
        keypoints: ``(M, N, 2)`` labelled points, pixels of each frame.
        visible: ``(M, N)`` bool.
        radius, fraction: see :func:`fit_likelihood`.
        batch_size: frames per ``detect`` call.
        attach: set ``model.calibration`` to the result (saved by ``save_pretrained``).

    Returns:
        the :class:`LikelihoodCalibration`.
    """
    from .pipeline import landmark_scores

    _check_points(keypoints, visible)
    if len(frames) != keypoints.shape[0]:
        raise ValueError(f"{len(frames)} frames but {keypoints.shape[0]} sets of keypoints")
    if len(frames) == 0:
        raise ValueError("no validation frames to calibrate the likelihood on")
    model.eval()
    points, scores = [], []
    for start in range(0, len(frames), batch_size):
        result = model.regression(frames[start : start + batch_size])
        points.append(result.points.float().cpu())
        scores.append(landmark_scores(result).float().cpu())
    pred, raw = torch.cat(points), torch.cat(scores)
    truth = keypoints.float().cpu()
    errors = (pred - torch.nan_to_num(truth)).norm(dim=-1)
    calibration = fit_likelihood(raw, errors, visible.cpu(), radius=radius, fraction=fraction, truth=truth)
    if attach:
        model.calibration = calibration
    return calibration
