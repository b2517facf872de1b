"""What a MoCo pretraining run is told: :class:`PretrainConfig` (the authors' recipe as defaults, with the help
texts the ``pretrain`` command line is generated from), and the learning rate of each step under its schedule
(:meth:`PretrainConfig.learning_rate`). The loop that runs them is :mod:`.pretraining`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

from ._loop import warmup_cosine
from .moco_views import get_preset

__all__ = ["RECIPE_DEFAULTS", "PretrainConfig"]

#: What ``arch``, ``batch_size``, ``queue_size`` and ``epochs`` default to: the authors' recipe (ResNet-50, batch
#: 256, 800 epochs: days on a CPU), and for the ``animals`` preset a ResNet-18 run of minutes on a CPU (the
#: settings the footage step of ``finetune`` uses, :mod:`.footage`).
RECIPE_DEFAULTS = {
    "authors": {"arch": "resnet50", "batch_size": 256, "queue_size": 4096, "epochs": 800},
    "animals": {"arch": "resnet18", "batch_size": 64, "queue_size": 512, "epochs": 10},
}


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class PretrainConfig:
    """Everything a MoCo pretraining run needs; the defaults are the authors' recipe (faces).

    Each field's ``metadata["help"]`` is its command-line help text. ``arch``, ``batch_size``, ``queue_size`` and
    ``epochs`` left ``None`` follow the preset (:data:`RECIPE_DEFAULTS`): the authors' GPU recipe, or for the
    ``animals`` preset (a user's own videos) a run of minutes on a CPU; :meth:`validate` fills them in.
    """

    data: list[str] = field(
        default_factory=list,
        metadata=_help(
            "image sources: folders (recursive *.jpg/*.png) or list files (.txt, or .csv with paths in the first "
            "column), each optionally followed by ';crop=TOP,LEFT,HEIGHT,WIDTH' (or crop=celeba|auto|none) and "
            "';root=DIR'"
        ),
    )
    video: list[str] = field(
        default_factory=list,
        metadata=_help(
            "videos to pretrain on (.mp4, .avi, .mov, .mkv, .m4v; the [video] extra), with or instead of data; each "
            "optionally followed by ';crop=TOP,LEFT,HEIGHT,WIDTH'"
        ),
    )
    every: int = field(default=1, metadata=_help("keep every N-th frame of each video"))
    max_frames: int | None = field(default=None, metadata=_help("keep at most this many frames of each video"))
    output_dir: str = field(default="runs/moco", metadata=_help("folder for checkpoint.pt, log.jsonl, backbone/"))
    preset: str | None = field(
        default=None,
        metadata=_help(
            "faces (CelebA stats, 136 -> border crop -> 96, CelebA 178x218 images cropped to rows 30..208, JPEG noise, "
            "PCA lighting), animals (whole frames of a user's footage: 128 px, no border, blur, no JPEG or PCA "
            "lighting, ImageNet stats), birds (squash to 96, ImageNet stats) or generic (squash to image_size, "
            "ImageNet stats); default: animals when every source is a video, else faces"
        ),
    )
    image_size: int | None = field(
        default=None,
        metadata=_help(
            "network input side (preset default: 96 faces/birds, 64 generic); the faces border scales with it"
        ),
    )
    border: int | None = field(default=None, metadata=_help("border crop in pixels (default: the preset's, scaled)"))
    arch: str | None = field(
        default=None,
        metadata=_help(
            "timm ResNet: resnet18, resnet50, ... (test_resnet: tests); default resnet50 (the authors'), resnet18 "
            "for the animals preset"
        ),
    )
    init: str | None = field(
        default=None,
        metadata=_help(
            "start from this backbone instead of a random init: a registry name (resnet18-faces), a model directory "
            "or a checkpoint load_backbone reads; its architecture must be --arch, and its normalisation is kept"
        ),
    )
    dim: int = field(default=128, metadata=_help("embedding size of the MoCo head"))
    queue_size: int | None = field(
        default=None, metadata=_help("MoCo queue length K (negatives); default 4096, 512 for the animals preset")
    )
    temperature: float = field(default=0.07, metadata=_help("softmax temperature"))
    key_momentum: float = field(default=0.999, metadata=_help("EMA momentum of the key encoder (over parameters)"))
    mlp_head: bool = field(default=False, metadata=_help("MoCo v2 MLP head instead of the authors' linear head"))
    blur: bool | None = field(
        default=None, metadata=_help("MoCo v2 Gaussian blur augmentation (default: the preset's, on for animals)")
    )
    jpeg: bool | None = field(
        default=None, metadata=_help("JPEG noise augmentation (default: the preset's, on for faces: authors' recipe)")
    )
    min_scale: float | None = field(
        default=None,
        metadata=_help("RandomResizedCrop minimum area fraction (default: the preset's, 0.2; animals 0.7)"),
    )
    equivariance: float = field(
        default=0.0,
        metadata=_help(
            "weight of the paper's spatially contrastive (equivariance) loss, Eq. 3, added to MoCo's: each query "
            "view and a TPS warp of it, matched location by location on the query encoder's conv3_x + conv4_x maps "
            "(0: MoCo alone, the authors' recipe; about 2.3x the step time; on the mirror-mouse video it did not "
            "improve a frozen probe, docs/notes/2026-12-benchmarks.md)"
        ),
    )
    epochs: int | None = field(
        default=None,
        metadata=_help(
            "training epochs; default 800 (the authors'), 10 for the animals preset (about 1.5 minutes of a 2-core "
            "CPU on a 1,000-frame video; thin long videos with --every / --max-frames)"
        ),
    )
    batch_size: int | None = field(
        default=None, metadata=_help("global batch size (split over processes); default 256, 64 for the animals preset")
    )
    lr: float = field(default=0.03, metadata=_help("SGD learning rate"))
    momentum: float = field(default=0.9, metadata=_help("SGD momentum"))
    weight_decay: float = field(default=1e-4, metadata=_help("SGD weight decay"))
    schedule: str = field(
        default="cosine-epoch",
        metadata=_help(
            "learning-rate schedule: cosine-epoch (the authors': lr 0.5(1+cos(pi e/E)) set once per epoch, e counted "
            "from 1), cosine-step (per step, from lr to 0), or constant"
        ),
    )
    max_steps: int | None = field(
        default=None, metadata=_help("stop after this many optimisation steps in total (the run can be resumed later)")
    )
    resume: bool = field(default=False, metadata=_help("continue from output_dir/checkpoint.pt if it exists"))
    checkpoint_every: int = field(default=500, metadata=_help("write the checkpoint every N steps (and at the end)"))
    cache: str = field(
        default="auto",
        metadata=_help(
            "decode all images once into memory as uint8 (yes), read them every epoch (no), or auto (yes if under "
            "cache_gb)"
        ),
    )
    cache_gb: float = field(default=8.0, metadata=_help("memory limit for cache=auto, GiB"))
    num_workers: int = field(default=4, metadata=_help("DataLoader workers for decoding images"))
    threads: int | None = field(default=None, metadata=_help("torch CPU threads (default: torch's choice)"))
    device: str = field(default="auto", metadata=_help("auto, cpu, cuda, cuda:1, ..."))
    precision: str = field(
        default="auto",
        metadata=_help(
            "auto (bf16 autocast on CUDA if supported, else fp16; bf16 on a CPU with native bf16, else fp32), fp32, "
            "fp16 or bf16"
        ),
    )
    memory_format: str = field(
        default="auto",
        metadata=_help(
            "auto (channels-last on CUDA, where convolutions run faster in it; contiguous on CPU), channels-last or "
            "contiguous"
        ),
    )
    sync_bn: bool = field(default=False, metadata=_help("SyncBatchNorm in the encoders when distributed"))
    shuffle_bn: bool = field(default=True, metadata=_help("shuffle-BN for the key encoder when distributed"))
    seed: int = field(default=0, metadata=_help("seed of the data order, augmentations and initialisation"))
    log_every: int = field(default=10, metadata=_help("write a log.jsonl record every N steps"))
    progress: bool = field(default=True, metadata=_help("show a progress bar"))
    tensorboard: bool = field(default=False, metadata=_help("also log to TensorBoard (needs the tensorboard package)"))
    export: bool = field(default=True, metadata=_help("export the backbone to output_dir/backbone when training ends"))

    def validate(self) -> None:
        """Fill the preset's defaults into the fields left ``None``; raise :class:`ValueError` naming the first bad
        field."""
        if isinstance(self.data, (str, os.PathLike)):
            self.data = [str(self.data)]
        if isinstance(self.video, (str, os.PathLike)):
            self.video = [str(self.video)]
        if not self.data and not self.video:
            raise ValueError("data: give at least one image folder, list file or video")
        recipe = RECIPE_DEFAULTS["animals" if self.preset_name == "animals" else "authors"]
        for name, value in recipe.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.every < 1 or (self.max_frames is not None and self.max_frames < 1):
            raise ValueError(f"every and max_frames must be >= 1, got {self.every} and {self.max_frames}")
        choices = {
            "schedule": ("cosine-epoch", "cosine-step", "constant"),
            "cache": ("auto", "yes", "no"),
            "precision": ("auto", "fp32", "fp16", "bf16"),
            "memory_format": ("auto", "channels-last", "contiguous"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "checkpoint_every", "log_every", "queue_size", "dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if not self.equivariance >= 0:
            raise ValueError(f"equivariance must be >= 0, got {self.equivariance}")
        if self.min_scale is not None and not 0 < self.min_scale <= 1:
            raise ValueError(f"min_scale must be in (0, 1], got {self.min_scale}")
        get_preset(self.preset_name, self.image_size, self.border)

    @property
    def preset_name(self) -> str:
        """``preset``, or its default: ``animals`` when every source is a video, else ``faces``."""
        if self.preset is not None:
            return self.preset
        return "animals" if self.video and not self.data else "faces"

    def sources(self) -> list[str]:
        """The image sources of the run: ``data``, then each video with ``every`` / ``max_frames`` attached."""
        frames = f";every={self.every}" + (f";max_frames={self.max_frames}" if self.max_frames else "")
        return [*self.data, *(str(v) + frames for v in self.video)]

    def learning_rate(self, step: int, steps_per_epoch: int) -> float:
        """The learning rate of optimisation step ``step`` (counted from 0) under :attr:`schedule`.

        ``cosine-epoch`` is the authors' ``adjust_learning_rate``: ``lr 0.5 (1 + cos(pi e / E))`` with the epoch
        ``e`` counted from 1, for the whole epoch (the last one runs at 0, as theirs); ``cosine-step`` decays per
        step from ``lr`` to 0 over ``epochs · steps_per_epoch`` steps; ``constant`` keeps ``lr``. A function of
        the position alone, so a resumed run needs no schedule state (and one given more ``epochs`` follows the
        longer cosine from where it is).
        """
        if self.schedule == "constant":
            return float(self.lr)
        if self.schedule == "cosine-epoch":
            return self.lr * warmup_cosine(step // steps_per_epoch + 1, self.epochs)
        return self.lr * warmup_cosine(step, self.epochs * steps_per_epoch)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """``{field name: help text}`` (for command-line generators)."""
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}
