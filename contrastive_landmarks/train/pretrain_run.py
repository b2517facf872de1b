"""What one :func:`~.pretraining.pretrain` run trains with, built fresh or continued from its checkpoint.

- :func:`setup_distributed`: this process's rank, the world size and its device (one per GPU under torchrun);
- :func:`build_run`: the data, the MoCo model (optionally from a trained backbone), the augmentation, the
  optimiser and the autocast dtype of a fresh run (:class:`Run`; the learning rate of a step is
  :meth:`~.pretrain_config.PretrainConfig.learning_rate`);
- :func:`run_state` / :func:`restore_run`: the run's checkpoint, and continuing from one (refused, naming what
  changed, when it was trained with other settings or data).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist

from ..backbone import Backbone, load_backbone
from ..device import autocast_dtype, resolve_device
from .checkpoint import get_rng_state, resume_checkpoint, set_rng_state, training_state
from .images import PretrainImages
from .moco import MoCo
from .moco_views import MoCoAugment, Preset, get_preset
from .pretrain_config import PretrainConfig

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMATS",
    "Run",
    "build_run",
    "restore_run",
    "run_state",
    "setup_distributed",
]

logger = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "contrastive_landmarks.moco/2"
#: The layouts this version reads: its own, and /1 (no ``"settings"``: they are read from ``"config"``; the
#: learning-rate schedule's state under ``"scheduler"``, now a function of the step).
CHECKPOINT_FORMATS = (CHECKPOINT_FORMAT, "contrastive_landmarks.moco/1")


def setup_distributed(config: PretrainConfig) -> tuple[int, int, torch.device]:
    """``(rank, world size, device)`` of this process; under torchrun the process group is initialised from the
    environment (``env://``), one process per GPU (``LOCAL_RANK``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(config.device)  # a name torch does not know, or a GPU this machine lacks: refused
    if device.type == "cuda" and device.index is None:  # "auto" or "cuda": this process's GPU
        device = torch.device("cuda", local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    return rank, world, device


#: What a resume must share with its checkpoint: the settings that fix the model, the data order and the kind of
#: learning-rate schedule (``lr`` and ``epochs`` may change: a resume may extend the schedule).
RESUME_SETTINGS = (
    "arch",
    "dim",
    "queue_size",
    "batch_size",
    "preset",
    "image_size",
    "border",
    "mlp_head",
    "seed",
    "equivariance",
    "init",
    "schedule",
)


def _settings(config: PretrainConfig, num_images: int) -> dict:
    """What the checkpoint records and a resume must match: :data:`RESUME_SETTINGS` and the number of images."""
    return {**{k: getattr(config, k) for k in RESUME_SETTINGS}, "number of images": num_images}


def _recorded_settings(saved: dict) -> dict:
    """The settings of a ``moco/1`` checkpoint, which recorded the whole config instead (the schedule it ran is
    its ``scheduler``'s: a resume with another ``schedule`` kept the checkpoint's)."""
    old = {"equivariance": 0.0, "init": None, **saved["config"], "schedule": saved["scheduler"]["kind"]}
    return {**{k: old.get(k) for k in RESUME_SETTINGS}, "number of images": saved["num_images"]}


@dataclass
class Run:
    """Everything one call of :func:`pretrain` trains with, and where it is (``global_step``, ``train_time``)."""

    config: PretrainConfig
    preset: Preset
    dataset: PretrainImages
    rank: int
    world: int
    device: torch.device
    steps_per_epoch: int
    total_steps: int
    target: int
    model: MoCo
    augment: MoCoAugment
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast_dtype: torch.dtype | None
    channels_last: bool
    runner: torch.nn.Module | None = None
    global_step: int = 0
    train_time: float = 0.0

    @property
    def num_images(self) -> int:
        return len(self.dataset)

    @property
    def local_batch(self) -> int:
        return self.config.batch_size // self.world

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return self.config.learning_rate(self.global_step, self.steps_per_epoch)


def build_run(config: PretrainConfig, rank: int, world: int, device: torch.device) -> Run:
    """Data, model, augmentation and optimiser of a fresh run (raises ValueError on bad sizes)."""
    preset = get_preset(config.preset_name, config.image_size, config.border)
    init = _init_backbone(config)
    if init is not None:  # the weights were trained on inputs normalised their way
        preset = replace(preset, mean=tuple(init.mean), std=tuple(init.std))
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the {world} processes")
    dataset = PretrainImages(config.sources(), preset.resize, default_crop="auto" if preset.celeba_crop else None)
    steps_per_epoch = len(dataset) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(dataset)} images is fewer than one batch of {config.batch_size}")
    total_steps = config.epochs * steps_per_epoch
    torch.manual_seed(config.seed)
    model = MoCo(
        config.arch,
        dim=config.dim,
        queue_size=config.queue_size,
        temperature=config.temperature,
        momentum=config.key_momentum,
        mlp=config.mlp_head,
        shuffle_bn=config.shuffle_bn,
        mean=preset.mean,
        std=preset.std,
        input_size=(preset.image_size, preset.image_size),
        equivariance=config.equivariance,
    )
    if init is not None:
        for encoder in (model.encoder_q, model.encoder_k):
            encoder.backbone.body.load_state_dict(init.body.state_dict())
    model = model.to(device)
    channels_last = config.memory_format == "channels-last" or (
        config.memory_format == "auto" and device.type == "cuda"
    )
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    recipe = {k: v for k, v in (("jpeg", config.jpeg), ("blur", config.blur)) if v is not None}
    if config.min_scale is not None:
        recipe["scale"] = (config.min_scale, 1.0)
    augment = MoCoAugment.from_preset(preset, **recipe)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    dtype = autocast_dtype(device, config.precision)
    return Run(
        config=config,
        preset=preset,
        dataset=dataset,
        rank=rank,
        world=world,
        device=device,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        target=total_steps if config.max_steps is None else min(total_steps, config.max_steps),
        model=model,
        augment=augment.to(device),
        optimizer=optimizer,
        scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        autocast_dtype=dtype,
        channels_last=channels_last,
    )


def _init_backbone(config: PretrainConfig) -> Backbone | None:
    """The backbone ``config.init`` names (``None`` without one); its architecture must be ``config.arch``."""
    if not config.init:
        return None
    init = load_backbone(config.init)
    if init.arch != config.arch:
        raise ValueError(f"init {config.init!r} is a {init.arch}, but arch is {config.arch!r}: pass --arch {init.arch}")
    return init


def run_state(run: Run) -> dict:
    """The checkpoint of ``run`` at its current step."""
    preset, model = run.preset, run.model
    return training_state(
        CHECKPOINT_FORMAT,
        _settings(run.config, run.num_images),
        config=asdict(run.config),
        num_images=run.num_images,
        steps_per_epoch=run.steps_per_epoch,
        preset={
            "name": preset.name,
            "image_size": preset.image_size,
            "border": preset.border,
            "mean": list(preset.mean),
            "std": list(preset.std),
            "jpeg": run.augment.jpeg,
            "blur": run.augment.blur,
            "pca_std": run.augment.pca_std,
            "min_scale": run.augment.scale[0],
        },
        encoder_q=model.encoder_q.state_dict(),
        encoder_k=model.encoder_k.state_dict(),
        queue=model.queue.detach().cpu().clone(),
        queue_ptr=model.queue_ptr.detach().cpu().clone(),
        optimizer=run.optimizer.state_dict(),
        scaler=run.scaler.state_dict(),
        rng=get_rng_state(),
        position={
            "global_step": run.global_step,
            "epoch": run.global_step // run.steps_per_epoch,
            "step_in_epoch": run.global_step % run.steps_per_epoch,
        },
        train_time_s=run.train_time,
    )


def restore_run(run: Run, checkpoint_path: Path) -> None:
    """Continue ``run`` from its checkpoint (the settings that fix the data order must be unchanged)."""
    saved = resume_checkpoint(
        checkpoint_path,
        _settings(run.config, run.num_images),
        formats=CHECKPOINT_FORMATS,
        kind="MoCo pretraining checkpoint",
        recorded=_recorded_settings,
        reason="the checkpoint was trained with different settings",
        remedy="use another output_dir or resume=False",
    )
    run.model.encoder_q.load_state_dict(saved["encoder_q"])
    run.model.encoder_k.load_state_dict(saved["encoder_k"])
    run.model.queue.copy_(saved["queue"])
    run.model.queue_ptr.copy_(saved["queue_ptr"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scaler.load_state_dict(saved["scaler"])
    set_rng_state(saved["rng"])
    run.global_step = int(saved["position"]["global_step"])
    run.train_time = float(saved.get("train_time_s", 0.0))
    if run.rank == 0:
        logger.info(
            "resumed %s at step %d (epoch %d)", checkpoint_path, run.global_step, run.global_step // run.steps_per_epoch
        )
