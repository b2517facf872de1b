"""The footage step: adapt a backbone to a project's own unlabelled videos before fine-tuning on its labels.

The paper's premise is that self-supervision on unlabelled images of the object category makes the landmark
representation; on a lab's animals those images are the recordings the labelled frames were taken from.
:func:`adapt_to_footage` runs a short MoCo pretraining (:func:`~contrastive_landmarks.train.pretrain`, the
``animals`` preset: whole frames, 128 px, blur, no JPEG noise) on the videos, starting from the given backbone
(its weights and normalisation), and returns the adapted backbone; :func:`project_videos` finds the videos of a
DeepLabCut or Lightning Pose project. ``finetune`` on the command line runs both before fitting.

The budget is counted in optimiser steps, not minutes, so that a run is reproducible and resumes exactly; the
progress bar shows the time left. Its output folder holds the MoCo checkpoint (resumable), the run's log and the
adapted ``backbone/``; a finished step is not redone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..backbone import Backbone, load_backbone
from ..data.video import folder_videos, video_info
from ._loop import check_resumable
from .pretrain_config import PretrainConfig
from .pretraining import export_backbone, pretrain

__all__ = ["FootageOptions", "adapt_to_footage", "project_videos"]

RECORD_NAME = "footage.json"


@dataclass(frozen=True)
class FootageOptions:
    """How long and how big the footage step is (the defaults: about 1.5 minutes of a 2-core CPU for a ResNet-18).

    ``steps``: MoCo optimiser steps (0 skips the step); ``batch_size`` images a step, ``queue_size`` negatives,
    ``image_size`` the network input side (``None``: the animals preset's 128); ``max_frames``: at most this many
    frames of each video, spread evenly over it; ``equivariance``: weight of the paper's Eq. 3 term beside MoCo's.
    """

    steps: int = 150
    batch_size: int = 64
    queue_size: int = 512
    lr: float = 0.03
    image_size: int | None = None
    max_frames: int = 5000
    equivariance: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "queue_size", "max_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"footage {name} must be a positive integer, got {getattr(self, name)}")
        if self.steps < 0:
            raise ValueError(f"footage steps must be >= 0 (0 skips the footage step), got {self.steps}")


def project_videos(project: str | os.PathLike) -> list[Path]:
    """The unlabelled videos of a labelled project, as a DeepLabCut or Lightning Pose user keeps them.

    ``project``: a DeepLabCut project folder (the videos its ``config.yaml`` lists under ``video_sets`` that exist,
    at their path or by name in the project's ``videos/``, and the other videos of ``videos/``) or a labels file
    (Lightning Pose's ``CollectedData.csv``: the ``videos/`` folder beside it). Labelled copies (``*_labeled``) are
    left out. Returns an empty list when there are none.
    """
    from ..data.dlc_config import read_dlc_config

    project = Path(project)
    folder = project if project.is_dir() else project.parent
    found: list[Path] = []
    config = folder / "config.yaml"
    if project.is_dir() and config.is_file():
        for listed in read_dlc_config(config).get("video_sets", []):
            path = Path(listed)
            for candidate in (path, folder / path, folder / "videos" / path.name):
                if candidate.is_file():
                    found.append(candidate)
                    break
    found += folder_videos(folder / "videos")
    unique = {p.resolve(): p for p in found}
    return sorted(unique.values())


def _settings(backbone: Backbone, videos: Sequence[Path], options: FootageOptions) -> dict:
    """What a resumed footage step must match: the videos (name and size), the options and the start's weights."""
    digest = hashlib.sha1()
    for name, tensor in sorted(backbone.body.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return {
        "videos": [f"{v.name} ({v.stat().st_size} bytes)" for v in videos],
        "options": asdict(options),
        "start": f"{backbone.arch} {digest.hexdigest()[:16]}",
    }


def _clear(out: Path) -> None:
    """Remove what an earlier footage step wrote in ``out`` (and nothing else), so that a fresh run starts afresh."""
    for name in ("backbone", "init"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in (RECORD_NAME, "checkpoint.pt", "log.jsonl", "config.json"):
        (out / name).unlink(missing_ok=True)


def _frames_used(videos: Sequence[Path], max_frames: int) -> tuple[int, int]:
    """``(every, frames)``: the frame stride that keeps at most ``max_frames`` of the longest video, and the
    frames all videos give with it (each video opened: an unreadable one is named here, before any work)."""
    counts = [video_info(v).num_frames for v in videos]
    every = max(1, math.ceil(max(counts) / max_frames))
    return every, sum(min(math.ceil(n / every), max_frames) for n in counts)


def adapt_to_footage(
    backbone: Backbone,
    videos: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    options: FootageOptions | None = None,
    *,
    device: str | None = None,
    resume: bool = False,
    progress: bool = False,
) -> Backbone:
    """``backbone`` after a short MoCo run on the frames of ``videos`` (see the module docstring).

    Args:
        backbone: where to start (weights and normalisation); it is not modified.
        videos: the unlabelled recordings (any file PyAV reads; the ``[video]`` extra).
        output_dir: folder for the run (``footage.json``, ``init/`` while it runs, ``checkpoint.pt``, ``log.jsonl``,
            ``config.json``, ``backbone/``).
        options: the budget and sizes (:class:`FootageOptions`).
        device: ``None`` / ``"auto"`` (the GPU when there is one), ``"cpu"``, ``"cuda"``, ...
        resume: continue the run in ``output_dir`` (a finished one is read back), refused naming what changed when
            the videos, options or starting weights differ; without it, what an earlier run wrote there is removed.
        progress: show a progress bar with the time left.

    Returns:
        the adapted :class:`~contrastive_landmarks.Backbone` (``backbone`` itself when ``options.steps`` is 0),
        with ``backbone``'s stages and normalisation.

    Raises:
        ValueError: no videos, an unreadable one (named), fewer frames than one batch, or a checkpoint in
            ``output_dir`` of other settings when resuming.
        PretrainInterrupted: Ctrl-C; the checkpoint of the last finished step is in ``output_dir``.
    """
    options = options or FootageOptions()
    if options.steps == 0:
        return backbone
    videos = [Path(v) for v in videos]
    if not videos:
        raise ValueError("the footage step needs at least one video (none given or found in the project)")
    out = Path(output_dir)
    adapted, record = out / "backbone", out / RECORD_NAME
    settings = _settings(backbone, videos, options)
    if resume and record.is_file():
        check_resumable(json.loads(record.read_text()), settings, out)
    elif not resume:
        _clear(out)
    if not (adapted / "config.json").is_file():
        every, frames = _frames_used(videos, options.max_frames)
        if frames < options.batch_size:
            raise ValueError(
                f"the videos hold {frames} frames, fewer than one footage batch of {options.batch_size}: "
                "give longer videos or a smaller footage batch size"
            )
        out.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(settings, indent=1) + "\n")
        init = out / "init"
        if not (init / "config.json").is_file():
            backbone.save_pretrained(init)
        run = pretrain(
            PretrainConfig(
                video=[str(v) for v in videos],
                every=every,
                max_frames=options.max_frames,
                output_dir=str(out),
                preset="animals",
                image_size=options.image_size,
                arch=backbone.arch,
                init=str(init),
                queue_size=options.queue_size,
                equivariance=options.equivariance,
                epochs=max(1, math.ceil(options.steps / (frames // options.batch_size))),
                batch_size=options.batch_size,
                lr=options.lr,
                schedule="cosine-step",
                max_steps=options.steps,
                resume=resume and (out / "checkpoint.pt").is_file(),
                checkpoint_every=50,
                num_workers=0,
                device=device or "auto",
                seed=options.seed,
                progress=progress,
            )
        )
        if run["backbone"] is None:  # the step budget ends inside the last epoch
            export_backbone(run["checkpoint"], adapted)
        shutil.rmtree(init, ignore_errors=True)
    result = load_backbone(str(adapted), stages=backbone.stage_indices)
    return result.with_preprocessing(backbone.preprocessing)
