"""Fine-tune a backbone end to end with the paper's landmark regressor, on a user's own labelled frames.

:func:`finetune` trains every weight of a :class:`~contrastive_landmarks.Backbone` (random init, the built-in
face model, a ``pretrain`` output, a timm checkpoint) together with a :class:`~contrastive_landmarks.LandmarkRegressor`
on its stage maps (``K`` heatmaps per landmark, spatial soft-argmax, a linear combination: the paper's head,
trained through the backbone instead of on frozen features), and returns a
:class:`~contrastive_landmarks.LandmarkModel` that frames its input as it was trained (two passes by default:
the whole frame, then a crop around the animal; :mod:`contrastive_landmarks.framing`).

The recipe (``docs/notes/2026-12-benchmarks.md``, "Fine-tuning on a user's own keypoints", says which choices
were compared on validation frames):

- **views**: random square crops of the labelled frames (:mod:`.keypoint_views`): half of them the whole
  frame, half a box around the labelled points, with scale, rotation, translation, left/right flips where
  the parts are named so, brightness / contrast / blur; missing points drop out of the loss;
- **optimiser**: Adam, one learning rate for the backbone and ten times it for the head, a short linear
  warm-up, cosine decay over ``steps`` optimiser steps (not epochs), bfloat16 autocast for the backbone on
  CPUs that compute it natively;
- **selection**: the mean pixel error on held-out training frames, in their own pixels, through the same
  two-pass :meth:`~contrastive_landmarks.LandmarkModel.detect` a user calls; the best state is kept;
- **baseline and warnings**: the training frames' mean pose scored on the same frames, and plain words
  when the model is not clearly better or was still improving at its last step;
- **checkpoints**: every ``checkpoint_every`` steps and on Ctrl-C, with every random state, so that
  ``resume=True`` continues exactly (:class:`FinetuneInterrupted` says where the checkpoint is).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..backbone import Backbone
from ..calibration import fit_calibration
from ..coords import pixels_to_normalized
from ..device import autocast_dtype, resolve_device
from ..framing import crop_points, frame_boxes, framing_for_poses, mean_pose, pose_in_frames
from ..hypercolumn import Hypercolumn
from ..metrics import mean_pixel_error
from ..pipeline import LandmarkModel
from ..pose_relations import PoseRelations
from ..regressor import LandmarkRegressor, distribution_loss, regression_loss, spatial_softmax
from ._loop import BestState, FitResult, holdout_split, progress_bar, warmup_cosine
from .checkpoint import resume_checkpoint, save_checkpoint, training_state
from .features import check_dataset
from .finetune_config import FinetuneOptions
from .footage import RECORD_NAME, adapt_to_footage
from .interrupt import StopOnInterrupt, TrainingInterrupted
from .keypoint_views import KeypointViews
from .regressor_fitting import default_heatmaps, diagnose

__all__ = ["FinetuneInterrupted", "FinetuneOptions", "FinetuneResult", "finetune", "load_frames"]

CHECKPOINT_NAME = "finetune_checkpoint.pt"
#: The layout tag of a finetune checkpoint (those written before it had none, and still resume).
CHECKPOINT_FORMAT = "contrastive_landmarks.finetune/1"
#: Below this many labelled frames none is held out for validation: every frame trains, the last state is kept
#: and the likelihood stays the raw score. With 10 frames on lp-mirror-mouse, holding out 3 (which chose the step)
#: gave 15.2 px on 18 set-aside frames, training on all 10 12.3 px (benchmarks/results/sweep/lp-n10-hold-*).
MIN_FRAMES_TO_HOLD_OUT = 20


@dataclass
class FinetuneResult(FitResult):
    """What :func:`finetune` returns: the selected model and how it got there (:class:`~._loop.FitResult`: the
    validation error in pixels of each frame, beside the training frames' mean pose scored the same way; the
    history's records also hold ``seconds``).

    Attributes:
        model: the fine-tuned :class:`~contrastive_landmarks.LandmarkModel` (best validation state, eval mode).
    """

    model: LandmarkModel


class FinetuneInterrupted(TrainingInterrupted):
    """Ctrl-C during :func:`finetune`: a checkpoint of the last finished step was written to :attr:`checkpoint`."""


def load_frames(data: Any) -> tuple[list[Tensor], Tensor, Tensor]:
    """Every sample of a labelled dataset at its own size: frames ``[(3, H_i, W_i)]``, ``(M, N, 2)``, ``(M, N)``."""
    check_dataset(data, "train")
    frames, points, visible = [], [], []
    for i in range(len(data)):
        sample = data[i]
        if "keypoints" not in sample:
            raise ValueError("fine-tuning needs labelled samples ('keypoints' (N, 2) pixels)")
        frames.append(torch.as_tensor(sample["image"]).float())
        kp = torch.as_tensor(sample["keypoints"], dtype=torch.float32)
        vis = torch.as_tensor(sample.get("visible", torch.ones(kp.shape[0], dtype=torch.bool))).bool()
        points.append(kp)
        visible.append(vis & torch.isfinite(kp).all(-1))
    return frames, torch.stack(points), torch.stack(visible)


def _build_model(backbone: Backbone, views: KeypointViews, options: FinetuneOptions, names) -> LandmarkModel:
    size = options.image_size
    grid = size // options.heatmap_stride
    backbone.with_preprocessing(input_size=(size, size))
    hypercolumn = Hypercolumn(backbone, size=grid)
    n = views.keypoints.shape[1]
    k = options.heatmaps_per_landmark or default_heatmaps(n)
    regressor = LandmarkRegressor(
        hypercolumn.channels,
        n,
        k,
        softmax_multiplier=options.softmax_multiplier,
        size=grid,
        decode_window=options.decode_window,
    )
    regressor.reset_parameters(torch.Generator().manual_seed(options.seed))
    with torch.no_grad():  # start on unit-scale features: divide each channel's filter by its std on some views
        images, _, _ = views.sample(torch.arange(min(len(views), 16)), torch.Generator().manual_seed(options.seed))
        maps = hypercolumn.eval().image_stage_maps(images)
        std = torch.cat([m.float().std(dim=(0, 2, 3)) for m in maps]).clamp_min(1e-4)
        regressor.weight.div_(std[None])
    return LandmarkModel(
        hypercolumn, None, regressor, regressor_input="hypercolumn", landmark_names=names, framing=options.framing
    )


@torch.no_grad()
def _validate(model: LandmarkModel, frames, keypoints, visible) -> float:
    device = next(model.parameters()).device
    preds = [model.detect([f.to(device) for f in frames[i : i + 8]]).cpu() for i in range(0, len(frames), 8)]
    return mean_pixel_error(torch.cat(preds), keypoints, visible)


def _state(model, optimizer, schedule, generator, step, history, best: BestState, settings) -> dict:
    return training_state(
        CHECKPOINT_FORMAT,
        settings,
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        schedule=schedule.state_dict(),
        generator=generator.get_state(),
        step=step,
        history=history,
        best=best.state_dict(),
    )


def _schedule(optimizer, options: FinetuneOptions):
    warmup, steps = max(0, options.warmup), options.steps
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, steps, warmup, floor=0.01))


def finetune(
    backbone: Backbone,
    train: Any,
    val: Any | None = None,
    options: FinetuneOptions | None = None,
    *,
    videos: Sequence[str | os.PathLike] = (),
) -> FinetuneResult:
    """Train ``backbone`` and a landmark regressor end to end on labelled frames; select on validation frames.

    With ``videos``, the footage step comes first (once the labelled frames are read and checked): ``backbone``
    adapted to the videos by a short MoCo run (:func:`~.footage.adapt_to_footage`, ``options.footage``; its run
    goes to ``output_dir/footage``, resumable like the rest).

    Args:
        backbone: the starting :class:`~contrastive_landmarks.Backbone` (trained in place, unless the footage
            step replaces it with its adapted copy).
        train: labelled samples at their stored sizes (no resizing transform): ``image`` ``(3, H, W)`` in
            ``[0, 1]``, ``keypoints`` ``(N, 2)`` pixels, ``visible`` ``(N,)``. Its ``names`` and ``flip_pairs``
            attributes, when present, name the landmarks and allow flips.
        val: held-out labelled frames (never the test set); ``None``: ``options.val_fraction`` of ``train``.
        options: :class:`FinetuneOptions`.
        videos: the project's unlabelled recordings, for the footage step (none: no footage step).

    Raises:
        FinetuneInterrupted: on Ctrl-C, after writing a checkpoint to ``options.output_dir``.
        PretrainInterrupted: on Ctrl-C during the footage step (its checkpoint is in ``output_dir/footage``).
        FileNotFoundError: ``resume`` with nothing to resume in ``output_dir``.
    """
    options = options or FinetuneOptions()
    device = resolve_device(options.device)
    out = Path(options.output_dir) if options.output_dir else None
    begun = out is not None and (out / CHECKPOINT_NAME).is_file()
    if options.resume and not begun and not (videos and (out / "footage" / RECORD_NAME).is_file()):
        raise FileNotFoundError(f"nothing to resume: no {CHECKPOINT_NAME} in {options.output_dir}")
    names = list(getattr(train, "names", None) or [])
    flip_pairs = getattr(train, "flip_pairs", None)
    (frames, keypoints, visible), val_data = _training_frames(train, val, options, names)
    framing = framing_for_poses(options.framing, keypoints, visible, [tuple(f.shape[-2:]) for f in frames])
    options = dataclasses.replace(options, framing=framing)
    footage = None
    if videos and options.footage.steps:
        began = time.perf_counter()
        backbone = _adapt(backbone, videos, options, device)
        footage = {"videos": [str(v) for v in videos], "steps": options.footage.steps}
        footage["minutes"] = (time.perf_counter() - began) / 60
    views = KeypointViews(
        frames, keypoints, visible, options.image_size, framing=options.framing, flip_pairs=flip_pairs
    )
    model = _build_model(backbone, views, options, names).to(device)
    check = val_data if val_data is not None else (frames, keypoints, visible)
    sizes = [tuple(f.shape[-2:]) for f in check[0]]
    pose = mean_pose(keypoints, visible, [tuple(f.shape[-2:]) for f in frames])
    baseline = mean_pixel_error(pose_in_frames(pose, sizes), check[1], check[2])
    data = {"names": names, "train_frames": len(frames), "val_frames": 0 if val_data is None else len(check[0])}
    settings = {**options.settings, "data": data}
    if footage is not None:  # recorded only when it ran, so that checkpoints from before it still resume
        settings["footage"] = {**asdict(options.footage), "videos": [Path(v).name for v in videos]}
    history, best, step = _train(
        model, views, check, dataclasses.replace(options, resume=options.resume and begun), settings
    )
    model.load_state_dict(best.state)
    model.eval()
    score = best.score if val_data is not None else _validate(model, *check)
    problems: list[str] = []
    score, relations = _relate(model, (frames, keypoints, visible), val_data, score, options.relations)
    likelihood = _calibrate(model, val_data, problems)
    problems += diagnose("pixel", score, baseline, history, options.steps, step, val_data is not None)
    if options.steps < 200:
        problems.append(f"only {options.steps} optimiser steps: too few to fine-tune a backbone (the default is 1500)")
    config = {
        **{k: v for k, v in asdict(options).items() if k not in ("framing", "augment")},
        "framing": options.framing.config,
        "augment": {**asdict(options.augment), "rotation": views.rotation(options.augment)},
        "footage": footage,
        "likelihood": likelihood,
        "relations": relations,
        "device": str(device),
        "train_frames": len(frames),
        "val_frames": data["val_frames"],
        "mean_pose": pose.tolist(),
    }
    return FinetuneResult(
        model,
        score=score,
        baseline=baseline,
        best_step=best.step,
        steps=step,
        history=history,
        warnings=problems,
        config=config,
    )


def _training_frames(train: Any, val: Any | None, options: FinetuneOptions, names: Sequence[str]):
    """``((frames, keypoints, visible), val_data)``: the frames to fit on (the ``num_labelled`` subset, less the
    held-out ones) and the validation frames (``val``, else ``val_fraction`` of ``train``; ``None``: none)."""
    frames, keypoints, visible = load_frames(train)
    if options.num_labelled is not None:
        frames, keypoints, visible = _labelled_subset(frames, keypoints, visible, options.num_labelled, options.seed)
    if val is None:
        train_idx, val_idx = holdout_split(
            len(frames), options.val_fraction, options.seed, min_count=3, min_n=MIN_FRAMES_TO_HOLD_OUT
        )
        if val_idx and len(train_idx) < 2:
            raise ValueError(
                f"val_fraction {options.val_fraction} holds out {len(val_idx)} of {len(frames)} frames and leaves "
                f"{len(train_idx)} to train on: use a smaller fraction"
            )
        val_data = ([frames[i] for i in val_idx], keypoints[val_idx], visible[val_idx]) if val_idx else None
        frames, keypoints, visible = [frames[i] for i in train_idx], keypoints[train_idx], visible[train_idx]
    else:
        val_data = load_frames(val)
    never = [names[j] if names else str(j) for j in range(keypoints.shape[1]) if not bool(visible[:, j].any())]
    if never:
        raise ValueError(f"body parts {never} are labelled in none of the {len(frames)} training frames")
    return (frames, keypoints, visible), val_data


def _relate(model: LandmarkModel, fitted, val_data, score: float, max_ratio: float | None) -> tuple[float, str]:
    """Fit :class:`~contrastive_landmarks.pose_relations.PoseRelations` on the fitted frames' labels (one-pass
    models, ``max_ratio`` set) and keep them unless they make the validation frames worse; returns the validation
    score after this step and what was done, in words."""
    if max_ratio is None or (model.framing is not None and model.framing.stages == 2):
        return score, "none (" + ("turned off" if max_ratio is None else "a two-stage model") + ")"
    frames, keypoints, visible = fitted
    side = model.input_size  # the letterboxed frame, as the one pass sees it
    boxes = frame_boxes([tuple(f.shape[-2:]) for f in frames])
    poses = pixels_to_normalized(crop_points(keypoints.float(), boxes, side[0]), side)
    relations = PoseRelations.fit(poses, visible, max_ratio=max_ratio).to(next(model.parameters()).device)
    if not len(relations):
        return score, relations.describe()
    model.relations = relations
    if val_data is None:
        return score, relations.describe(model.landmark_names) + " (no validation frames to check them)"
    related = _validate(model, *val_data)
    if related > score:
        model.relations = None
        return score, f"none: {len(relations)} relations made validation worse ({related:.2f} > {score:.2f} px)"
    return related, relations.describe(model.landmark_names) + f" (validation {score:.2f} -> {related:.2f})"


def _calibrate(model: LandmarkModel, val_data, problems: list[str]) -> str | None:
    """Fit the model's likelihood on the validation frames (:func:`~contrastive_landmarks.calibration.fit_calibration`,
    attached to the model); returns its description, or ``None`` (with the reason in ``problems``) without one."""
    if val_data is None:
        problems.append("no validation frames: the likelihood is the raw score, not calibrated")
        return None
    frames, keypoints, visible = val_data
    try:
        return fit_calibration(model, frames, keypoints, visible).describe()
    except ValueError as error:
        problems.append(f"the likelihood is the raw score, not calibrated: {error}")
        return None


def _adapt(backbone: Backbone, videos, options: FinetuneOptions, device: torch.device) -> Backbone:
    """The footage step, in ``output_dir/footage`` (a temporary folder without an output directory)."""
    kwargs = {"device": str(device), "resume": options.resume, "progress": options.progress}
    if options.output_dir:
        return adapt_to_footage(backbone, videos, Path(options.output_dir) / "footage", options.footage, **kwargs)
    with tempfile.TemporaryDirectory() as folder:
        return adapt_to_footage(backbone, videos, folder, options.footage, **kwargs)


def _labelled_subset(frames, keypoints: Tensor, visible: Tensor, count: int, seed: int):
    """A seeded subset of ``count`` frames (the few-label setting), in their original order."""
    if count > len(frames):
        raise ValueError(f"num_labelled {count} is more than the {len(frames)} labelled training frames")
    chosen = sorted(torch.randperm(len(frames), generator=torch.Generator().manual_seed(seed))[:count].tolist())
    return [frames[i] for i in chosen], keypoints[chosen], visible[chosen]


def _train(model: LandmarkModel, views: KeypointViews, check, options: FinetuneOptions, settings: dict):
    """The optimisation loop: returns ``(history, best, last_step)``."""
    backbone, head = model.backbone, list(model.regressor.parameters())
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(
        [
            {"params": list(backbone.parameters()), "lr": options.lr},
            {"params": head, "lr": options.lr * options.head_lr_multiplier},
        ],
        weight_decay=options.weight_decay,
    )
    schedule = _schedule(optimizer, options)
    generator = torch.Generator().manual_seed(options.seed)
    history: list[dict[str, float]] = []
    best = BestState(model)
    start = 0
    path = Path(options.output_dir) / CHECKPOINT_NAME if options.output_dir else None
    if options.resume:
        kind = "finetune checkpoint"
        state = resume_checkpoint(path, settings, formats=(CHECKPOINT_FORMAT, None), kind=kind, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        start, history = int(state["step"]), list(state["history"])
        best.load_state_dict(state["best"])
    dtype = autocast_dtype(device, options.precision)
    eval_every = options.eval_every or max(25, options.steps // 20)
    bar = _bar(options, start)
    began, running, step = time.perf_counter(), 0.0, start
    with StopOnInterrupt(path is not None) as interrupt:
        try:
            for step in range(start + 1, options.steps + 1):
                running += _step(model, views, options, optimizer, schedule, generator, dtype)
                if bar is not None:
                    bar.update(1)
                if step % eval_every == 0 or step == options.steps:
                    error = _validate(model, *check)
                    history.append(
                        {
                            "step": step,
                            "lr": optimizer.param_groups[0]["lr"],
                            "train_loss": running / eval_every,
                            "val_error": error,
                            "seconds": time.perf_counter() - began,
                        }
                    )
                    running = 0.0
                    best.update(error, step, model)
                    if bar is not None:
                        bar.set_postfix(val_px=f"{error:.3g}", best=f"{best.score:.3g}", refresh=False)
                last = step == options.steps
                if path is not None and (step % options.checkpoint_every == 0 or last or interrupt.requested):
                    save_checkpoint(_state(model, optimizer, schedule, generator, step, history, best, settings), path)
                if interrupt.requested and not last:
                    raise FinetuneInterrupted(step, path)
        finally:
            if bar is not None:
                bar.close()
    return history, best, step


def _step(model: LandmarkModel, views: KeypointViews, options: FinetuneOptions, optimizer, schedule, generator, dtype):
    """One optimiser step on a fresh batch of views (autocast to ``dtype`` unless ``None``); returns the loss."""
    regressor = model.regressor
    model.train()
    index = torch.randint(len(views), (options.batch_size,), generator=generator)
    device = regressor.weight.device
    images, points, visible = (t.to(device) for t in views.sample(index, generator, options.augment))
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        maps = model.hypercolumn.image_stage_maps(images)
    heatmaps = regressor.heatmaps([m.float() for m in maps], regressor.size)
    target = pixels_to_normalized(points, (options.image_size, options.image_size))
    loss = regression_loss(regressor.decode(heatmaps), target, visible)
    if options.heatmap_loss:
        probs = spatial_softmax(heatmaps, regressor.softmax_multiplier)
        loss = loss + options.heatmap_loss * distribution_loss(
            probs, target, visible, heatmaps.shape[-2:], options.sigma
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()
    return float(loss.detach())


def _bar(options: FinetuneOptions, start: int):
    return progress_bar(options.progress, options.steps, "finetune", "step", initial=start, mininterval=2.0)
