"""The linear landmark regressor of the paper (§4.1, "landmark regression"; Table 4).

Per target landmark, ``K`` bias-free ``1×1×C`` filters turn a frozen ``C``-channel representation
into ``K`` intermediate heatmaps; a spatial soft-argmax turns each heatmap into a point; a bias-free
linear map combines that landmark's own ``K`` points into its ``(x, y)``. This is the structure of
the authors' (and DVE's) ``IntermediateKeypointPredictor``.

**Initialisation and temperature.** Two named starts (``init=``):

- ``"soft"`` (default): heatmap filters ``~ N(0, 1/C)`` and softmax multiplier 1, so on features of
  unit scale (what :func:`~contrastive_landmarks.train.fit_regressor` trains on: per-channel
  standardised stage maps) every heatmap logit has a spread of about 1 over the grid and the spatial
  softmax starts *soft* (its mean peak probability at a 32² grid is about 0.01, not 0.99); each
  landmark starts as the mean of its ``K`` soft-argmax points (``combine = 1/K``). Gradients then
  reach every location from the first step, whatever ``C``.
- ``"paper"``: the authors' exact start, filters ``~ N(0, 1)`` (``torch.randn``), the grouped
  ``2K -> 2`` combination ``~ U(±1/sqrt(2K))`` (``nn.Linear(2K, 2)``'s default) and multiplier 100.
  On raw ReLU hypercolumns the logits then have a spread of about ``100·sqrt(C)``: the softmax is a
  hard argmax at initialisation and learns only through the few locations it picked, which the
  authors' protocol compensates for with hundreds of epochs. Use it to reproduce their numbers.

Whatever the start, :meth:`LandmarkRegressor.peakiness` measures how peaked the softmax is.

**Coordinate frame.** Predictions are ``(B, N, 2)`` ``(x, y)`` in the ``align_corners=False``
normalised frame of :mod:`contrastive_landmarks.coords` (``-1``/``+1`` are the image's outer edges).
The soft-argmax grid is the heatmap's *cell centres* in that frame
(:func:`~contrastive_landmarks.coords.cell_centers`), which is where bilinearly upsampled
(``align_corners=False``) features actually sit. The authors use ``linspace(-1, 1, S)`` instead while
normalising targets with ``2x/(W-1) - 1``; the two conventions disagree by a constant scale of about
1 % that their linear layer has to absorb. Here features, grid and targets share one frame.
Use :meth:`LandmarkRegressor.to_pixels` (or :meth:`~LandmarkRegressor.predict_pixels`) for pixels.

**Stage maps.** The 1×1 filters are linear and bilinear upsampling weights sum to one, so the
heatmaps of a hypercolumn equal the per-stage projections upsampled and summed
(:func:`contrastive_landmarks.ops.project_stages`). :meth:`LandmarkRegressor.forward` therefore
accepts the backbone's stage maps directly and never builds the ``C``-channel hypercolumn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .check import size_pair
from .configurable import Configurable
from .coords import cell_centers, normalized_to_pixels
from .ops import project_stages

__all__ = [
    "INITS",
    "LandmarkRegressor",
    "around_peak",
    "combine_points",
    "distribution_loss",
    "regression_loss",
    "spatial_soft_argmax",
    "spatial_softmax",
]

#: Named initialisations of :class:`LandmarkRegressor` and their default softmax multipliers.
INITS = {"soft": 1.0, "paper": 100.0}


def spatial_softmax(maps: Tensor, multiplier: float = 1.0) -> Tensor:
    """``softmax(multiplier · map)`` over all ``h·w`` locations of each map: the library's one spatial softmax.

    The regressor's heatmaps go through it (their multiplier is :attr:`LandmarkRegressor.softmax_multiplier`),
    and so does :class:`~contrastive_landmarks.SpatialProjector`'s ``"softmax"`` mode (multiplier 7 there,
    its own default), which views the result back as ``(B, M, h, w)``.

    Args:
        maps: ``(B, M, h, w)`` logits.
        multiplier: inverse temperature.

    Returns:
        ``(B, M, h·w)`` probabilities (row-major locations).
    """
    if maps.ndim != 4:
        raise ValueError(f"maps must be (B, M, h, w), got {tuple(maps.shape)}")
    b, m, h, w = maps.shape
    return torch.softmax(maps.reshape(b, m, h * w) * multiplier, dim=-1)


def _expected_points(probs: Tensor, grid: tuple[int, int]) -> Tensor:
    """``(B, M, 2)`` expected cell centres (normalised frame) of ``(B, M, h·w)`` probabilities on an ``(h, w)`` grid."""
    return probs @ cell_centers(grid, dtype=probs.dtype, device=probs.device)


def around_peak(probs: Tensor, grid: tuple[int, int], radius: int) -> Tensor:
    """``(B, M, h·w)`` probabilities kept within ``radius`` cells (Chebyshev) of each map's most probable cell and
    renormalised: a soft-argmax of them is the peak's location, not the average of two peaks.

    Args:
        probs: ``(B, M, h·w)`` spatial probabilities (row-major locations, :func:`spatial_softmax`).
        grid: ``(h, w)``.
        radius: cells each side of the peak (a ``2r+1`` square window; ``r >= max(h, w)`` keeps every cell).
    """
    h, w = grid
    peak = probs.argmax(-1, keepdim=True)  # (B, M, 1)
    # the window is a row band times a column band: (B, M, h) and (B, M, w) masks, not index arithmetic on every
    # cell (which cost a one-stage lp model 40 % of its heads' time)
    rows = (torch.arange(h, device=probs.device) - peak // w).abs() <= radius
    cols = (torch.arange(w, device=probs.device) - peak % w).abs() <= radius
    near = (rows[..., :, None] & cols[..., None, :]).reshape(probs.shape)
    local = probs * near.to(probs.dtype)
    return local / local.sum(-1, keepdim=True)


def spatial_soft_argmax(heatmaps: Tensor, multiplier: float = 1.0) -> Tensor:
    """Expected cell-centre location under ``softmax(multiplier · heatmap)`` over all locations.

    Args:
        heatmaps: ``(B, M, h, w)`` logits.
        multiplier: inverse temperature of the spatial softmax.

    Returns:
        ``(B, M, 2)`` expected ``(x, y)`` in the ``align_corners=False`` normalised frame.
    """
    return _expected_points(spatial_softmax(heatmaps, multiplier), tuple(heatmaps.shape[-2:]))


def combine_points(points: Tensor, weight: Tensor) -> Tensor:
    """Each landmark's ``(x, y)`` as a bias-free linear combination of its own ``K`` points.

    Args:
        points: ``(B, N, K, 2)`` intermediate points.
        weight: ``(N, 2, 2K)``; input order ``x_0, y_0, x_1, y_1, ...``.

    Returns:
        ``(B, N, 2)``.
    """
    b, n, k, _ = points.shape
    if weight.shape != (n, 2, 2 * k):
        raise ValueError(f"combination weight must be ({n}, 2, {2 * k}), got {tuple(weight.shape)}")
    return torch.einsum("bnk,nok->bno", points.reshape(b, n, 2 * k), weight)


class LandmarkRegressor(Configurable, nn.Module):
    """Linear landmark regressor on frozen features: 1×1 heatmaps, soft-argmax, grouped linear map.

    Args:
        in_channels: ``C``, channels of the representation (3840 for a ResNet-50 hypercolumn).
        num_landmarks: ``N``, landmarks to predict.
        heatmaps_per_landmark: ``K`` intermediate heatmaps *per landmark* (50 in the paper).
        init: ``"soft"`` (default) or ``"paper"``, see the module docstring.
        softmax_multiplier: inverse temperature of the spatial softmax (default: the init's, 1 for
            ``"soft"``, 100 for ``"paper"``).
        size: hypercolumn grid ``S`` or ``(S_h, S_w)`` used when :meth:`forward` gets stage maps
            (48, as in the paper).
        decode_window: in eval mode, each heatmap's soft-argmax reads only the cells within this many of its
            peak (:func:`around_peak`); ``None`` (the paper's, and every model written before it): all cells.
            Training always reads all cells, so that every location gets a gradient.

    Parameters: ``weight`` ``(N·K, C)`` (the 1×1 conv, heatmap ``n·K + k`` belongs to landmark
    ``n``) and ``combine`` ``(N, 2, 2K)``; ``N·K·C + 4·N·K`` in all (Table 4's "#P").

    Shape:
        - Input: a hypercolumn ``(B, C, S_h, S_w)``, or a list of stage maps ``(B, C_s, h_s, w_s)``
          with ``Σ C_s = C`` in the hypercolumn's channel order.
        - Output: ``(B, N, 2)`` normalised ``(x, y)`` (see :mod:`contrastive_landmarks.coords`).

    Example:
        >>> reg = LandmarkRegressor(3840, 5)
        >>> sum(p.numel() for p in reg.parameters())
        961000
    """

    config_fields = (
        "in_channels",
        "num_landmarks",
        "heatmaps_per_landmark",
        "init",
        "softmax_multiplier",
        "size",
        "decode_window",
    )

    def __init__(
        self,
        in_channels: int,
        num_landmarks: int,
        heatmaps_per_landmark: int = 50,
        *,
        init: str = "soft",
        softmax_multiplier: float | None = None,
        size: int | Sequence[int] = 48,
        decode_window: int | None = None,
    ) -> None:
        super().__init__()
        if decode_window is not None and (not isinstance(decode_window, int) or decode_window < 0):
            raise ValueError(f"decode_window must be None or a non-negative int, got {decode_window!r}")
        self.decode_window = decode_window
        for name, value in (
            ("in_channels", in_channels),
            ("num_landmarks", num_landmarks),
            ("heatmaps_per_landmark", heatmaps_per_landmark),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {sorted(INITS)}, got {init!r}")
        if softmax_multiplier is None:
            softmax_multiplier = INITS[init]
        if not softmax_multiplier > 0:
            raise ValueError(f"softmax_multiplier must be positive, got {softmax_multiplier}")
        self.in_channels = in_channels
        self.num_landmarks = num_landmarks
        self.heatmaps_per_landmark = heatmaps_per_landmark
        self.init = init
        self.softmax_multiplier = float(softmax_multiplier)
        self.size = size_pair(size)
        self.weight = nn.Parameter(torch.empty(num_landmarks * heatmaps_per_landmark, in_channels))
        self.combine = nn.Parameter(torch.empty(num_landmarks, 2, 2 * heatmaps_per_landmark))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialise as :attr:`init` says (module docstring).

        ``"soft"``: ``weight ~ N(0, 1/C)``, each landmark the mean of its ``K`` points. ``"paper"``:
        ``weight ~ N(0, 1)``, ``combine ~ U(±1/sqrt(2K))``.

        Args:
            generator: optional CPU generator, for a reproducible init.
        """
        k = self.heatmaps_per_landmark
        with torch.no_grad():
            w = torch.randn(self.weight.shape, generator=generator, dtype=torch.float64)
            if self.init == "paper":
                bound = 1.0 / math.sqrt(2 * k)
                c = torch.rand(self.combine.shape, generator=generator, dtype=torch.float64) * (2 * bound) - bound
            else:
                w = w / math.sqrt(self.in_channels)
                c = torch.zeros(self.combine.shape, dtype=torch.float64)
                c[:, 0, 0::2] = 1.0 / k
                c[:, 1, 1::2] = 1.0 / k
            self.weight.copy_(w)
            self.combine.copy_(c)

    def heatmaps(self, features: Tensor | Sequence[Tensor], size: int | Sequence[int] | None = None) -> Tensor:
        """The ``N·K`` intermediate heatmap logits, ``(B, N·K, S_h, S_w)``.

        Args:
            features: hypercolumn ``(B, C, S_h, S_w)`` or list of stage maps.
            size: grid for stage maps (default :attr:`size`); ignored for a hypercolumn.
        """
        if isinstance(features, Tensor):
            if features.ndim != 4 or features.shape[1] != self.in_channels:
                raise ValueError(
                    f"expected a hypercolumn of shape (B, {self.in_channels}, S_h, S_w), got {tuple(features.shape)}"
                )
            weight = self.weight.to(features.dtype)
            return F.conv2d(features, weight[:, :, None, None])
        if not isinstance(features, Sequence) or not all(isinstance(m, Tensor) for m in features):
            raise TypeError(
                "features must be a hypercolumn tensor (B, C, S_h, S_w) or a list of stage map tensors, "
                f"got {type(features).__name__}"
            )
        channels = sum(m.shape[1] for m in features) if features else 0
        if channels != self.in_channels:
            raise ValueError(
                f"stage maps have {channels} channels in all ({[m.shape[1] for m in features]}) "
                f"but the regressor expects {self.in_channels}"
            )
        grid = self.size if size is None else size_pair(size)
        return project_stages(list(features), self.weight.to(features[0].dtype), None, grid)

    def forward(self, features: Tensor | Sequence[Tensor], size: int | Sequence[int] | None = None) -> Tensor:
        """Predict landmarks, ``(B, N, 2)`` in the normalised frame (see the class docstring)."""
        return self.decode(self.heatmaps(features, size))

    def decode(self, heatmaps: Tensor) -> Tensor:
        """Landmarks ``(B, N, 2)`` (normalised frame) from the ``(B, N·K, S_h, S_w)`` heatmap logits."""
        return self.decode_steps(heatmaps)[0]

    def decode_steps(self, heatmaps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`decode` and the steps on its way, from the ``(B, N·K, S_h, S_w)`` heatmap logits.

        The regressor's one decoding: training, validation and prediction
        (:func:`~contrastive_landmarks.regression.regress`) all read their landmarks through it.

        Returns:
            ``(landmarks, points, probs)``: the ``(B, N, 2)`` landmarks (normalised frame), each heatmap's
            soft-argmax point ``(B, N, K, 2)`` that :attr:`combine` maps to them (around its peak in eval mode
            with a :attr:`decode_window`), and each heatmap's spatial softmax ``(B, N·K, S_h·S_w)``
            (:func:`spatial_softmax` at :attr:`softmax_multiplier`, all cells).
        """
        probs = spatial_softmax(heatmaps, self.softmax_multiplier)  # (B, N*K, S_h*S_w)
        grid = tuple(heatmaps.shape[-2:])
        window = self.decode_window is not None and not self.training
        points = _expected_points(around_peak(probs, grid, self.decode_window) if window else probs, grid)
        points = points.reshape(points.shape[0], self.num_landmarks, self.heatmaps_per_landmark, 2)
        return combine_points(points, self.combine.to(points.dtype)), points, probs

    def peakiness(self, features: Tensor | Sequence[Tensor], size: int | Sequence[int] | None = None) -> Tensor:
        """How peaked each landmark's spatial softmax is: the largest location probability of each
        heatmap, averaged over the landmark's ``K`` heatmaps, ``(B, N)`` in ``(0, 1]``.

        ``1/(S_h·S_w)`` is a uniform softmax, ``1`` a hard argmax (the authors' start on raw features).
        """
        return self.heatmap_peakiness(self.heatmaps(features, size))

    def heatmap_peakiness(self, heatmaps: Tensor) -> Tensor:
        """:meth:`peakiness` from the ``(B, N·K, S_h, S_w)`` heatmap logits, ``(B, N)``."""
        peak = spatial_softmax(heatmaps, self.softmax_multiplier).amax(-1)  # (B, N*K)
        return peak.reshape(peak.shape[0], self.num_landmarks, self.heatmaps_per_landmark).mean(-1)

    @staticmethod
    def to_pixels(pred: Tensor, image_size: int | Sequence[int]) -> Tensor:
        """Normalised predictions ``(..., 2)`` to ``(x, y)`` pixels of an image of ``image_size = (H, W)``."""
        return normalized_to_pixels(pred, size_pair(image_size))

    def predict_pixels(
        self,
        features: Tensor | Sequence[Tensor],
        image_size: int | Sequence[int],
        size: int | Sequence[int] | None = None,
    ) -> Tensor:
        """:meth:`forward` followed by :meth:`to_pixels`: ``(B, N, 2)`` pixel ``(x, y)``."""
        return self.to_pixels(self(features, size), image_size)


def regression_loss(pred: Tensor, target: Tensor, visible: Tensor | None = None, *, scale: float = 10.0) -> Tensor:
    """Smooth-L1 on ``scale``-times normalised coordinates, averaged over visible coordinates.

    ``F.smooth_l1_loss(10 · pred, 10 · target)``, i.e. a Huber loss with ``δ = 0.1`` in normalised
    units, as the authors. Invisible points count neither in the sum nor in the number of terms
    (the authors' bird loss zeroes them in place but keeps them in the denominator). Inputs are
    never modified; non-finite targets of invisible points are allowed and give no gradient.

    Args:
        pred: ``(B, N, 2)`` predictions in the normalised frame.
        target: ``(B, N, 2)`` targets in the same frame.
        visible: optional ``(B, N)`` bool mask.
        scale: coordinate multiplier (the authors' ``alpha = 10``).

    Returns:
        Scalar loss (zero, still attached to ``pred``, when no point is visible).
    """
    if pred.shape != target.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred and target must both be (B, N, 2), got {tuple(pred.shape)} and {tuple(target.shape)}")
    target = target.to(pred.dtype)
    if visible is None:
        return F.smooth_l1_loss(pred * scale, target * scale)
    if visible.shape != pred.shape[:2]:
        raise ValueError(f"visible must be (B, N) = {tuple(pred.shape[:2])}, got {tuple(visible.shape)}")
    mask = visible.to(torch.bool).unsqueeze(-1).expand_as(pred)
    safe_target = torch.where(mask, target, pred.detach())  # invisible: zero loss and zero gradient
    per_coord = F.smooth_l1_loss(pred * scale, safe_target * scale, reduction="none")
    count = mask.sum()
    return torch.where(mask, per_coord, torch.zeros_like(per_coord)).sum() / count.clamp_min(1)


def distribution_loss(
    probs: Tensor, target: Tensor, visible: Tensor, grid: tuple[int, int], sigma: float = 1.0
) -> Tensor:
    """Cross-entropy of each heatmap's spatial softmax against a Gaussian at its landmark (DSNT's regulariser).

    Soft-argmax regression alone only asks each heatmap's *mean* to be right; this asks its mass to sit at the
    target too (Nibali et al. 2018, "Numerical coordinate regression with convolutional neural networks"), which
    gives every location a gradient and trains much faster from few labels.

    Args:
        probs: ``(B, N·K, h·w)`` spatial softmax of the ``K`` heatmaps of each of ``N`` landmarks.
        target: ``(B, N, 2)`` normalised targets; ``visible``: ``(B, N)``.
        grid: ``(h, w)``; ``sigma``: the Gaussian's standard deviation in grid cells.

    Returns:
        the mean over visible landmarks and their ``K`` heatmaps of ``-Σ q log p`` (``q`` the normalised Gaussian).
    """
    b, n = target.shape[:2]
    k = probs.shape[1] // n
    centres = cell_centers(tuple(grid), dtype=probs.dtype, device=probs.device)  # (h*w, 2) normalised
    cell = centres.new_tensor([2.0 / grid[1], 2.0 / grid[0]])
    offsets = (centres[None, None] - target.to(probs.dtype)[:, :, None]) / cell  # (B, N, h*w, 2) in cells
    q = torch.softmax(-0.5 * offsets.pow(2).sum(-1) / sigma**2, dim=-1)  # (B, N, h*w)
    log_p = probs.clamp_min(1e-12).log().reshape(b, n, k, -1)
    per_map = -(q[:, :, None] * log_p).sum(-1).mean(-1)  # (B, N)
    mask = visible.bool()
    return (per_map * mask).sum() / mask.sum().clamp_min(1)
