"""The ``fit-regressor`` subcommand: ``train.fit_regressor`` with its defaults, saved as a model directory."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .common import (
    UserError,
    add_dataset_arguments,
    add_model_arguments,
    check_output_dir,
    describe_backbone,
    fail,
    labelled_dataset,
    load_hypercolumn,
    progress_available,
    resolve_device_option,
    setup,
    split_train_val,
)
from .reporting import TensorBoardLog, arch_name, args_json, data_info, model_card, write_json

__all__ = ["add_fit_regressor_parser"]


def _load_projector(path: str, channels: int):
    from ..pipeline import LandmarkModel

    projector = LandmarkModel.from_pretrained(path).projector
    if projector is None:
        raise UserError(f"{path} holds no projector (expected a directory written by fit-projector)")
    if projector.in_channels != channels:
        raise UserError(
            f"the projector in {path} expects {projector.in_channels} channels but the backbone's "
            f"hypercolumn has {channels}"
        )
    return projector


class _Fitted(NamedTuple):
    """What :func:`_fit` gives the writing half: the features, the projector, the fit and what it was fitted on."""

    features: Any  # Hypercolumn
    projector: Any  # SpatialProjector | None
    result: Any  # RegressorFit
    names: Sequence[str]
    train_part: list[int]
    val_part: list[int]
    seconds: float


def _fit(args: argparse.Namespace) -> _Fitted:
    """The options checked, the data split (and the few-shot draw), the backbone loaded and the regressor fitted;
    a wrong option raises :class:`UserError` (or the library's ``ValueError`` / ``FileNotFoundError`` /
    ``TypeError``) before any training."""
    import torch

    from ..data.base import KeypointSubset
    from ..train import Augment, fit_regressor

    if not args.output:
        raise UserError("--output DIR is required (where the model directory is written)")
    check_output_dir(args.output)
    resolve_device_option(args)
    if args.max_views < 1:
        raise UserError(f"--max-views must be at least 1, got {args.max_views}")
    features = load_hypercolumn(args)
    dataset = labelled_dataset(args, jitter=args.face_crop)
    clean = labelled_dataset(args) if args.face_crop else dataset
    train_part, val_part = split_train_val(len(dataset), args.val_fraction, args.split_seed, args.max_val)
    if args.num_labelled is not None:
        if not 0 < args.num_labelled <= len(train_part):
            raise UserError(f"--num-labelled {args.num_labelled}: the training part has {len(train_part)} images")
        pick = torch.randperm(len(train_part), generator=torch.Generator().manual_seed(args.seed))
        train_part = sorted(train_part[i] for i in pick[: args.num_labelled].tolist())
    eye_indices = args.eye_indices or getattr(dataset, "eye_indices", None)
    if args.metric == "iod" and eye_indices is None:
        raise UserError("--metric iod needs --eye-indices (the dataset names no eyes)")
    if args.size is not None:
        features.size = (args.size, args.size)
    projector = _load_projector(args.projector, features.channels) if args.projector else None
    names = args.landmark_names or getattr(dataset, "names", None) or ()
    if names and len(names) != dataset[0]["keypoints"].shape[0]:
        raise UserError(f"{len(names)} --landmark-names for {dataset[0]['keypoints'].shape[0]} landmarks")
    started = time.time()
    result = fit_regressor(
        features,
        KeypointSubset(dataset, train_part),
        KeypointSubset(clean, val_part) if val_part else None,
        heatmaps_per_landmark=args.heatmaps,
        init=args.init,
        steps=args.steps,
        batch_size=args.batch_size,
        max_views=args.max_views,
        lr=args.lr,
        weight_decay=args.weight_decay,
        augment=Augment.none() if args.no_augment else None,
        standardize=not args.no_standardize,
        metric=args.metric,
        eye_indices=eye_indices,
        seed=args.seed,
        patience=args.patience,
        device=args.device,
        progress=progress_available(not args.no_progress),
        warn=False,
    )
    return _Fitted(features, projector, result, names, train_part, val_part, time.time() - started)


def _score(result) -> str:
    """The validation error beside the mean shape's, with the step it was reached at."""
    unit = {"iod": " % of the inter-ocular distance", "pixel": " px"}.get(result.metric, "")
    return (
        f"{result.score:.4g}{unit} (mean shape {result.baseline:.4g}{unit}; step {result.best_step} of {result.steps})"
    )


def _card(args: argparse.Namespace, fitted: _Fitted, score: str) -> str:
    """The model card (README.md): the backbone, the data, the recipe, the validation error and the warnings."""
    result, features = fitted.result, fitted.features
    info = {
        "backbone": describe_backbone(args),
        "data": data_info(args),
        "labelled images": f"{len(fitted.train_part)} (+ {len(fitted.val_part)} validation)",
        "recipe": f"linear regressor ({args.init} start), {result.config['heatmaps_per_landmark']} heatmaps per "
        "landmark on the "
        f"{result.regressor.size[0]}x{result.regressor.size[1]} hypercolumn of {args.image_size}-px "
        f"inputs; {result.config['views']} augmented views; Adam lr {args.lr} wd {args.weight_decay}, "
        f"batch {args.batch_size}, {args.steps} steps, cosine, early stopping",
        "validation error": score,
        "training time": f"{fitted.seconds / 60:.1f} min",
    }
    if result.warnings:
        info["warnings"] = "; ".join(result.warnings)
    return model_card(
        f"{arch_name(features)} landmark model",
        "Hypercolumn features and a linear landmark regressor "
        "(Cheng, Su & Maji, ICCV 2021). Load with `LandmarkModel.from_pretrained(DIR)`; "
        "`model.detect(images)` gives (B, N, 2) pixels.",
        info,
    )


def _save(args: argparse.Namespace, fitted: _Fitted, score: str) -> Path:
    """The model directory (backbone, regressor, projector, card) and ``fit_regressor.json`` beside it."""
    from ..framing import Framing
    from ..pipeline import LandmarkModel

    features, result = fitted.features, fitted.result
    # the model directory records the input size it was fitted at, which detect() then resizes to
    features.backbone.with_preprocessing(input_size=(args.image_size, args.image_size))
    features.size = result.regressor.size
    # dlc frames were letterboxed for fitting, so detect() letterboxes them too (a squashed frame moves the points)
    framing = Framing(stages=1) if args.dataset == "dlc" else None
    model = LandmarkModel(
        features,
        fitted.projector,
        result.regressor,
        regressor_input="hypercolumn",
        landmark_names=fitted.names,
        framing=framing,
    )
    card = _card(args, fitted, score)
    out = model.save_pretrained(args.output, card=card)
    write_json(
        out / "fit_regressor.json",
        {
            "args": args_json(args),
            "metric": result.metric,
            "score": result.score,
            "baseline": result.baseline,
            "improvement": result.improvement,
            "spread": result.spread,
            "best_step": result.best_step,
            "steps": result.steps,
            "peakiness": {"init": result.peakiness_init, "final": result.peakiness_final},
            "warnings": result.warnings,
            "history": result.history,
            "config": result.config,
            "seconds": fitted.seconds,
            "train_images": len(fitted.train_part),
            "val_images": len(fitted.val_part),
        },
    )
    return out


def _run_fit_regressor(args: argparse.Namespace) -> int:
    setup(args)
    try:
        fitted = _fit(args)
    except (UserError, ValueError, FileNotFoundError, TypeError) as error:
        return fail("fit-regressor", error)
    result = fitted.result
    for message in result.warnings:
        print(f"contrastive-landmarks fit-regressor: warning: {message}", file=sys.stderr)
    if args.tensorboard:
        board = TensorBoardLog(Path(args.output) / "tensorboard")
        for row in result.history:
            board.log("regressor", row, int(row["step"]))
        board.close()
    score = _score(result)
    out = _save(args, fitted, score)
    print(f"validation {result.metric} {score}; wrote {out}")
    return 0


def add_fit_regressor_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``fit-regressor``."""
    parser = subparsers.add_parser(
        "fit-regressor",
        description="Fit the paper's linear landmark regressor on frozen hypercolumn features (all labelled "
        "training images, or a few with --num-labelled): augmented views computed once, a fixed number of "
        "optimiser steps, the state with the lowest validation error kept, the training set's mean shape scored "
        "beside it, and backbone + regressor (+ projector) saved as a model directory for "
        "LandmarkModel.from_pretrained. The defaults are the library's validated recipe "
        "(docs/notes/2026-12-benchmarks.md).",
    )
    add_model_arguments(parser)
    add_dataset_arguments(parser)
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="network input size in pixels (default: the backbone's own, else 96)",
    )
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    parser.add_argument(
        "--face-crop",
        action="store_true",
        help="mtfl: cut training faces around their landmarks at the test framing, with jitter that "
        "spans it (validation faces without jitter)",
    )
    parser.add_argument("--output", default=None, help="model directory to write (required)")
    parser.add_argument(
        "--projector",
        default=None,
        help="a fit-projector output to include in the bundle (for descriptors; the regressor "
        "is fitted on the hypercolumn)",
    )
    parser.add_argument(
        "--num-labelled",
        type=int,
        default=None,
        help="few-shot: use this many labelled images of the training part (drawn with --seed)",
    )
    parser.add_argument("--val-fraction", type=float, default=0.1, help="validation share (default 0.1)")
    parser.add_argument("--max-val", type=int, default=1000, help="at most this many validation images (default 1000)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the train/validation split (default 0)")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of a random-init backbone, the few-shot draw, views, init, batches (default 0)",
    )
    parser.add_argument(
        "--heatmaps",
        type=int,
        default=None,
        help="intermediate heatmaps K per landmark (default 10, fewer for many landmarks: 2 for 68)",
    )
    parser.add_argument(
        "--init",
        choices=("soft", "paper"),
        default="soft",
        help="regressor start: soft (default; learns from the first step) or paper (the authors' "
        "N(0, 1) filters with softmax x100: needs hundreds of epochs)",
    )
    parser.add_argument("--size", type=int, default=None, help="hypercolumn grid (default: half the input size)")
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps (default 2000)")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default 1e-2)")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="Adam weight decay (default 1e-4)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument(
        "--max-views",
        type=int,
        default=6000,
        help="augmented training views computed once and cached: about min(this, steps x batch size), at least one "
        "per training image (default 6000; memory grows with it)",
    )
    parser.add_argument(
        "--patience", type=int, default=8, help="stop after this many validations without improvement (default 8)"
    )
    parser.add_argument("--no-augment", action="store_true", help="no warp / flip augmentation of the training views")
    parser.add_argument("--no-standardize", action="store_true", help="do not standardise feature channels")
    parser.add_argument(
        "--metric",
        choices=("auto", "iod", "pixel"),
        default="auto",
        help="validation error: inter-ocular (iod), mean pixel distance, or auto (iod when the dataset names its eyes)",
    )
    parser.add_argument("--eye-indices", type=int, nargs=2, default=None, help="override the dataset's eye indices")
    parser.add_argument("--landmark-names", nargs="+", default=None, help="names of the landmarks, in order")
    parser.add_argument("--tensorboard", action="store_true", help="also write the history to OUTPUT/tensorboard")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run_fit_regressor)
