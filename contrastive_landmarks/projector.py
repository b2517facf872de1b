"""The spatial projector of §3.2: a location-wise linear map of the frozen hypercolumn.

``Φ'_u(x) = wᵀ Φ_u(x)`` with ``w ∈ R^{C×d}``, ``d ≪ C``: a 1×1 convolution (with bias, as the
authors' ``FeatDistiller``). Being location-wise it keeps spatial equivariance; it is trained so
that the projected descriptors are spatially distinct within an image, with the Eq. 3 loss for
``x' = x``: :func:`contrastive_landmarks.losses.spatial_contrastive_loss` (written separately).

Two output modes:

- ``"linear"`` (default): the plain projection of the paper.
- ``"softmax"``: the authors' released variant, a softmax over *spatial locations* per output
  channel (multiplier 7; the library's one :func:`~contrastive_landmarks.regressor.spatial_softmax`), so
  each channel is a spatial heatmap and the descriptor at ``u`` is the vector of the ``d`` heatmap values
  at ``u``. Their code comments say it "works the best".

Like :class:`~contrastive_landmarks.regressor.LandmarkRegressor`, it accepts either a
hypercolumn or the backbone's stage maps; for stage maps the projection runs per stage at native
resolution and is then upsampled and summed (:func:`contrastive_landmarks.ops.project_stages`),
which equals projecting the hypercolumn exactly (the softmax comes after, on the ``d`` channels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .check import size_pair
from .configurable import Configurable
from .ops import project_stages
from .regressor import spatial_softmax

__all__ = ["PROJECTOR_MODES", "SpatialProjector"]

PROJECTOR_MODES = ("linear", "softmax")


class SpatialProjector(Configurable, nn.Module):
    """Location-wise linear projection ``C -> dim`` of a hypercolumn (paper §3.2).

    Args:
        in_channels: ``C`` (3840 for a ResNet-50 hypercolumn).
        dim: output dimension ``d`` (256 in Table 1; the authors' code defaults to 64 and releases 128).
        mode: ``"linear"`` or ``"softmax"`` (spatial softmax per output channel, see the module docs).
        softmax_multiplier: inverse temperature of the ``"softmax"`` mode (7 in the authors' code).
        size: grid ``S`` or ``(S_h, S_w)`` used when :meth:`forward` gets stage maps (default 48).

    Parameters ``weight`` ``(dim, C)`` and ``bias`` ``(dim,)``, initialised as ``nn.Conv2d``'s default.
    Train it with :func:`contrastive_landmarks.losses.spatial_contrastive_loss` on its output
    (``feats2=None``: Eq. 3 with ``x' = x``).

    Shape:
        - Input: ``(B, C, S_h, S_w)`` or a list of stage maps ``(B, C_s, h_s, w_s)`` with ``Σ C_s = C``.
        - Output: ``(B, dim, S_h, S_w)``.
    """

    config_fields = ("in_channels", "dim", "mode", "softmax_multiplier", "size")

    def __init__(
        self,
        in_channels: int,
        dim: int = 256,
        *,
        mode: str = "linear",
        softmax_multiplier: float = 7.0,
        size: int | Sequence[int] = 48,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("dim", dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if mode not in PROJECTOR_MODES:
            raise ValueError(f"mode must be one of {PROJECTOR_MODES}, got {mode!r}")
        if not softmax_multiplier > 0:
            raise ValueError(f"softmax_multiplier must be positive, got {softmax_multiplier}")
        self.in_channels = in_channels
        self.dim = dim
        self.mode = mode
        self.softmax_multiplier = float(softmax_multiplier)
        self.size = size_pair(size)
        self.weight = nn.Parameter(torch.empty(dim, in_channels))
        self.bias = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """``nn.Conv2d``'s default init (uniform, bound ``1/sqrt(C)`` for weight and bias)."""
        bound = 1.0 / math.sqrt(self.in_channels)
        with torch.no_grad():
            for p in (self.weight, self.bias):
                p.copy_(torch.rand(p.shape, generator=generator, dtype=torch.float64) * (2 * bound) - bound)

    def project(self, features: Tensor | Sequence[Tensor], size: int | Sequence[int] | None = None) -> Tensor:
        """The linear projection alone (before any softmax), ``(B, dim, S_h, S_w)``."""
        if isinstance(features, Tensor):
            if features.ndim != 4 or features.shape[1] != self.in_channels:
                raise ValueError(
                    f"expected a hypercolumn of shape (B, {self.in_channels}, S_h, S_w), got {tuple(features.shape)}"
                )
            return F.conv2d(features, self.weight.to(features.dtype)[:, :, None, None], self.bias.to(features.dtype))
        if not isinstance(features, Sequence) or not all(isinstance(m, Tensor) for m in features):
            raise TypeError(
                "features must be a hypercolumn tensor (B, C, S_h, S_w) or a list of stage map tensors, "
                f"got {type(features).__name__}"
            )
        channels = sum(m.shape[1] for m in features) if features else 0
        if channels != self.in_channels:
            raise ValueError(
                f"stage maps have {channels} channels in all ({[m.shape[1] for m in features]}) "
                f"but the projector expects {self.in_channels}"
            )
        dtype = features[0].dtype
        grid = self.size if size is None else size_pair(size)
        return project_stages(list(features), self.weight.to(dtype), self.bias.to(dtype), grid)

    def forward(self, features: Tensor | Sequence[Tensor], size: int | Sequence[int] | None = None) -> Tensor:
        out = self.project(features, size)
        if self.mode == "softmax":  # each channel a spatial heatmap, (B, dim, S_h, S_w) again
            out = spatial_softmax(out, self.softmax_multiplier).view_as(out)
        return out
