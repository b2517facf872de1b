"""One :func:`~.projector_fitting.fit_projector` call's state: what it trains with, where it is, the learning rate
of its epoch, its checkpoint (:func:`fit_state`) and continuing from one (:func:`restore_fit`, refused when the
settings or data changed)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..hypercolumn import Hypercolumn
from ..projector import SpatialProjector
from ._loop import BestState, warmup_cosine
from .checkpoint import resume_checkpoint, training_state
from .feature_cache import FeatureCache
from .projector_data import FeatureSource

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_FORMATS", "Fit", "fit_state", "restore_fit"]

CHECKPOINT_FORMAT = "contrastive_landmarks.projector_fit/2"
#: The layouts this version reads: its own, and /1 (which also held a torch lr scheduler's state under
#: ``"scheduler"``; the rate is now a function of the epoch, equal to the scheduler's to within rounding).
CHECKPOINT_FORMATS = (CHECKPOINT_FORMAT, "contrastive_landmarks.projector_fit/1")


@dataclass
class Fit:
    """Everything one call of :func:`~.projector_fitting.fit_projector` trains with, and where it is.

    ``epoch`` is the epoch in progress; ``position`` counts its batches done, ``order`` is its data order
    (``None`` until drawn), ``total``/``count`` its summed loss and images, ``seconds`` its training time;
    ``best`` the lowest validation loss, its epoch (as the step) and weights.
    """

    features: Hypercolumn
    projector: SpatialProjector
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    grid: tuple[int, int]
    loss_kwargs: dict
    config: dict
    best: BestState
    source: FeatureSource | None = None
    val_source: FeatureSource | None = None
    train_cache: FeatureCache | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    initial: float = math.nan
    epoch: int = 0
    position: int = 0
    order: Tensor | None = None
    total: float = 0.0
    count: int = 0
    seconds: float = 0.0
    checkpoint: Path | None = None
    resumed: bool = False

    @property
    def epochs(self) -> int:
        return self.config["epochs"]

    @property
    def batch_size(self) -> int:
        return self.config["batch_size"]

    @property
    def seed(self) -> int:
        return self.config["seed"]

    @property
    def lr(self) -> float:
        """The learning rate of epoch :attr:`epoch`: ``lr``, with ``cosine`` decayed per epoch to 0 (the epoch
        ``e`` of ``E`` at ``lr · 0.5 (1 + cos(pi e / E))``, :func:`~._loop.warmup_cosine`)."""
        lr = self.config["lr"]
        return lr * warmup_cosine(self.epoch, self.epochs) if self.config["cosine"] else lr

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.source) / self.batch_size)

    @property
    def steps_done(self) -> int:
        return self.epoch * self.steps_per_epoch + self.position

    @property
    def selected(self) -> bool:
        """Whether a validation epoch was selected (else the last epoch's weights are kept: no validation data)."""
        return self.best.score < math.inf

    @property
    def best_epoch(self) -> int:
        return self.best.step if self.selected else self.epochs - 1

    @property
    def settings(self) -> dict:
        """What a resumed fit must share with its checkpoint."""
        return {**self.config, "softmax_multiplier": self.projector.softmax_multiplier}


def fit_state(run: Fit) -> dict:
    """The checkpoint of ``run`` after its last finished step."""
    return training_state(
        CHECKPOINT_FORMAT,
        run.settings,
        projector=run.projector.state_dict(),
        optimizer=run.optimizer.state_dict(),
        generator=run.generator.get_state(),
        position={"epoch": run.epoch, "batch": run.position},
        order=run.order,
        running={"total": run.total, "count": run.count, "seconds": run.seconds},
        history=run.history,
        best={"state": run.best.state if run.selected else None, "epoch": run.best_epoch, "score": run.best.score},
        initial_score=run.initial,
    )


def restore_fit(run: Fit) -> None:
    """Continue ``run`` from its checkpoint (written by a fit of the same data and settings)."""
    saved = resume_checkpoint(
        run.checkpoint,
        run.settings,
        formats=CHECKPOINT_FORMATS,
        kind="fit_projector checkpoint",
        reason="it was fitted with other settings or data",
        remedy="use another checkpoint, or resume=False to start afresh",
    )
    run.projector.load_state_dict(saved["projector"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.generator.set_state(saved["generator"])
    run.epoch, run.position, run.order = saved["position"]["epoch"], saved["position"]["batch"], saved["order"]
    run.total, run.count, run.seconds = (saved["running"][k] for k in ("total", "count", "seconds"))
    run.history = list(saved["history"])
    if saved["best"]["state"] is not None:  # a validation epoch was selected
        run.best.load_state_dict({"score": saved["best"]["score"], "step": saved["best"]["epoch"], **saved["best"]})
    run.initial, run.resumed = saved["initial_score"], True
