"""MoCo pretraining loop: one function, one config dataclass (:mod:`.pretrain_config`), resumable to the batch.

``pretrain(PretrainConfig(...))`` trains a :class:`~contrastive_landmarks.train.moco.MoCo` model on
unlabelled images and writes, under ``output_dir``:

- ``checkpoint.pt`` -- every ``checkpoint_every`` steps and at the end, atomically: query and key
  encoders, queue and pointer, optimiser, schedule, AMP scaler, every RNG state and the data position
  (epoch, step within the epoch). ``resume=True`` continues from it; the data order of an epoch is a
  permutation seeded by ``seed + epoch`` and the augmentations of a step are seeded by
  ``(seed, step, rank)``, so a resumed run consumes exactly the batches an uninterrupted run would,
  and ends with bit-identical weights (on the same device and thread count).
- ``log.jsonl`` -- one JSON record per ``log_every`` steps (loss, accuracy, lr, images/s; with
  ``equivariance > 0`` also ``moco_loss`` and ``equivariance_loss``, the two terms of ``loss``).
- ``config.json`` -- the configuration; ``backbone/`` -- the exported backbone at the end (``export``).

Distributed: launch with ``torchrun --nproc_per_node=G [--nnodes=N ...] script.py``; the process group
is initialised from the environment (``env://``), one process per GPU, DistributedDataParallel,
``batch_size`` is the *global* batch. Without torchrun the same code runs in one process (CPU or GPU).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader

from ..backbone import DEFAULT_STAGES, Backbone, load_backbone
from ..hub import save_pretrained
from ..tps import TPSParams, make_pair
from .checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from .images import PretrainImages, cache_images
from .interrupt import StopOnInterrupt, TrainingInterrupted
from .moco import MoCo
from .moco_views import MoCoAugment, Preset, get_preset
from .pretrain_config import CosineSchedule, PretrainConfig

__all__ = ["CosineSchedule", "PretrainConfig", "PretrainInterrupted", "export_backbone", "pretrain"]

logger = logging.getLogger(__name__)
CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"
_FORMAT = "contrastive_landmarks.moco/1"


# -- set-up helpers ---------------------------------------------------------------------------
def _setup_distributed(config: PretrainConfig) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if config.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(config.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    return rank, world, device


def _precision(config: PretrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (``None``: full float32).

    ``auto``: bfloat16 on a GPU that has it (else float16), bfloat16 on a CPU with native bfloat16 arithmetic
    (AVX512-BF16 / AMX: 1.8x the float32 ResNet step here, ``benchmarks/bench_moco.py``), float32 otherwise.
    """
    if config.precision == "fp32":
        return None
    if config.precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and _cpu_has_bf16() else None
    return torch.float16 if config.precision == "fp16" else torch.bfloat16


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _step_generator(*key: int) -> torch.Generator:
    seed = 0
    for k in key:
        seed = (seed * 1_000_003 + int(k)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def _check_resumable(saved: dict, config: PretrainConfig, num_images: int) -> None:
    old = {"equivariance": 0.0, "init": None, **saved["config"]}  # checkpoints from before these fields
    fixed = (
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
    )
    changed = [f"{k}: {old.get(k)!r} -> {getattr(config, k)!r}" for k in fixed if old.get(k) != getattr(config, k)]
    if saved["num_images"] != num_images:
        changed.append(f"number of images: {saved['num_images']} -> {num_images}")
    if changed:
        raise ValueError(
            "cannot resume: the checkpoint was trained with different settings ("
            + "; ".join(changed)
            + "); use another output_dir or resume=False"
        )


def _logged_step(line: str) -> float:
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")  # a line cut short by a kill: dropped


class _Logger:
    """``log.jsonl`` (and TensorBoard); a resumed run first drops the records after its checkpoint's step,
    which the interrupted run wrote and this one is about to redo."""

    def __init__(self, directory: Path, enabled: bool, tensorboard: bool, resumed_at: int = 0) -> None:
        self.enabled = enabled
        self.path = directory / LOG_NAME
        self.writer = None
        if enabled and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if _logged_step(line) <= resumed_at]
            self.path.write_text("".join(line + "\n" for line in kept))
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                logger.warning("TensorBoard logging skipped: %s (pip install tensorboard)", error)
            else:
                self.writer = SummaryWriter(str(directory / "tensorboard"))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key in ("loss", "accuracy", "lr", "images_per_s"):
                self.writer.add_scalar(f"moco/{key}", record[key], record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# -- the run's parts ---------------------------------------------------------------------------------
@dataclass
class _Run:
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
    schedule: CosineSchedule
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


def _build(config: PretrainConfig, rank: int, world: int, device: torch.device) -> _Run:
    """Data, model, augmentation, optimiser and schedule of a fresh run (raises ValueError on bad sizes)."""
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
    autocast_dtype = _precision(config, device)
    return _Run(
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
        schedule=CosineSchedule(config.schedule, config.lr, config.epochs, steps_per_epoch),
        scaler=torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16),
        autocast_dtype=autocast_dtype,
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


def _state(run: _Run) -> dict:
    """The checkpoint of ``run`` at its current step."""
    preset, model = run.preset, run.model
    return {
        "format": _FORMAT,
        "config": asdict(run.config),
        "num_images": run.num_images,
        "steps_per_epoch": run.steps_per_epoch,
        "preset": {
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
        "encoder_q": model.encoder_q.state_dict(),
        "encoder_k": model.encoder_k.state_dict(),
        "queue": model.queue.detach().cpu().clone(),
        "queue_ptr": model.queue_ptr.detach().cpu().clone(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.schedule.state_dict(),
        "scaler": run.scaler.state_dict(),
        "rng": get_rng_state(),
        "position": {
            "global_step": run.global_step,
            "epoch": run.global_step // run.steps_per_epoch,
            "step_in_epoch": run.global_step % run.steps_per_epoch,
        },
        "train_time_s": run.train_time,
    }


def _restore(run: _Run, checkpoint_path: Path) -> None:
    """Continue ``run`` from its checkpoint (the settings that fix the data order must be unchanged)."""
    saved = load_checkpoint(checkpoint_path)
    if saved.get("format") != _FORMAT:
        raise ValueError(f"{checkpoint_path} is not a MoCo pretraining checkpoint of this library")
    _check_resumable(saved, run.config, run.num_images)
    run.model.encoder_q.load_state_dict(saved["encoder_q"])
    run.model.encoder_k.load_state_dict(saved["encoder_k"])
    run.model.queue.copy_(saved["queue"])
    run.model.queue_ptr.copy_(saved["queue_ptr"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.schedule.load_state_dict(saved["scheduler"])
    run.schedule.epochs, run.schedule.base_lr = run.config.epochs, run.config.lr  # a resume may extend the schedule
    run.scaler.load_state_dict(saved["scaler"])
    set_rng_state(saved["rng"])
    run.global_step = int(saved["position"]["global_step"])
    run.train_time = float(saved.get("train_time_s", 0.0))
    if run.rank == 0:
        logger.info(
            "resumed %s at step %d (epoch %d)", checkpoint_path, run.global_step, run.global_step // run.steps_per_epoch
        )


def _batches(run: _Run, images: Tensor | None) -> Iterator[tuple[int, Tensor]]:
    """``(epoch, uint8 batch)`` for every step from ``run.global_step`` to ``run.target``, in the run's data order.

    The order of epoch ``e`` is a permutation seeded by ``seed + e``, so it depends on the position only.
    """
    config, batch = run.config, run.config.batch_size
    step = run.global_step
    while step < run.target:
        epoch, first = divmod(step, run.steps_per_epoch)
        order = torch.randperm(run.num_images, generator=torch.Generator().manual_seed(config.seed + epoch))
        last = min(run.steps_per_epoch, first + run.target - step)
        local = slice(run.rank * run.local_batch, (run.rank + 1) * run.local_batch)
        indices = [order[s * batch : (s + 1) * batch][local] for s in range(first, last)]
        if images is not None:
            source = (images[b] for b in indices)
        else:
            loader = DataLoader(
                run.dataset,
                batch_sampler=[b.tolist() for b in indices],
                num_workers=config.num_workers,
                pin_memory=run.device.type == "cuda",
            )
            source = (item["image"] for item in loader)
        for images_of_step in source:
            yield epoch, images_of_step
        step += last - first
        if run.world > 1:
            dist.barrier()


#: The equivariance term's warps: DVE's TPS distribution, applied once to each query view (the first warp
#: of :func:`~contrastive_landmarks.tps.make_pair` is the identity, so its ``image2`` is the view itself).
EQUIVARIANCE_WARPS = TPSParams(im1_multiplier=0.0, im1_multiplier_aff=0.0)


def _warped(run: _Run, im_q: Tensor) -> tuple[Tensor, Tensor] | None:
    """A TPS warp of each query view and its correspondence grid (``None`` without the equivariance term)."""
    if not run.config.equivariance:
        return None
    generator = _step_generator(run.config.seed, run.global_step, run.rank, 1)
    pair = make_pair(im_q, params=EQUIVARIANCE_WARPS, generator=generator)
    return pair.image1.contiguous(memory_format=torch.channels_last) if run.channels_last else pair.image1, pair.grid


def _step(run: _Run, epoch: int, batch: Tensor) -> tuple[Tensor, Tensor, float]:
    """One optimisation step on a uint8 batch: ``(loss, accuracy, lr)``; advances ``run.global_step``."""
    config = run.config
    lr = run.schedule(epoch, run.global_step % run.steps_per_epoch)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    batch = batch.to(run.device, non_blocking=True)
    views = run.augment(torch.cat([batch, batch]), _step_generator(config.seed, run.global_step, run.rank))
    im_q, im_k = views.chunk(2)
    if run.channels_last:
        im_q = im_q.contiguous(memory_format=torch.channels_last)
        im_k = im_k.contiguous(memory_format=torch.channels_last)
    warped = _warped(run, im_q)
    dtype = run.autocast_dtype
    with torch.autocast(run.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss, accuracy = run.runner(
            im_q, im_k, generator=_step_generator(config.seed, run.global_step, -1), warped=warped
        )
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.global_step += 1
    return loss, accuracy, lr


def _train(run: _Run, images: Tensor | None, log: _Logger, checkpoint_path: Path) -> list[dict]:
    """The loop: steps to ``run.target``, logging, checkpoints, a progress bar, Ctrl-C at a step boundary."""
    config, main_process = run.config, run.rank == 0
    bar = None
    if config.progress and main_process:
        from tqdm.auto import tqdm

        bar = tqdm(total=run.target, initial=run.global_step, unit="step", desc="MoCo", dynamic_ncols=True)
    history: list[dict] = []
    run.model.train()
    throughput = None
    try:
        with StopOnInterrupt(run.world == 1) as interrupt:
            for epoch, batch in _batches(run, images):
                tick = time.perf_counter()
                loss, accuracy, lr = _step(run, epoch, batch)
                elapsed = time.perf_counter() - tick
                run.train_time += elapsed
                rate = config.batch_size / max(elapsed, 1e-9)
                throughput = rate if throughput is None else 0.9 * throughput + 0.1 * rate
                logged = run.global_step % config.log_every == 0 or run.global_step == run.target
                if logged or bar is not None:
                    loss_value = float(loss.detach())
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.4g}", img_s=f"{throughput:.0f}", refresh=False)
                if logged:
                    record = {
                        "step": run.global_step,
                        "epoch": epoch,
                        "loss": loss_value,
                        "accuracy": float(accuracy.detach()),
                        "lr": lr,
                        "images_per_s": throughput,
                        "train_time_s": run.train_time,
                    }
                    if config.equivariance:
                        record.update({f"{k}_loss": float(v) for k, v in run.model.terms.items()})
                    history.append(record)
                    log.log(record)
                due = run.global_step % config.checkpoint_every == 0 or run.global_step == run.target
                if main_process and (due or interrupt.requested):
                    save_checkpoint(_state(run), checkpoint_path)
                if interrupt.requested:
                    raise PretrainInterrupted(run.global_step, checkpoint_path)
    finally:
        if bar is not None:
            bar.close()
        log.close()
    return history


#: A run whose loss over its last quarter stays above this share of chance, ln(1 + queue size), has hardly
#: learned to tell views of one image from the others (the built-in face run went from 8.3 to 3.3). Its backbone
#: may still be useful: on the mirror-mouse video, runs at 5.96-5.99 against 6.24 improved a frozen probe by 16-25 %.
CHANCE_SHARE = 0.9


def learning_check(history: list[dict], queue_size: int, min_steps: int = 100) -> str | None:
    """A warning when MoCo's loss stayed near chance over a run of at least ``min_steps`` logged steps.

    Args:
        history: log records (``{"step", "loss", ...}``) of one call, in order.
        queue_size: MoCo's number of negatives ``K``; chance is ``ln(1 + K)``.
    """
    if len(history) < 4 or history[-1]["step"] - history[0]["step"] < min_steps:
        return None
    chance = math.log(1 + queue_size)
    tail = history[-max(1, len(history) // 4) :]
    loss = sum(r.get("moco_loss", r["loss"]) for r in tail) / len(tail)  # MoCo's term alone
    if loss < CHANCE_SHARE * chance:
        return None
    return (
        f"MoCo's loss stayed near chance ({loss:.2f} over the last {len(tail)} logged steps; chance ln(1 + "
        f"{queue_size}) = {chance:.2f}): the encoder hardly tells views of one image from the others yet, so "
        "compare the backbone with its start on your own validation frames (a quick fit-regressor) before "
        "relying on it. With video, near-identical neighbouring frames are each other's negatives and small "
        "crops of a whole frame miss the animal: keep crops large (--min-scale; the animals preset's 0.7), sample "
        "frames further apart (--every), add more footage, or train longer"
    )


# -- the entry point -------------------------------------------------------------------------------
class PretrainInterrupted(TrainingInterrupted):
    """Ctrl-C during :func:`pretrain`: the checkpoint of the last finished step is at :attr:`checkpoint`."""


def pretrain(config: PretrainConfig) -> dict:
    """Run (or resume) MoCo pretraining; see the module docstring for what is written.

    Returns:
        ``{"checkpoint": Path, "global_step": int, "epoch": int, "finished": bool, "history": [records],
        "backbone": Path | None, "warning": str | None}``; ``history`` holds the log records written by
        this call; ``warning`` says when the loss stayed near chance (:func:`learning_check`).

    Raises:
        FileExistsError: ``output_dir`` holds a checkpoint and ``resume`` is false.
        ValueError: bad settings, fewer images than one batch, or a checkpoint of other settings.
        PretrainInterrupted: on Ctrl-C (one process), after writing the checkpoint of the last finished step.
    """
    config.validate()
    if config.threads:
        torch.set_num_threads(int(config.threads))
    rank, world, device = _setup_distributed(config)
    main_process = rank == 0
    out = Path(config.output_dir)
    checkpoint_path = out / CHECKPOINT_NAME
    if checkpoint_path.exists() and not config.resume:
        raise FileExistsError(f"{checkpoint_path} exists: pass resume=True to continue it, or use another output_dir")
    run = _build(config, rank, world, device)
    if config.resume and checkpoint_path.exists():
        _restore(run, checkpoint_path)
    model = run.model
    if config.sync_bn and world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    run.runner = model
    if world > 1:
        run.runner = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    cache_bytes = run.num_images * 3 * run.preset.resize**2
    use_cache = config.cache == "yes" or (config.cache == "auto" and cache_bytes <= config.cache_gb * 2**30)
    images = None
    if use_cache and run.global_step < run.target:
        images = cache_images(run.dataset, num_workers=config.num_workers, progress=config.progress and main_process)
    log = _Logger(out, main_process, config.tensorboard, resumed_at=run.global_step)
    history = _train(run, images, log, checkpoint_path)
    if main_process and not checkpoint_path.exists():
        save_checkpoint(_state(run), checkpoint_path)
    finished = run.global_step >= run.total_steps
    exported = None
    if main_process and finished and config.export:
        exported = export_backbone(checkpoint_path, out / "backbone")
    if world > 1:
        dist.barrier()
    warning = learning_check(history, config.queue_size)
    if warning and main_process:
        warnings.warn(warning, UserWarning, stacklevel=2)
    return {
        "warning": warning,
        "checkpoint": checkpoint_path,
        "global_step": run.global_step,
        "epoch": run.global_step // run.steps_per_epoch,
        "finished": finished,
        "history": history,
        "backbone": exported,
    }


# -- export ----------------------------------------------------------------------------------------
def export_backbone(
    checkpoint_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    card_info: dict | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write the query encoder's backbone of a pretraining checkpoint as a Hub-layout directory.

    ``load_backbone(out_dir)`` reads it back (the paper's default hypercolumn stages, the preset's
    mean/std and input size in ``config.json``). The model card lists the data, recipe, epochs,
    steps and training time; ``card_info`` adds or overrides entries (e.g. ``{"license": ...}``);
    ``dtype`` (e.g. ``torch.float16``) stores the weights in that precision (loading casts back).

    Returns:
        ``Path(out_dir)``.
    """
    saved = load_checkpoint(checkpoint_path)
    if saved.get("format") != _FORMAT:
        raise ValueError(f"{checkpoint_path} is not a MoCo pretraining checkpoint of this library")
    config, preset = saved["config"], saved["preset"]
    size = int(preset["image_size"])
    backbone = Backbone(config["arch"], DEFAULT_STAGES, mean=preset["mean"], std=preset["std"], input_size=(size, size))
    prefix = "backbone.body."
    body = {k.removeprefix(prefix): v for k, v in saved["encoder_q"].items() if k.startswith(prefix)}
    backbone.body.load_state_dict(body, strict=True)
    position = saved["position"]
    info = {
        "data": ", ".join([*config["data"], *config.get("video", [])]),
        "images": saved["num_images"],
        "recipe": (
            f"MoCo ({'MLP' if config['mlp_head'] else 'linear'} {config['dim']}-d head), queue "
            f"{config['queue_size']}, temperature {config['temperature']}, key momentum "
            f"{config['key_momentum']}; SGD lr {config['lr']} momentum {config['momentum']} wd "
            f"{config['weight_decay']}, {config['schedule']} schedule, batch {config['batch_size']}; "
            f"preset {preset['name']} ({size} px, border {preset['border']}), "
            f"jpeg={preset.get('jpeg', config['jpeg'])}, blur={preset.get('blur', config['blur'])}, "
            f"min_scale={preset.get('min_scale', config['min_scale'])}, "
            f"equivariance={config.get('equivariance', 0.0)}"
        ),
        "epochs": f"{position['global_step'] / saved['steps_per_epoch']:.2f} of {config['epochs']} "
        f"({position['global_step']} steps)",
        "training time": f"{saved.get('train_time_s', 0.0) / 3600:.2f} h",
        "seed": config["seed"],
    }
    info.update(card_info or {})
    rows = "\n".join(f"| {key} | {value} |" for key, value in info.items())
    card = (
        f"---\nlibrary_name: contrastive_landmarks\ntags: [landmarks, keypoints, moco]\n---\n\n"
        f"# {config['arch']} MoCo backbone\n\nSelf-supervised (MoCo) {config['arch']} for object-landmark "
        f"representations (Cheng, Su & Maji, ICCV 2021). Load with "
        f'`contrastive_landmarks.load_backbone("{Path(out_dir).name}")`.\n\n'
        f"| item | value |\n|---|---|\n{rows}\n"
    )
    return save_pretrained(out_dir, backbone.body.state_dict(), backbone.config, card=card, dtype=dtype)
