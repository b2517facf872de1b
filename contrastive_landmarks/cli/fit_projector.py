"""The ``fit-projector`` subcommand: the spatial projector (Eq. 3) on a frozen backbone, saved as a model directory."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .common import (
    UserError,
    add_data_arguments,
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

__all__ = ["add_fit_projector_parser"]

CHECKPOINT_NAME = "fit_projector_checkpoint.pt"


def _unlabelled_dataset(args):
    if not args.images:
        return labelled_dataset(args, split=args.split)
    from torch.utils.data import Subset

    from ..data import ImageFolder
    from ..data import transforms as T

    size = args.image_size
    transform = {
        "squash": lambda: T.Resize(size),
        "celeba": lambda: T.celeba_transform(size),
        "face": lambda: T.aflw_transform(size),
    }[args.preprocess]()
    dataset = ImageFolder(args.images, transform=transform)
    return Subset(dataset, range(args.limit)) if args.limit is not None and args.limit < len(dataset) else dataset


# -- fit-projector -------------------------------------------------------------------------------------------
def _feature_cache(args):
    """The stage-map cache of fit-projector; its tag names everything that decides which image has which index."""
    import hashlib

    from ..train.feature_cache import FeatureCache

    parts = [
        args.backbone,
        args.weights,
        args.images,
        args.preprocess,
        args.dataset,
        args.root,
        args.path,
        args.split,
        args.image_size,
        args.limit,
        args.val_fraction,
        args.max_val,
        args.split_seed,
    ]
    tag = f"projector-{Path(str(args.backbone)).name}-{hashlib.sha1(repr(parts).encode()).hexdigest()[:12]}"
    return FeatureCache(int(args.cache_memory_gb * 2**30), args.cache_dir, tag=tag, persist=args.cache_dir is not None)


def _resume_command() -> str:
    argv = [a for a in sys.argv[1:] if a != "--resume"]
    return "contrastive-landmarks " + " ".join([*argv, "--resume"])


def _run_fit_projector(args: argparse.Namespace) -> int:
    from ..pipeline import LandmarkModel
    from ..tps import TPSParams
    from ..train.projector_fitting import ProjectorFitInterrupted, fit_projector

    setup(args)
    try:
        if not args.output:
            raise UserError("--output DIR is required (where the projector bundle is written)")
        check_output_dir(args.output)
        resolve_device_option(args)
        from torch.utils.data import Subset

        features = load_hypercolumn(args, args.size)
        dataset = _unlabelled_dataset(args)
        train_part, val_part = split_train_val(len(dataset), args.val_fraction, args.split_seed, args.max_val)
        val = Subset(dataset, val_part) if val_part else None
        board = TensorBoardLog(Path(args.output) / "tensorboard" if args.tensorboard else None)
        started = time.time()
        try:
            result = fit_projector(
                features,
                Subset(dataset, train_part),
                val,
                dim=args.dim,
                mode=args.mode,
                size=args.train_size,
                epochs=args.epochs,
                batch_size=args.batch_size,
                optimizer=args.optimizer,
                lr=args.lr,
                momentum=args.momentum,
                weight_decay=args.weight_decay,
                cosine=args.cosine,
                temperature=args.temperature,
                distance_power=args.distance_power,
                warp=TPSParams() if args.warp else False,
                cache=None if args.warp else _feature_cache(args),
                seed=args.seed,
                device=args.device,
                progress=progress_available(not args.no_progress),
                callback=lambda row: board.log("projector", row, int(row["epoch"])),
                checkpoint=Path(args.output) / CHECKPOINT_NAME,
                resume=args.resume,
            )
        finally:
            board.close()
    except ProjectorFitInterrupted as stop:
        print(f"contrastive-landmarks fit-projector: {stop}; resume with:\n  {_resume_command()}", file=sys.stderr)
        return 130
    except (UserError, ValueError, FileNotFoundError, TypeError) as error:
        return fail("fit-projector", error)
    seconds = time.time() - started
    result.projector.size = features.size or result.projector.size
    # the model directory records the input size it was fitted at, which detect() then resizes to
    features.backbone.with_preprocessing(input_size=(args.image_size, args.image_size))
    model = LandmarkModel(features, result.projector)
    info = {
        "backbone": describe_backbone(args),
        "data": data_info(args),
        "images": f"{len(train_part)} train, {len(val_part)} validation",
        "recipe": result.recipe,
        "selected epoch": result.best_epoch,
        "validation loss": f"{result.best_score:.4f} (untrained projector: {result.initial_score:.4f})",
        "training time": f"{seconds / 60:.1f} min",
    }
    card = model_card(
        f"{arch_name(features)} + {args.dim}-d spatial projector",
        "Hypercolumn features with a spatial projector trained with the spatially contrastive loss "
        "(Eq. 3, Cheng, Su & Maji, ICCV 2021). Load with `LandmarkModel.from_pretrained(DIR)`; "
        "`load_backbone(DIR)` reads the backbone alone.",
        info,
    )
    out = model.save_pretrained(args.output, card=card)
    write_json(
        out / "fit_projector.json",
        {
            "args": args_json(args),
            "best_epoch": result.best_epoch,
            "best_score": result.best_score,
            "initial_score": result.initial_score,
            "history": result.history,
            "seconds": seconds,
        },
    )
    print(
        f"validation loss {result.initial_score:.4f} -> {result.best_score:.4f} (epoch {result.best_epoch}); "
        f"wrote {out}"
    )
    return 0


def add_fit_projector_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``fit-projector``."""
    parser = subparsers.add_parser(
        "fit-projector",
        description="Train a location-wise linear projection of the frozen hypercolumn with the spatially "
        "contrastive loss (Eq. 3 with x' = x, or TPS-warped pairs with --warp); the epoch with the lowest "
        "validation loss is kept. Defaults are the authors' recipe (24x24 training grid, SGD lr 1e-3 momentum "
        "0.9 wd 5e-4, batch 32, 10 epochs, temperature 1/7, distance^0.5 in input pixels). Writes a model "
        "directory (backbone + projector) that LandmarkModel.from_pretrained and load_backbone read. The fit is "
        f"saved to OUTPUT/{CHECKPOINT_NAME} after every epoch and on Ctrl-C; rerun with --resume to continue "
        "exactly.",
    )
    add_model_arguments(parser)
    add_data_arguments(parser, split_default="train")
    parser.add_argument(
        "--images",
        default=None,
        help="unlabelled images instead of --dataset: a folder (recursive) or a list file, "
        "preprocessed to --image-size as --preprocess says",
    )
    parser.add_argument(
        "--preprocess",
        choices=("squash", "celeba", "face"),
        default="squash",
        help="for --images: squash (resize, any aspect), celeba (aligned CelebA: rows 30..208, "
        "resize to 136, border crop 20 -> 96 as the paper, the border scaled at other sizes) or face "
        "(square face crops: the same resize and border crop) (default squash)",
    )
    parser.add_argument("--output", default=None, help="model directory to write (required)")
    parser.add_argument("--dim", type=int, default=256, help="projected dimension d (default 256, Table 1)")
    parser.add_argument(
        "--mode",
        choices=("linear", "softmax"),
        default="linear",
        help="linear projection (paper) or the authors' spatial-softmax variant (default linear)",
    )
    parser.add_argument("--size", type=int, default=48, help="hypercolumn grid of the saved model (default 48)")
    parser.add_argument(
        "--train-size",
        type=int,
        default=24,
        help="grid the loss is computed on while training (default 24, the authors'; its cost grows as the 4th power)",
    )
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="optimiser (default sgd)")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    parser.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (default 5e-4)")
    parser.add_argument("--cosine", action="store_true", help="cosine learning-rate decay over the epochs")
    parser.add_argument(
        "--temperature",
        type=float,
        default=1 / 7,
        help="softmax temperature of Eq. 3 (default 1/7: the authors' multiplier 7)",
    )
    parser.add_argument(
        "--distance-power", type=float, default=0.5, help="exponent of the pixel distance in Eq. 3 (default 0.5)"
    )
    parser.add_argument(
        "--warp",
        action="store_true",
        help="train on TPS-warped pairs (x, g x) with their dense correspondence (Eq. 3 in its "
        "general form; features are then recomputed every step)",
    )
    parser.add_argument("--val-fraction", type=float, default=0.1, help="validation share (default 0.1)")
    parser.add_argument(
        "--max-val", type=int, default=2000, help="at most this many validation images (default 2000, the authors')"
    )
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the train/validation split (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the init, shuffling and warps (default 0)")
    parser.add_argument(
        "--cache-memory-gb",
        type=float,
        default=2.0,
        help="memory for the training images' stage maps (default 2 GiB; a ResNet-50 at 96 px needs "
        "1.1 MB per image, a ResNet-18 0.28 MB)",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="also keep the stage maps here (safetensors), for what does not fit and for later runs",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"continue from OUTPUT/{CHECKPOINT_NAME} (the same data and settings; without it a fit starts afresh)",
    )
    parser.add_argument("--tensorboard", action="store_true", help="also log to OUTPUT/tensorboard")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run_fit_projector)
    return parser


# -- fit-regressor -------------------------------------------------------------------------------------------
