"""Head-fitting subcommands of the ``contrastive-landmarks`` CLI: ``fit-projector`` (spatial projector, Eq. 3)
and ``fit-regressor`` (linear landmark regressor), each writing a model directory with a model card.

Each ``add_*_parser(subparsers)`` registers one subcommand (the main CLI calls them) and sets ``func`` to a
handler taking the parsed arguments and returning an exit status. Errors a user can fix are reported as
one line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from .common import (
    DATASETS,
    UserError,
    add_data_arguments,
    add_model_arguments,
    describe_backbone,
    fail,
    labelled_dataset,
    load_hypercolumn,
    progress_available,
    resolve_image_size,
    setup,
    split_train_val,
)

__all__ = ["add_fit_projector_parser", "add_fit_regressor_parser"]

logger = logging.getLogger(__name__)


class _TensorBoard:
    """A SummaryWriter when TensorBoard is installed and asked for, else nothing (with a warning)."""

    def __init__(self, directory: Path | None) -> None:
        self.writer = None
        if directory is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            logger.warning("TensorBoard logging skipped: %s (pip install tensorboard)", error)
            return
        self.writer = SummaryWriter(str(directory))

    def log(self, prefix: str, row: dict, step: int) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _unlabelled_dataset(args):
    if not args.images:
        return labelled_dataset(args, split=args.split)
    from torch.utils.data import Subset

    from ..data import ImageFolder
    from ..data import transforms as T

    size = args.image_size
    transform = {"squash": lambda: T.Resize(size), "celeba": lambda: T.celeba_transform(size),
                 "face": lambda: T.aflw_transform(size)}[args.preprocess]()
    dataset = ImageFolder(args.images, transform=transform)
    return Subset(dataset, range(args.limit)) if args.limit is not None and args.limit < len(dataset) else dataset


def _card(title: str, summary: str, info: dict) -> str:
    rows = "\n".join(f"| {key} | {value} |" for key, value in info.items())
    return (f"---\nlibrary_name: contrastive_landmarks\ntags: [landmarks, keypoints]\n---\n\n# {title}\n\n{summary}\n\n"
            f"| item | value |\n|---|---|\n{rows}\n")


def _arch(features) -> str:
    return features.backbone.config.get("architecture", "ResNet")


def _data_info(args) -> str:
    if getattr(args, "images", None):
        return f"images {args.images} ({args.preprocess} preprocessing) at {args.image_size} px"
    return f"{args.dataset} {args.root or args.path} ({getattr(args, 'split', 'train')}) at {args.image_size} px"


def _args_json(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k != "func"}


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


# -- fit-projector -------------------------------------------------------------------------------------------
def _feature_cache(args):
    """The stage-map cache of fit-projector; its tag names everything that decides which image has which index."""
    import hashlib

    from ..train.feature_cache import FeatureCache

    parts = [args.backbone, args.weights, args.images, args.preprocess, args.dataset, args.root, args.path, args.split,
             args.image_size, args.limit, args.val_fraction, args.max_val, args.split_seed]
    tag = f"projector-{Path(str(args.backbone)).name}-{hashlib.sha1(repr(parts).encode()).hexdigest()[:12]}"
    return FeatureCache(int(args.cache_memory_gb * 2**30), args.cache_dir, tag=tag, persist=args.cache_dir is not None)


def _run_fit_projector(args: argparse.Namespace) -> int:
    from ..pipeline import LandmarkModel
    from ..tps import TPSParams
    from ..train.projector_fitting import fit_projector

    setup(args)
    try:
        if not args.output:
            raise UserError("--output DIR is required (where the projector bundle is written)")
        from torch.utils.data import Subset

        features = load_hypercolumn(args, args.size)
        resolve_image_size(args, features.backbone)
        dataset = _unlabelled_dataset(args)
        train_part, val_part = split_train_val(len(dataset), args.val_fraction, args.split_seed, args.max_val)
        val = Subset(dataset, val_part) if val_part else None
        board = _TensorBoard(Path(args.output) / "tensorboard" if args.tensorboard else None)
        started = time.time()
        try:
            result = fit_projector(
                features, Subset(dataset, train_part), val, dim=args.dim, mode=args.mode, size=args.train_size,
                epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                momentum=args.momentum, weight_decay=args.weight_decay, cosine=args.cosine,
                temperature=args.temperature, distance_power=args.distance_power,
                warp=TPSParams() if args.warp else False, cache=None if args.warp else _feature_cache(args),
                seed=args.seed, device=args.device,
                progress=progress_available(not args.no_progress),
                callback=lambda row: board.log("projector", row, int(row["epoch"])))
        finally:
            board.close()
    except (UserError, ValueError, FileNotFoundError, TypeError) as error:
        return fail("fit-projector", error)
    seconds = time.time() - started
    result.projector.size = features.size or result.projector.size
    model = LandmarkModel(features, result.projector)
    info = {"backbone": describe_backbone(args), "data": _data_info(args),
            "images": f"{len(train_part)} train, {len(val_part)} validation",
            "recipe": result.recipe, "selected epoch": result.best_epoch,
            "validation loss": f"{result.best_score:.4f} (untrained projector: {result.initial_score:.4f})",
            "training time": f"{seconds / 60:.1f} min"}
    card = _card(f"{_arch(features)} + {args.dim}-d spatial projector",
                 "Hypercolumn features with a spatial projector trained with the spatially contrastive loss "
                 "(Eq. 3, Cheng, Su & Maji, ICCV 2021). Load with `LandmarkModel.from_pretrained(DIR)`; "
                 "`load_backbone(DIR)` reads the backbone alone.", info)
    out = model.save_pretrained(args.output, card=card)
    _write_json(out / "fit_projector.json", {"args": _args_json(args), "best_epoch": result.best_epoch,
                                              "best_score": result.best_score, "initial_score": result.initial_score,
                                              "history": result.history, "seconds": seconds})
    print(f"validation loss {result.initial_score:.4f} -> {result.best_score:.4f} (epoch {result.best_epoch}); "
          f"wrote {out}")
    return 0


def add_fit_projector_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``fit-projector``."""
    parser = subparsers.add_parser(
        "fit-projector", help="train the spatial projector (Eq. 3) on a frozen backbone",
        description="Train a location-wise linear projection of the frozen hypercolumn with the spatially "
        "contrastive loss (Eq. 3 with x' = x, or TPS-warped pairs with --warp); the epoch with the lowest "
        "validation loss is kept. Defaults are the authors' recipe (24x24 training grid, SGD lr 1e-3 momentum "
        "0.9 wd 5e-4, batch 32, 10 epochs, temperature 1/7, distance^0.5 in input pixels). Writes a model "
        "directory (backbone + projector) that LandmarkModel.from_pretrained and load_backbone read.")
    add_model_arguments(parser)
    add_data_arguments(parser, split_default="train")
    parser.add_argument("--images", default=None,
                        help="unlabelled images instead of --dataset: a folder (recursive) or a list file, "
                        "preprocessed to --image-size as --preprocess says")
    parser.add_argument("--preprocess", choices=("squash", "celeba", "face"), default="squash",
                        help="for --images: squash (resize, any aspect), celeba (aligned CelebA: rows 30..208, "
                        "resize to 136, border crop 20 -> 96 as the paper, the border scaled at other sizes) or face "
                        "(square face crops: the same resize and border crop) (default squash)")
    parser.add_argument("--output", default=None, help="model directory to write (required)")
    parser.add_argument("--dim", type=int, default=256, help="projected dimension d (default 256, Table 1)")
    parser.add_argument("--mode", choices=("linear", "softmax"), default="linear",
                        help="linear projection (paper) or the authors' spatial-softmax variant (default linear)")
    parser.add_argument("--size", type=int, default=48, help="hypercolumn grid of the saved model (default 48)")
    parser.add_argument("--train-size", type=int, default=24,
                        help="grid the loss is computed on while training (default 24, the authors'; its cost "
                        "grows as the 4th power)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="optimiser (default sgd)")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    parser.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (default 5e-4)")
    parser.add_argument("--cosine", action="store_true", help="cosine learning-rate decay over the epochs")
    parser.add_argument("--temperature", type=float, default=1 / 7,
                        help="softmax temperature of Eq. 3 (default 1/7: the authors' multiplier 7)")
    parser.add_argument("--distance-power", type=float, default=0.5,
                        help="exponent of the pixel distance in Eq. 3 (default 0.5)")
    parser.add_argument("--warp", action="store_true",
                        help="train on TPS-warped pairs (x, g x) with their dense correspondence (Eq. 3 in its "
                        "general form; features are then recomputed every step)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="validation share (default 0.1)")
    parser.add_argument("--max-val", type=int, default=2000, help="at most this many validation images (default "
                        "2000, the authors')")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the train/validation split (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the init, shuffling and warps (default 0)")
    parser.add_argument("--cache-memory-gb", type=float, default=2.0,
                        help="memory for the training images' stage maps (default 2 GiB; a ResNet-50 at 96 px needs "
                        "1.1 MB per image, a ResNet-18 0.28 MB)")
    parser.add_argument("--cache-dir", default=None,
                        help="also keep the stage maps here (safetensors), for what does not fit and for later runs")
    parser.add_argument("--tensorboard", action="store_true", help="also log to OUTPUT/tensorboard")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run_fit_projector)
    return parser


# -- fit-regressor -------------------------------------------------------------------------------------------
def _load_projector(path: str, channels: int):
    from ..pipeline import LandmarkModel

    projector = LandmarkModel.from_pretrained(path).projector
    if projector is None:
        raise UserError(f"{path} holds no projector (expected a directory written by fit-projector)")
    if projector.in_channels != channels:
        raise UserError(f"the projector in {path} expects {projector.in_channels} channels but the backbone's "
                         f"hypercolumn has {channels}")
    return projector


def _run_fit_regressor(args: argparse.Namespace) -> int:
    import torch

    from ..data.base import KeypointSubset
    from ..pipeline import LandmarkModel
    from ..train import Augment, fit_regressor

    setup(args)
    try:
        if not args.output:
            raise UserError("--output DIR is required (where the model directory is written)")
        features = load_hypercolumn(args)
        resolve_image_size(args, features.backbone)
        dataset = labelled_dataset(args, jitter=args.face_crop)
        clean = labelled_dataset(args) if args.face_crop else dataset
        train_part, val_part = split_train_val(len(dataset), args.val_fraction, args.split_seed, args.max_val)
        if args.num_labelled is not None:
            if not 0 < args.num_labelled <= len(train_part):
                raise UserError(f"--num-labelled {args.num_labelled}: the training part has {len(train_part)} "
                                "images")
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
            features, KeypointSubset(dataset, train_part), KeypointSubset(clean, val_part) if val_part else None,
            heatmaps_per_landmark=args.heatmaps, init=args.init, steps=args.steps, batch_size=args.batch_size,
            lr=args.lr, weight_decay=args.weight_decay, augment=Augment.none() if args.no_augment else None,
            standardize=not args.no_standardize, metric=args.metric, eye_indices=eye_indices, seed=args.seed,
            patience=args.patience, device=args.device, progress=progress_available(not args.no_progress),
            warn=False)
    except (UserError, ValueError, FileNotFoundError, TypeError) as error:
        return fail("fit-regressor", error)
    seconds = time.time() - started
    for message in result.warnings:
        print(f"contrastive-landmarks fit-regressor: warning: {message}", file=sys.stderr)
    if args.tensorboard:
        board = _TensorBoard(Path(args.output) / "tensorboard")
        for row in result.history:
            board.log("regressor", row, int(row["step"]))
        board.close()
    features.size = result.regressor.size
    model = LandmarkModel(features, projector, result.regressor, regressor_input="hypercolumn",
                          landmark_names=names)
    unit = {"iod": " % of the inter-ocular distance", "pixel": " px"}.get(result.metric, "")
    score = (f"{result.score:.4g}{unit} (mean shape {result.baseline:.4g}{unit}; step {result.best_step} of "
             f"{result.steps})")
    info = {"backbone": describe_backbone(args), "data": _data_info(args),
            "labelled images": f"{len(train_part)} (+ {len(val_part)} validation)",
            "recipe": f"linear regressor ({args.init} start), {result.config['heatmaps_per_landmark']} heatmaps per "
                      "landmark on the "
                      f"{result.regressor.size[0]}x{result.regressor.size[1]} hypercolumn of {args.image_size}-px "
                      f"inputs; {result.config['views']} augmented views; Adam lr {args.lr} wd {args.weight_decay}, "
                      f"batch {args.batch_size}, {args.steps} steps, cosine, early stopping",
            "validation error": score, "training time": f"{seconds / 60:.1f} min"}
    if result.warnings:
        info["warnings"] = "; ".join(result.warnings)
    card = _card(f"{_arch(features)} landmark model", "Hypercolumn features and a linear landmark regressor "
                 "(Cheng, Su & Maji, ICCV 2021). Load with `LandmarkModel.from_pretrained(DIR)`; "
                 "`model.detect(images)` gives (B, N, 2) pixels.", info)
    out = model.save_pretrained(args.output, card=card)
    _write_json(out / "fit_regressor.json", {
        "args": _args_json(args), "metric": result.metric, "score": result.score, "baseline": result.baseline,
        "improvement": result.improvement, "spread": result.spread, "best_step": result.best_step,
        "steps": result.steps, "peakiness": {"init": result.peakiness_init, "final": result.peakiness_final},
        "warnings": result.warnings, "history": result.history, "config": result.config, "seconds": seconds,
        "train_images": len(train_part), "val_images": len(val_part)})
    print(f"validation {result.metric} {score}; wrote {out}")
    return 0


def add_fit_regressor_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``fit-regressor``."""
    parser = subparsers.add_parser(
        "fit-regressor", help="fit the linear landmark regressor and save a LandmarkModel directory",
        description="Fit the paper's linear landmark regressor on frozen hypercolumn features (all labelled "
        "training images, or a few with --num-labelled): augmented views computed once, a fixed number of "
        "optimiser steps, the state with the lowest validation error kept, the training set's mean shape scored "
        "beside it, and backbone + regressor (+ projector) saved as a model directory for "
        "LandmarkModel.from_pretrained. The defaults are the library's validated recipe (docs/benchmarks.md).")
    add_model_arguments(parser)
    parser.add_argument("--dataset", choices=DATASETS, default="mtfl", help="dataset format (default mtfl)")
    parser.add_argument("--root", help="dataset folder (for mtfl: the folder with train.csv and test.csv)")
    parser.add_argument("--path", default=None, help="annotation file for csv/coco, or a split list for cub")
    parser.add_argument("--image-size", type=int, default=None,
                        help="network input size in pixels (default: the backbone's own, else 96)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--face-crop", action="store_true",
                        help="mtfl: cut training faces around their landmarks at the test framing, with jitter that "
                        "spans it (validation faces without jitter)")
    parser.add_argument("--output", default=None, help="model directory to write (required)")
    parser.add_argument("--projector", default=None,
                        help="a fit-projector output to include in the bundle (for descriptors; the regressor "
                        "is fitted on the hypercolumn)")
    parser.add_argument("--num-labelled", type=int, default=None,
                        help="few-shot: use this many labelled images of the training part (drawn with --seed)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="validation share (default 0.1)")
    parser.add_argument("--max-val", type=int, default=1000, help="at most this many validation images (default 1000)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the train/validation split (default 0)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of a random-init backbone, the few-shot draw, views, init, batches (default 0)")
    parser.add_argument("--heatmaps", type=int, default=None,
                        help="intermediate heatmaps K per landmark (default 10, fewer for many landmarks: 2 for 68)")
    parser.add_argument("--init", choices=("soft", "paper"), default="soft",
                        help="regressor start: soft (default; learns from the first step) or paper (the authors' "
                        "N(0, 1) filters with softmax x100: needs hundreds of epochs)")
    parser.add_argument("--size", type=int, default=None, help="hypercolumn grid (default: half the input size)")
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps (default 2000)")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default 1e-2)")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="Adam weight decay (default 1e-4)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--patience", type=int, default=8,
                        help="stop after this many validations without improvement (default 8)")
    parser.add_argument("--no-augment", action="store_true",
                        help="no warp / flip augmentation of the training views")
    parser.add_argument("--no-standardize", action="store_true", help="do not standardise feature channels")
    parser.add_argument("--metric", choices=("auto", "iod", "pixel"), default="auto",
                        help="validation error: inter-ocular (iod), mean pixel distance, or auto (iod when the "
                        "dataset names its eyes)")
    parser.add_argument("--eye-indices", type=int, nargs=2, default=None, help="override the dataset's eye indices")
    parser.add_argument("--landmark-names", nargs="+", default=None, help="names of the landmarks, in order")
    parser.add_argument("--tensorboard", action="store_true", help="also write the history to OUTPUT/tensorboard")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run_fit_regressor)
