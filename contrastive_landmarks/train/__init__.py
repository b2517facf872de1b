"""Training (the ``[train]`` extra: tqdm and Pillow): MoCo pretraining of the backbone and its export, the
frozen-backbone heads (spatial projector, landmark regressor) and end-to-end fine-tuning on labelled frames. The
same steps as commands: ``contrastive-landmarks pretrain | export | fit-projector | fit-regressor | finetune |
push`` (:mod:`.cli`).

The public names are the recipes, with their options, results and interrupts and the types they take:

- :func:`pretrain` (:class:`PretrainConfig`, :class:`PretrainInterrupted`), :func:`export_backbone`,
  :func:`recalibrate_batchnorm`;
- :func:`fit_projector` (:class:`ProjectorFitResult`, :class:`ProjectorFitInterrupted`; ``warp``
  :class:`TPSParams`, ``cache`` :class:`FeatureCache`) and its validation score :func:`projector_loss`;
- :func:`fit_regressor` (:class:`RegressorFit`; ``augment`` :class:`Augment`);
- :func:`finetune` (:class:`FinetuneOptions` with :class:`Framing` and :class:`ViewAugment`,
  :class:`FinetuneResult`, :class:`FinetuneInterrupted`);
- :class:`TrainingInterrupted`, the base of every interrupt.

Everything else (the MoCo model, its augmentations and presets, the learning-rate schedule, checkpoints and RNG
state, the image sources) lives in its own module and is not part of the public surface.

>>> from contrastive_landmarks.train import PretrainConfig, pretrain
>>> pretrain(PretrainConfig(data=["celeba/img_align_celeba"], arch="resnet50"))  # doctest: +SKIP
>>> result = fit_projector(Hypercolumn(load_backbone("runs/moco/backbone")), images)  # doctest: +SKIP
"""

from __future__ import annotations

from ..framing import Framing
from ..tps import TPSParams
from .batchnorm import recalibrate_batchnorm
from .feature_cache import FeatureCache
from .finetuning import FinetuneInterrupted, FinetuneOptions, FinetuneResult, finetune
from .interrupt import TrainingInterrupted
from .keypoint_views import Augment, ViewAugment
from .pretraining import PretrainConfig, PretrainInterrupted, export_backbone, pretrain
from .projector_fitting import ProjectorFitInterrupted, ProjectorFitResult, fit_projector, projector_loss
from .regressor_fitting import RegressorFit, fit_regressor

__all__ = [
    "Augment",
    "FeatureCache",
    "FinetuneInterrupted",
    "FinetuneOptions",
    "FinetuneResult",
    "Framing",
    "PretrainConfig",
    "PretrainInterrupted",
    "ProjectorFitInterrupted",
    "ProjectorFitResult",
    "RegressorFit",
    "TPSParams",
    "TrainingInterrupted",
    "ViewAugment",
    "export_backbone",
    "finetune",
    "fit_projector",
    "fit_regressor",
    "pretrain",
    "projector_loss",
    "recalibrate_batchnorm",
]
