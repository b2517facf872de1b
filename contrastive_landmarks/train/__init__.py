"""Training (the ``[train]`` extra: tqdm and Pillow): MoCo pretraining of the backbone and its export, the
frozen-backbone heads (spatial projector, landmark regressor) and end-to-end fine-tuning on labelled frames. The
same steps as commands: ``contrastive-landmarks pretrain | export | fit-projector | fit-regressor | finetune |
push`` (:mod:`.cli`).

>>> from contrastive_landmarks.train import PretrainConfig, pretrain
>>> pretrain(PretrainConfig(data=["celeba/img_align_celeba"], arch="resnet50"))  # doctest: +SKIP
>>> result = fit_projector(Hypercolumn(load_backbone("runs/moco/backbone")), images)  # doctest: +SKIP
"""

from __future__ import annotations

from ..metrics import mean_shape
from .batchnorm import recalibrate_batchnorm
from .checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from .finetune import FinetuneInterrupted, FinetuneOptions, FinetuneResult, finetune
from .images import ImageSource, PretrainImages, cache_images, list_images
from .moco import MoCo, MoCoEncoder, MoCoHead, moco_loss
from .moco_views import PRESETS, MoCoAugment, Preset, get_preset
from .pretrain import PretrainConfig, export_backbone, pretrain
from .pretrain_config import CosineSchedule
from .projector_fitting import ProjectorFitResult, fit_projector, projector_loss
from .regressor_fitting import RegressorFit, fit_regressor
from .regressor_views import Augment

__all__ = [
    "PRESETS",
    "Augment",
    "CosineSchedule",
    "FinetuneInterrupted",
    "FinetuneOptions",
    "FinetuneResult",
    "ImageSource",
    "MoCo",
    "MoCoAugment",
    "MoCoEncoder",
    "MoCoHead",
    "Preset",
    "PretrainConfig",
    "PretrainImages",
    "ProjectorFitResult",
    "RegressorFit",
    "cache_images",
    "export_backbone",
    "finetune",
    "fit_projector",
    "fit_regressor",
    "get_preset",
    "get_rng_state",
    "list_images",
    "load_checkpoint",
    "mean_shape",
    "moco_loss",
    "pretrain",
    "projector_loss",
    "recalibrate_batchnorm",
    "save_checkpoint",
    "set_rng_state",
]
