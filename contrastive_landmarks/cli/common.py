"""What the subcommands share: model and data options, thread set-up, and user errors as one line."""

from __future__ import annotations

import argparse
import sys

from ..data.registry import DATASETS

__all__ = ["DATASETS", "UserError", "add_data_arguments", "add_model_arguments", "fail", "setup"]


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


def fail(command: str, error: BaseException | str) -> int:
    print(f"contrastive-landmarks {command}: error: {error}", file=sys.stderr)
    return 2


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", default="resnet50",
                        help="timm ResNet name, registry name or saved model directory (default resnet50)")
    parser.add_argument("--weights", default=None,
                        help="checkpoint file/directory or Hub id; omit for a randomly initialised backbone")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda or cpu (default cpu)")


def add_data_arguments(parser: argparse.ArgumentParser, *, split_default: str = "test") -> None:
    parser.add_argument("--dataset", choices=DATASETS, default="mtfl", help="dataset format (default mtfl)")
    parser.add_argument("--root", help="dataset folder (for mtfl: the folder with train.csv and test.csv)")
    parser.add_argument("--split", default=split_default, help=f"split to use (default {split_default})")
    parser.add_argument("--path", default=None, help="annotation file for csv/coco, or a split list for cub")
    parser.add_argument("--image-size", type=int, default=96, help="network input size in pixels (default 96)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images (quick runs)")


def setup(args) -> None:
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


