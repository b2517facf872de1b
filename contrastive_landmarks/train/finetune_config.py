"""What a fine-tuning run is told: :class:`FinetuneOptions` (the validated recipe as defaults, the checkpoint
settings a resume must match). The loop that runs them is :mod:`.finetuning`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..device import autocast_dtype
from ..framing import Framing
from ..pose_relations import MAX_RATIO
from .footage import FootageOptions
from .keypoint_views import ViewAugment

__all__ = ["FinetuneOptions"]


@dataclass
class FinetuneOptions:
    """Options of :func:`finetune` (the defaults are the validated recipe).

    ``num_labelled``: fit on a seeded subset of this many training frames (the few-label setting; its
    validation frames come out of the same subset). ``val_fraction`` of the frames is held out to choose the step
    and fit the likelihood, from :data:`~.finetuning.MIN_FRAMES_TO_HOLD_OUT` frames on (below, every frame trains).
    ``device``: ``None`` / ``"auto"`` (the GPU when there is one), ``"cpu"``, ``"cuda"``, ...; ``precision``:
    autocast ``auto`` (bfloat16 where the device computes it natively), ``fp32``, ``fp16`` or ``bf16``.
    ``footage``: the footage step's budget, run when :func:`finetune` is given videos (:mod:`.footage`).
    ``decode_window``: :attr:`~contrastive_landmarks.LandmarkRegressor.decode_window` of the model (validation
    and prediction read each heatmap around its peak; ``None``: every cell). ``framing``: the crops' rule; its
    ``stages`` ``None`` (the default) is decided from the labelled animals' size
    (:func:`~contrastive_landmarks.framing.framing_for_poses`: one pass where they fill the frame).
    """

    steps: int = 1500
    batch_size: int = 8
    image_size: int = 256
    lr: float = 1e-3
    head_lr_multiplier: float = 10.0
    weight_decay: float = 1e-4
    warmup: int = 50
    heatmap_stride: int = 4
    heatmap_loss: float = 0.1
    softmax_multiplier: float = 1.0
    sigma: float = 1.5
    heatmaps_per_landmark: int | None = None
    #: every cell (the paper's): a 4-cell window around the peak helped on lp-mirror-mouse's validation frames
    #: (4.44 px against 4.59) and hurt on dlc-reaching's (8.63 against 8.19; benchmarks/results/decode/)
    decode_window: int | None = None
    framing: Framing = field(default_factory=lambda: Framing(stages=None))
    #: ``max_ratio`` of the :class:`~contrastive_landmarks.pose_relations.PoseRelations` fitted on the labelled poses
    #: of a one-pass model (kept where the validation frames do not get worse); ``None``: none
    relations: float | None = MAX_RATIO
    augment: ViewAugment = field(default_factory=ViewAugment)
    footage: FootageOptions = field(default_factory=FootageOptions)
    val_fraction: float = 0.15
    num_labelled: int | None = None
    eval_every: int | None = None
    device: str | None = None
    precision: str = "auto"
    seed: int = 0
    checkpoint_every: int = 100
    output_dir: str | None = None
    resume: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "image_size", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32 (the backbone's stride), got {self.image_size}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.num_labelled is not None and self.num_labelled < 1:
            raise ValueError(f"num_labelled must be a positive number of frames, got {self.num_labelled}")
        if self.resume and not self.output_dir:
            raise ValueError("resume needs output_dir (where the checkpoint is)")
        autocast_dtype(torch.device("cpu"), self.precision)  # refuses an unknown precision now, not after loading

    @property
    def settings(self) -> dict[str, Any]:
        """What a checkpoint records and a resume must match: every option but where to write and how to show it
        (the footage step checks its own, :func:`~.footage.adapt_to_footage`; the relations come after training)."""
        skip = ("output_dir", "resume", "progress", "checkpoint_every", "device", "footage", "relations")
        values = {k: v for k, v in asdict(self).items() if k not in skip}
        if values["augment"].get("warp") is None:  # recorded only when set: checkpoints from before it resume
            values["augment"].pop("warp", None)
        if values.get("decode_window") is None:  # likewise
            values.pop("decode_window", None)
        return json.loads(json.dumps(values))  # tuples -> lists, as a checkpoint stores them
