"""What the fitting subcommands write beside a model: TensorBoard scalars, the model card, the JSON report."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

__all__ = ["TensorBoardLog", "arch_name", "args_json", "data_info", "model_card", "write_json"]

logger = logging.getLogger(__name__)


class TensorBoardLog:
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


def model_card(title: str, summary: str, info: dict) -> str:
    """A model card (Hub front matter, title, summary, an item/value table)."""
    rows = "\n".join(f"| {key} | {value} |" for key, value in info.items())
    return (
        f"---\nlibrary_name: contrastive_landmarks\ntags: [landmarks, keypoints]\n---\n\n# {title}\n\n{summary}\n\n"
        f"| item | value |\n|---|---|\n{rows}\n"
    )


def arch_name(features) -> str:
    """The backbone architecture's name, for titles."""
    return features.backbone.config.get("architecture", "ResNet")


def data_info(args) -> str:
    """One line on the data the options name."""
    if getattr(args, "images", None):
        return f"images {args.images} ({args.preprocess} preprocessing) at {args.image_size} px"
    return f"{args.dataset} {args.root or args.path} ({getattr(args, 'split', 'train')}) at {args.image_size} px"


def args_json(args: argparse.Namespace) -> dict:
    """The parsed options as a JSON-able dict."""
    return {k: v for k, v in vars(args).items() if k != "func"}


def write_json(path: Path, payload: dict) -> None:
    """Indented JSON, non-JSON values as strings."""
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
