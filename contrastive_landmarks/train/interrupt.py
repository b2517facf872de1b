"""Ctrl-C that stops a training loop at a step boundary, so the checkpoint it writes is consistent.

``with StopOnInterrupt(enabled) as stop:`` -- inside, the first SIGINT only sets ``stop.requested``; the loop
checks it after each step, writes its checkpoint and raises a :class:`TrainingInterrupted` (a
:class:`KeyboardInterrupt`, so code that does not know it still stops). A second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

__all__ = ["StopOnInterrupt", "TrainingInterrupted"]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: a checkpoint of the last finished step was written to :attr:`checkpoint`."""

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"interrupted after step {step}; checkpoint written to {checkpoint}")
        self.step, self.checkpoint = step, Path(checkpoint)


class StopOnInterrupt:
    """While active (main thread, ``enabled``), the first Ctrl-C only sets :attr:`requested`, so the loop can
    finish its step and write a consistent checkpoint; a second Ctrl-C interrupts at once."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopOnInterrupt:
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)
