"""MoCo pretraining loop: one function, one config dataclass (:mod:`.pretrain_config`), resumable to the batch.

``pretrain(PretrainConfig(...))`` trains a :class:`~contrastive_landmarks.train.moco.MoCo` model on
unlabelled images and writes, under ``output_dir``:

- ``checkpoint.pt`` -- every ``checkpoint_every`` steps and at the end, atomically: query and key
  encoders, queue and pointer, optimiser, AMP scaler, every RNG state, the data position (epoch, step within
  the epoch) and the settings a resume must match (:func:`~.checkpoint.training_state`; the learning rate is a
  function of the position). ``resume=True`` continues from it; the data order of an epoch is a
  permutation seeded by ``seed + epoch`` and the augmentations of a step are seeded by
  ``(seed, step, rank)``, so a resumed run consumes exactly the batches an uninterrupted run would,
  and ends with bit-identical weights (on the same device and thread count).
- ``log.jsonl`` -- one JSON record per ``log_every`` steps (loss, accuracy, lr, images/s; with
  ``equivariance > 0`` also ``moco_loss`` and ``equivariance_loss``, the two terms of ``loss``).
- ``config.json`` -- the configuration; ``backbone/`` -- the exported backbone at the end (``export``).

Distributed: launch with ``torchrun --nproc_per_node=G [--nnodes=N ...] script.py``; the process group
is initialised from the environment (``env://``), one process per GPU, DistributedDataParallel,
``batch_size`` is the *global* batch. Without torchrun the same code runs in one process (CPU or GPU).

This module is the loop (data order, step, checkpoints, Ctrl-C); the run's parts live beside it:
:mod:`.pretrain_run` (built fresh or restored, the device and its autocast dtype, the resume check),
:mod:`.pretrain_log` (``log.jsonl`` and the near-chance warning), :mod:`.pretrain_export` (the backbone as a
model directory); the learning rate of a step is :meth:`~.pretrain_config.PretrainConfig.learning_rate`.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader

from ..tps import TPSParams, make_pair
from ._loop import progress_bar
from .checkpoint import save_checkpoint
from .images import cache_images
from .interrupt import StopOnInterrupt, TrainingInterrupted
from .pretrain_config import PretrainConfig
from .pretrain_export import export_backbone
from .pretrain_log import RunLog, learning_check
from .pretrain_run import Run, build_run, restore_run, run_state, setup_distributed

__all__ = ["PretrainConfig", "PretrainInterrupted", "export_backbone", "learning_check", "pretrain"]

CHECKPOINT_NAME = "checkpoint.pt"


def _step_generator(*key: int) -> torch.Generator:
    seed = 0
    for k in key:
        seed = (seed * 1_000_003 + int(k)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def _batches(run: Run, images: Tensor | None) -> Iterator[tuple[int, Tensor]]:
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


def _warped(run: Run, im_q: Tensor) -> tuple[Tensor, Tensor] | None:
    """A TPS warp of each query view and its correspondence grid (``None`` without the equivariance term)."""
    if not run.config.equivariance:
        return None
    generator = _step_generator(run.config.seed, run.global_step, run.rank, 1)
    pair = make_pair(im_q, params=EQUIVARIANCE_WARPS, generator=generator)
    return pair.image1.contiguous(memory_format=torch.channels_last) if run.channels_last else pair.image1, pair.grid


def _step(run: Run, batch: Tensor) -> tuple[Tensor, Tensor, float]:
    """One optimisation step on a uint8 batch: ``(loss, accuracy, lr)``; advances ``run.global_step``."""
    config = run.config
    lr = run.lr
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


def _train(run: Run, images: Tensor | None, log: RunLog, checkpoint_path: Path) -> list[dict]:
    """The loop: steps to ``run.target``, logging, checkpoints, a progress bar, Ctrl-C at a step boundary."""
    config, main_process = run.config, run.rank == 0
    bar = progress_bar(
        config.progress and main_process, run.target, "MoCo", "step", run.global_step, dynamic_ncols=True
    )
    history: list[dict] = []
    run.model.train()
    throughput = None
    try:
        with StopOnInterrupt(run.world == 1) as interrupt:
            for epoch, batch in _batches(run, images):
                tick = time.perf_counter()
                loss, accuracy, lr = _step(run, batch)
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
                    save_checkpoint(run_state(run), checkpoint_path)
                if interrupt.requested:
                    raise PretrainInterrupted(run.global_step, checkpoint_path)
    finally:
        if bar is not None:
            bar.close()
        log.close()
    return history


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
    rank, world, device = setup_distributed(config)
    main_process = rank == 0
    out = Path(config.output_dir)
    checkpoint_path = out / CHECKPOINT_NAME
    if checkpoint_path.exists() and not config.resume:
        raise FileExistsError(f"{checkpoint_path} exists: pass resume=True to continue it, or use another output_dir")
    run = build_run(config, rank, world, device)
    if config.resume and checkpoint_path.exists():
        restore_run(run, checkpoint_path)
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
    log = RunLog(out, main_process, config.tensorboard, resumed_at=run.global_step)
    history = _train(run, images, log, checkpoint_path)
    if main_process and not checkpoint_path.exists():
        save_checkpoint(run_state(run), checkpoint_path)
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
