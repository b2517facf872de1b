"""How images in ``[0, 1]`` become network input: the read-only :class:`Preprocessing` a backbone holds.

It travels in ``config.json`` (``mean``, ``std``, ``input_size``); ImageNet statistics are the default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Preprocessing"]


IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _triple(values: Sequence[float], name: str) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be 3 numbers (one per RGB channel), got {values!r}") from None
    if len(out) != 3:
        raise ValueError(f"{name} must be 3 numbers (one per RGB channel), got {len(out)}: {values!r}")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class Preprocessing:
    """How images in ``[0, 1]`` become network input, and at what size the weights were trained (read-only).

    The one source of truth for a :class:`Backbone`'s input statistics (as timm's ``pretrained_cfg``):
    :meth:`Backbone.normalize` computes from it, :attr:`Backbone.config` writes it to ``config.json``
    (keys ``mean``, ``std``, ``input_size``) and loading builds it from there.

    Attributes:
        mean, std: per-channel statistics, ``x_net = (x - mean) / std``.
        input_size: ``(H, W)`` the weights were trained at; :class:`~contrastive_landmarks.LandmarkModel`
            resizes its inputs to it. ``None``: not recorded (inputs are used at their own size).
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        mean, std = _triple(self.mean, "mean"), _triple(self.std, "std")
        if not all(s > 0 for s in std):
            raise ValueError(f"std must be positive, got {std}")
        size = self.input_size
        if size is not None:
            size = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(v) for v in size)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"input_size must be (H, W) with positive sides or None, got {self.input_size!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "input_size", size)

    @classmethod
    def from_config(cls, config: Mapping) -> Preprocessing:
        """From ``config.json``'s ``mean`` / ``std`` / ``input_size`` (ImageNet statistics where absent)."""
        return cls(
            config.get("mean") or IMAGENET_MEAN, config.get("std") or IMAGENET_STD, config.get("input_size") or None
        )

    def to_config(self) -> dict:
        """The ``config.json`` entries."""
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "input_size": list(self.input_size) if self.input_size else None,
        }
