"""Landmarks that move together: each coordinate also read off its best partner, a line learned from the labels.

On ``lp-mirror-mouse`` every paw is seen twice, from the side and in the mirror below, at the same ``x``: the
mirror view tells left from right, the side view hardly does, and with ten labelled frames the side-view paws land
20-50 px along the floor from the truth where their mirrored twins are right. No image feature says that the two
are one paw; ten labelled poses do. :class:`PoseRelations` finds such relations in the labelled poses themselves:

- **fit** (:meth:`PoseRelations.fit`): for each coordinate (``x`` or ``y`` of a landmark) and each coordinate of
  another landmark, the least-squares line predicting the first from the second over the frames labelling both; the
  best partner is the one whose line has the smallest *leave-one-out* RMS error (closed form, the hat matrix's
  diagonal), and the relation is kept when that error is at most ``max_ratio`` of the coordinate's own spread;
- **apply** (:meth:`PoseRelations.forward`): each related coordinate becomes a mix of its own prediction and its
  partner's line, weighted by the two landmarks' raw scores (:func:`~contrastive_landmarks.regression.
  landmark_scores`) raised to ``power``: a point its heatmaps are unsure of follows a confident partner, a
  confident point keeps its own place. All relations read the unrefined points (one step, no iteration).

Coordinates are the regressor's normalised frame (:mod:`~contrastive_landmarks.coords`) of a one-pass model's
letterboxed frame; the two passes of a two-stage model see different frames, where one line does not hold for both,
so such models get none (:class:`~contrastive_landmarks.LandmarkModel` refuses them). What it gained where measured
(validation frames, no refit) is in ``docs/notes/2026-12-benchmarks.md``; :func:`~contrastive_landmarks.train.
finetune` fits one and keeps it only when the validation frames do not get worse.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["PoseRelations", "line_fits"]

#: Keep a relation when its leave-one-out RMS error is at most this share of the coordinate's own spread. Chosen on
#: held-out frames of five lp-mirror-mouse models (benchmarks/results/relations/): 0.1 and 0.2 keep the same
#: relations on four, and on the fifth (a 10-frame fit) 0.1 misses the paws that 0.2 keeps (12.12 against 11.21 px).
MAX_RATIO = 0.2
#: Exponent of the raw scores that weigh a point against its partner's line (a first look at 3, 5 and 10 found them
#: within 0.2 px of each other; not swept further).
POWER = 5.0
#: A pair of landmarks needs this many frames labelling both before its line is trusted.
MIN_FRAMES = 5


class PoseRelations(nn.Module):
    """Coordinate ``target[r]`` of the flattened ``(x_0, y_0, x_1, ...)`` pose read as ``slope[r] · pose[source[r]] +
    intercept[r]``, mixed with its own prediction by score (module docstring).

    Args:
        target, source: ``(R,)`` indices into the ``2N`` flattened coordinates (each target at most once).
        slope, intercept: ``(R,)`` the lines.
        num_landmarks: ``N``.
        power: the scores' exponent in the mix.

    The relations live in the model directory's ``config.json`` (:attr:`config`), not in its weights files: the
    buffers are not part of the state dict.

    Shape:
        - Input: ``normalized`` ``(B, N, 2)`` landmarks in the normalised frame, ``scores`` ``(B, N)`` in ``[0, 1]``.
        - Output: ``(B, N, 2)``.
    """

    def __init__(
        self, target: Tensor, source: Tensor, slope: Tensor, intercept: Tensor, num_landmarks: int, power: float = POWER
    ) -> None:
        super().__init__()
        target, source = torch.as_tensor(target, dtype=torch.long), torch.as_tensor(source, dtype=torch.long)
        if target.ndim != 1 or not target.shape == source.shape == tuple(torch.as_tensor(slope).shape):
            raise ValueError("target, source, slope and intercept must be (R,) each")
        if len(set(target.tolist())) != len(target) or bool(((target // 2) == (source // 2)).any()):
            raise ValueError("each coordinate is the target of one relation at most, and never its own source")
        if len(target) and int(torch.cat([target, source]).max()) >= 2 * num_landmarks:
            raise ValueError(f"relation indices must be below 2 * num_landmarks = {2 * num_landmarks}")
        self.num_landmarks = int(num_landmarks)
        self.power = float(power)
        self.register_buffer("target", target, persistent=False)
        self.register_buffer("source", source, persistent=False)
        self.register_buffer("slope", torch.as_tensor(slope, dtype=torch.float32), persistent=False)
        self.register_buffer("intercept", torch.as_tensor(intercept, dtype=torch.float32), persistent=False)
        onehot = torch.nn.functional.one_hot(target, 2 * self.num_landmarks).float()  # (R, 2N): where each target is
        self.register_buffer("onehot", onehot, persistent=False)

    def __len__(self) -> int:
        return int(self.target.numel())

    def forward(self, normalized: Tensor, scores: Tensor) -> Tensor:
        b, n, _ = normalized.shape
        if n != self.num_landmarks or scores.shape != (b, n):
            raise ValueError(f"expected (B, {self.num_landmarks}, 2) points and (B, {self.num_landmarks}) scores")
        pose = normalized.reshape(b, 2 * n)
        weight = scores.to(pose.dtype).clamp_min(1e-6).pow(self.power)  # (B, N)
        own, other = weight[:, self.target // 2], weight[:, self.source // 2]  # (B, R)
        line = self.slope.to(pose.dtype) * pose[:, self.source] + self.intercept.to(pose.dtype)
        mixed = (own * pose[:, self.target] + other * line) / (own + other)
        # written with a one-hot matrix, not an in-place scatter, so that it traces to ONNX as it runs here
        return (pose + (mixed - pose[:, self.target]) @ self.onehot.to(pose.dtype)).reshape(b, n, 2)

    @classmethod
    def fit(
        cls,
        poses: Tensor,
        visible: Tensor,
        *,
        max_ratio: float = MAX_RATIO,
        min_frames: int = MIN_FRAMES,
        power: float = POWER,
    ) -> PoseRelations:
        """The relations of labelled poses (module docstring); none where nothing qualifies.

        Args:
            poses: ``(M, N, 2)`` labelled landmarks in the normalised frame of the pass that predicts them.
            visible: ``(M, N)`` bool.
            max_ratio: keep a relation whose leave-one-out RMS is at most this share of its target's spread.
            min_frames: frames labelling both landmarks a line needs.
        """
        if poses.ndim != 3 or poses.shape[-1] != 2 or visible.shape != poses.shape[:2]:
            raise ValueError(f"poses must be (M, N, 2) with visible (M, N), got {tuple(poses.shape)}")
        n = poses.shape[1]
        slope, intercept, loo, spread, count = line_fits(poses, visible)
        same = torch.arange(2 * n)[:, None] // 2 == torch.arange(2 * n)[None, :] // 2
        usable = (count >= max(min_frames, 3)) & torch.isfinite(loo) & (spread > 1e-9) & ~same
        loo = torch.where(usable, loo, torch.full_like(loo, float("inf")))
        best = loo.argmin(1)  # (2N,) the best source of each target
        rows = torch.arange(2 * n)
        keep = torch.isfinite(loo[rows, best]) & (loo[rows, best] <= max_ratio * spread[rows, best])
        target = rows[keep]
        source = best[keep]
        return cls(target, source, slope[target, source].float(), intercept[target, source].float(), n, power)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "num_landmarks": self.num_landmarks,
            "power": self.power,
            "relations": [
                [int(t), int(s), float(a), float(b)]
                for t, s, a, b in zip(self.target, self.source, self.slope, self.intercept)
            ],
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PoseRelations:
        rows = config["relations"]
        columns = list(zip(*rows)) if rows else [(), (), (), ()]
        return cls(*(torch.tensor(c) for c in columns), config["num_landmarks"], config["power"])

    def describe(self, names: Any = ()) -> str:
        """``"paw1LH_top.x <- paw1LH_bot.x, ..."``: which coordinate follows which."""
        label = [str(v) for v in names] if names else [str(i) for i in range(self.num_landmarks)]
        pairs = [
            f"{label[t // 2]}.{'xy'[t % 2]} <- {label[s // 2]}.{'xy'[s % 2]}"
            for t, s in zip(self.target.tolist(), self.source.tolist())
        ]
        return f"{len(pairs)} related coordinates" + (f": {', '.join(pairs)}" if pairs else "")

    def extra_repr(self) -> str:
        return f"relations={len(self)}, num_landmarks={self.num_landmarks}, power={self.power:g}"


def line_fits(poses: Tensor, visible: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Least-squares lines between every pair of coordinates of labelled poses, with their leave-one-out errors.

    For target ``i`` and source ``j`` (indices into the flattened ``(x_0, y_0, x_1, ...)``), over the frames that
    label both: the line ``pose[i] ≈ slope · pose[j] + intercept``, the RMS of its leave-one-out residuals (each
    frame's residual over ``1 - h``, ``h`` its leverage ``1/n + (x - x̄)² / Σ(x - x̄)²``: the same as refitting
    without the frame), and the target's own spread (RMS about its mean) over those frames.

    Args:
        poses: ``(M, N, 2)``; visible: ``(M, N)`` bool.

    Returns:
        ``(slope, intercept, loo_rms, spread, count)``, each ``(2N, 2N)`` float64 (``[target, source]``); a pair with
        fewer than three frames or a constant source has an infinite ``loo_rms``.
    """
    m, n, _ = poses.shape
    x = poses.reshape(m, 2 * n).double()
    ok = (visible.bool() & torch.isfinite(poses).all(-1)).repeat_interleave(2, dim=1)  # (M, 2N)
    x = torch.where(ok, x, torch.zeros_like(x))
    w = (ok[:, :, None] & ok[:, None, :]).double()  # (M, target, source)
    count = w.sum(0)
    t, s = x[:, :, None], x[:, None, :]
    mean_t, mean_s = (w * t).sum(0) / count.clamp_min(1), (w * s).sum(0) / count.clamp_min(1)
    dt, ds = (t - mean_t) * w, (s - mean_s) * w
    sxx, sxy, syy = (ds * ds).sum(0), (ds * dt).sum(0), (dt * dt).sum(0)
    slope = sxy / sxx.clamp_min(1e-12)
    intercept = mean_t - slope * mean_s
    leverage = 1 / count.clamp_min(1) + ds.pow(2) / sxx.clamp_min(1e-12)
    residual = (dt - slope * ds) / (1 - leverage).clamp_min(1e-6) * w
    loo = (residual.pow(2).sum(0) / count.clamp_min(1)).sqrt()
    loo = torch.where((count >= 3) & (sxx > 1e-12), loo, torch.full_like(loo, float("inf")))
    return slope, intercept, loo, (syy / count.clamp_min(1)).sqrt(), count
