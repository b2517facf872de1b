"""Training (the ``[train]`` extra: tqdm and Pillow): MoCo pretraining of the backbone and its export.

>>> from contrastive_landmarks.train import PretrainConfig, pretrain
>>> pretrain(PretrainConfig(data=["celeba/img_align_celeba"], arch="resnet50"))  # doctest: +SKIP
"""

from __future__ import annotations

from .augment import PRESETS, MoCoAugment, Preset, get_preset
from .checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from .images import ImageSource, PretrainImages, cache_images, list_images
from .moco import MoCo, MoCoEncoder, MoCoHead, moco_loss
from .pretrain import CosineSchedule, PretrainConfig, export_backbone, pretrain

__all__ = [
    "PRESETS",
    "CosineSchedule",
    "ImageSource",
    "MoCo",
    "MoCoAugment",
    "MoCoEncoder",
    "MoCoHead",
    "Preset",
    "PretrainConfig",
    "PretrainImages",
    "cache_images",
    "export_backbone",
    "get_preset",
    "get_rng_state",
    "list_images",
    "load_checkpoint",
    "moco_loss",
    "pretrain",
    "save_checkpoint",
    "set_rng_state",
]
