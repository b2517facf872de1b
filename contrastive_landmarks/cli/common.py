"""What the subcommands share: model and data options, thread set-up, and user errors as one line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..data.registry import DATASETS, by_name

if TYPE_CHECKING:
    import torch

__all__ = [
    "DATASETS",
    "UserError",
    "add_data_arguments",
    "add_dataset_arguments",
    "add_frame_data_arguments",
    "add_model_arguments",
    "check_landmark_names",
    "check_output_dir",
    "describe_backbone",
    "fail",
    "labelled_dataset",
    "load_hypercolumn",
    "progress_available",
    "resolve_device_option",
    "resolve_image_size",
    "setup",
    "split_train_val",
]

logger = logging.getLogger(__name__)


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


def fail(command: str, error: BaseException | str) -> int:
    """Print ``contrastive-landmarks COMMAND: error: ERROR`` on stderr; returns the exit status 2."""
    print(f"contrastive-landmarks {command}: error: {error}", file=sys.stderr)
    return 2


def check_output_dir(path: str | os.PathLike, option: str = "--output") -> Path:
    """``path`` as a :class:`~pathlib.Path`, or a :class:`UserError` when no folder can be made there.

    For the commands that write a model (or run) directory: called before any work, so an ``--output`` that
    is an existing file (or lies under one) is refused at once rather than in a traceback after training.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{option} {folder} is an existing file, not a folder: name a folder to write the model into")
    for parent in folder.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{option} {folder}: {parent} is a file, not a folder")
            break
    return folder


def resolve_device_option(args: argparse.Namespace) -> torch.device | None:
    """``--device`` as a :class:`torch.device` (:func:`~contrastive_landmarks.device.resolve_device`), or ``None``
    when it was not given (the command's own default); sets it on ``args``. Called before any work, so a GPU
    this machine does not have is one line at once rather than a traceback from the first ``.to(device)``.

    Raises:
        ValueError: a name torch does not know, or a CUDA device this machine does not have (one line).
    """
    from ..device import resolve_device

    name = getattr(args, "device", None)
    args.device = None if name is None else resolve_device(name)
    return args.device


def _listed(names: Sequence[str]) -> str:
    return f" ({', '.join(names)})" if names else " (unnamed)"


def check_landmark_names(
    model_names: Sequence[str], model_count: int, data_names: Sequence[str], data_count: int, *, model: str, data: str
) -> str | None:
    """Refuse scoring a model's landmarks against data that labels other body parts.

    Args:
        model_names: the model's landmark names, in order (empty: it names none).
        model_count: how many landmarks the model predicts.
        data_names: the data's body-part names, in order (empty: it names none).
        data_count: how many landmarks the data labels.
        model, data: what to call the two in messages (a directory, a file).

    Returns:
        ``None`` when the names agree, else a warning saying which side names no landmarks (the landmarks are
        then paired by position).

    Raises:
        UserError: the model predicts another number of landmarks than the data labels, or the same number
            under other names or in another order; the message names the body parts on both sides.
    """
    model_names, data_names = list(model_names), list(data_names)
    if model_count != data_count:
        raise UserError(
            f"{model} predicts {model_count} landmarks{_listed(model_names)} but {data} labels "
            f"{data_count}{_listed(data_names)}: evaluate it on data with the body parts it was trained on"
        )
    if model_names and data_names and model_names != data_names:
        if sorted(model_names) == sorted(data_names):
            raise UserError(
                f"{model} predicts {', '.join(model_names)} but {data} lists them in another order "
                f"({', '.join(data_names)}): the points would be compared with the wrong body parts"
            )
        only_model = [name for name in model_names if name not in data_names]
        only_data = [name for name in data_names if name not in model_names]
        if len(only_model) == len(model_names):  # nothing in common: both lists say it
            raise UserError(
                f"{model} predicts other body parts ({', '.join(model_names)}) than {data} labels "
                f"({', '.join(data_names)}): evaluate it on data with the body parts it was trained on"
            )
        raise UserError(
            f"{model} predicts other body parts than {data} labels: {', '.join(only_model) or 'none'} only in the "
            f"model, {', '.join(only_data) or 'none'} only in the data (model: {', '.join(model_names)}; data: "
            f"{', '.join(data_names)})"
        )
    if not model_names and not data_names:
        return f"neither {model} nor {data} names its landmarks: their {data_count} points are compared in order"
    if not model_names:
        return f"{model} names no landmarks: its {model_count} points are compared in order with {data}'s"
    if not data_names:
        return f"{data} names no body parts: its points are compared in order with {model}'s{_listed(model_names)}"
    return None


def add_model_arguments(parser: argparse.ArgumentParser, *, device: bool = True) -> None:
    """``--backbone`` / ``--weights`` / ``--threads``, and ``--device`` where the command runs its work there
    (``device=False`` for commands that run on the CPU only: an option they would ignore is not offered)."""
    parser.add_argument(
        "--backbone",
        default="resnet18",
        help="timm ResNet name (random init, seeded by --seed), registry name such as resnet18-faces, "
        "or a saved model directory (default resnet18)",
    )
    parser.add_argument(
        "--weights", default=None, help="checkpoint file/directory or Hub id; omit for a randomly initialised backbone"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    if device:
        parser.add_argument("--device", default=None, help="torch device, e.g. cuda or cpu (default cpu)")


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dataset`` / ``--root`` / ``--path`` of the benchmark datasets (:data:`DATASETS`, read by ``by_name``)."""
    parser.add_argument("--dataset", choices=DATASETS, default="mtfl", help="dataset format (default mtfl)")
    parser.add_argument("--root", help="dataset folder (for mtfl: the folder with train.csv and test.csv)")
    parser.add_argument(
        "--path",
        default=None,
        help="annotation file for csv/coco (then --root, if given, is the folder its image paths are relative to), "
        "or a split list for cub",
    )


def add_frame_data_arguments(parser: argparse.ArgumentParser, *, split_help: str, path_help: str) -> None:
    """``--dataset`` / ``--root`` / ``--path`` / ``--split`` of a user's labelled frames (``FRAME_DATASETS``)."""
    from ..data.registry import FRAME_DATASETS

    parser.add_argument("--dataset", choices=FRAME_DATASETS, default="dlc", help="label format (default dlc)")
    parser.add_argument(
        "--root",
        help="DeepLabCut project folder (or its labels CSV); for csv/coco with --path, the folder its image paths "
        "are relative to",
    )
    parser.add_argument("--path", help=path_help)
    parser.add_argument("--split", default=None, help=split_help)


def add_data_arguments(parser: argparse.ArgumentParser, *, split_default: str = "test") -> None:
    add_dataset_arguments(parser)
    parser.add_argument("--split", default=split_default, help=f"split to use (default {split_default})")
    parser.add_argument(
        "--image-size", type=int, default=None, help="network input size in pixels (default: the model's own, else 96)"
    )
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images (quick runs)")


def setup(args) -> None:
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def progress_available(wanted: bool) -> bool:
    """``wanted``, unless tqdm is missing (then ``False``, with a warning naming the extra)."""
    if not wanted:
        return False
    try:
        import tqdm  # noqa: F401
    except ImportError:
        logger.warning('progress bars need tqdm (pip install "contrastive-landmarks[train]"); continuing without')
        return False
    return True


def _random_init(args) -> bool:
    from pathlib import Path

    from ..hub import is_registered

    return args.weights is None and not is_registered(args.backbone) and not Path(str(args.backbone)).exists()


def describe_backbone(args) -> str:
    """``resnet18 (random init, seed 0)``, ``resnet18-faces``, or ``NAME (weights PATH)`` for reports."""
    if _random_init(args):
        return f"{args.backbone} (random init, seed {getattr(args, 'seed', 0)})"
    return args.backbone if args.weights is None else f"{args.backbone} (weights {args.weights})"


def load_hypercolumn(args, size: int | None = None):
    """The frozen :class:`~contrastive_landmarks.Hypercolumn` the options describe (a random init is seeded
    by ``--seed``), in eval mode; ``--image-size`` defaults to its backbone's input size from then on
    (:func:`resolve_image_size`)."""
    import torch

    from .. import Hypercolumn, load_backbone

    if _random_init(args):
        torch.manual_seed(getattr(args, "seed", 0))
    backbone = load_backbone(args.backbone, args.weights)
    resolve_image_size(args, backbone)
    return Hypercolumn(backbone, size=size).eval()


def resolve_image_size(args, backbone) -> int:
    """``--image-size`` if given, else the model's recorded input size, else 96 (the paper's); sets it on ``args``."""
    if args.image_size is None:
        recorded = backbone.input_size
        args.image_size = int(recorded[0]) if recorded else 96
    return args.image_size


def labelled_dataset(args, split: str = "train", *, jitter: bool = False):
    """``--dataset`` / ``--root`` / ``--path`` as a labelled dataset at ``--image-size``."""
    if args.root is None and args.path is None:
        raise UserError("give the data with --root DIR (or --path FILE for csv/coco)")
    return by_name(
        args.dataset,
        args.root,
        split,
        image_size=args.image_size,
        path=args.path,
        limit=getattr(args, "limit", None),
        face_crop=getattr(args, "face_crop", False),
        jitter=jitter,
    )


def split_train_val(n: int, val_fraction: float, seed: int, max_val: int | None) -> tuple[list[int], list[int]]:
    """A fixed ``(train, val)`` split of ``range(n)``, with a user error when nothing is left to train on."""
    from ..evaluation import split_indices

    train_part, val_part = split_indices(n, val_fraction, seed, max_val)
    if not train_part:
        raise UserError(f"no training images left after the validation split of {n} images")
    return train_part, val_part
