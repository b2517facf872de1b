"""What a :func:`~.pretraining.pretrain` run writes and says: ``log.jsonl`` (and TensorBoard), and
:func:`learning_check`, the warning when MoCo's loss stayed near chance."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

__all__ = ["CHANCE_SHARE", "LOG_NAME", "RunLog", "learning_check"]

logger = logging.getLogger(__name__)
LOG_NAME = "log.jsonl"


def _logged_step(line: str) -> float:
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")  # a line cut short by a kill: dropped


class RunLog:
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
