"""The ``finetune`` subcommand: :func:`~contrastive_landmarks.train.finetune` on a user's own labelled frames."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from .common import (
    UserError,
    _random_init,
    add_frame_data_arguments,
    add_model_arguments,
    check_output_dir,
    describe_backbone,
    fail,
    progress_available,
    resolve_device_option,
    setup,
)
from .reporting import args_json, model_card, write_json

__all__ = ["add_finetune_parser"]

REPORT_NAME = "finetune.json"


def _load_backbone(args):
    import torch

    from .. import load_backbone

    if _random_init(args):
        torch.manual_seed(args.seed)
    return load_backbone(args.backbone, args.weights)


def _options(args):
    from ..framing import Framing
    from ..train.finetuning import FinetuneOptions

    return FinetuneOptions(
        steps=args.steps,
        batch_size=args.batch_size,
        image_size=args.image_size,
        lr=args.lr,
        framing=Framing(stages=args.stages),
        val_fraction=args.val_fraction,
        num_labelled=args.num_labelled,
        relations=None if args.no_relations else FinetuneOptions.relations,
        device=None if args.device is None else str(args.device),
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        output_dir=args.output,
        resume=args.resume,
        progress=progress_available(not args.no_progress),
    )


def _footage_videos(args) -> list[Path]:
    """The project's own videos (:func:`~contrastive_landmarks.train.footage.project_videos` of ``--root`` /
    ``--path``) and those ``--video`` names, each once."""
    from ..train.footage import project_videos

    found = project_videos(args.root or args.path) if (args.root or args.path) else []
    for name in args.video or []:
        path = Path(name)
        if not path.is_file():
            raise UserError(f"--video {path}: no such file")
        found.append(path)
    return list({p.resolve(): p for p in found}.values())


def _footage(args) -> tuple[list[Path], object]:
    """``(videos, FootageOptions)`` of the footage step: the project's videos and ``--video``'s, an unreadable one is
    named by the footage step before it trains; none (said on stdout) or ``--footage-steps 0``: no step."""
    from ..train.footage import FootageOptions

    options = FootageOptions(seed=args.seed, **({} if args.footage_steps is None else {"steps": args.footage_steps}))
    videos = _footage_videos(args) if options.steps else []
    if options.steps and not videos:
        if args.footage_steps is not None:
            raise UserError(
                f"--footage-steps {args.footage_steps} needs videos: none found beside the labels (a DeepLabCut "
                "project's config.yaml video_sets or videos/ folder, a videos/ folder beside a labels file); name "
                "them with --video"
            )
        print(
            "contrastive-landmarks finetune: no videos found beside the labels, so no footage step (name the "
            "project's recordings with --video to adapt the backbone to them first)"
        )
    return videos, options


def _resume_command() -> str:
    argv = [a for a in sys.argv[1:] if a != "--resume"]
    return "contrastive-landmarks " + " ".join([*argv, "--resume"])


def _run_finetune(args: argparse.Namespace) -> int:
    from ..data.registry import frames_by_name
    from ..train.finetuning import finetune
    from ..train.interrupt import TrainingInterrupted

    setup(args)
    started = time.perf_counter()
    try:
        if not args.output:
            raise UserError("--output DIR is required (where the model directory is written)")
        out = check_output_dir(args.output)
        if args.split == "test":
            raise UserError("--split test would fit the model on its own test frames: fit on train (default) or all")
        args.split = args.split or ("train" if args.dataset == "dlc" else "all")
        resolve_device_option(args)
        train = frames_by_name(args.dataset, args.root, args.split, path=args.path)
        videos, footage = _footage(args)
        if _random_init(args) and not (videos and footage.steps):
            print(
                f"warning: {args.backbone} starts from a random init and there is no footage step: on a DeepLabCut "
                "mouse project this recipe then ends worse than the mean pose; give the project's videos (--video) "
                "or start from resnet18-faces (the default)"
            )
        options = dataclasses.replace(_options(args), footage=footage)
        result = finetune(_load_backbone(args), train, options=options, videos=videos)
    except TrainingInterrupted as stop:
        print(f"contrastive-landmarks finetune: {stop}; resume with:\n  {_resume_command()}", file=sys.stderr)
        return 130
    except (UserError, ValueError, FileNotFoundError, NotImplementedError, FileExistsError) as error:
        return fail("finetune", error)
    minutes = (time.perf_counter() - started) / 60
    start, footage = describe_backbone(args), result.config["footage"]
    if footage is not None:
        start += f", adapted to {len(footage['videos'])} video(s) by {footage['steps']} MoCo steps"
    subset = f" (a seeded subset of {args.num_labelled})" if args.num_labelled else ""
    summary = (
        f"Fine-tuned end to end from {start} on {result.config['train_frames']} frames{subset} "
        f"({args.dataset}: {args.path or args.root}, split {args.split}); validation error "
        f"{result.score:.2f} px on {result.config['val_frames']} held-out training frames, against "
        f"{result.baseline:.2f} px for the training frames' mean pose; best step {result.best_step} of "
        f"{result.steps}; {minutes:.1f} min."
    )
    card = model_card("Fine-tuned keypoint model", summary, {"options": result.config})
    result.model.save_pretrained(out, card=card)
    report = {
        "command": args_json(args),
        "score_px": result.score,
        "mean_pose_px": result.baseline,
        "footage": footage,
        "best_step": result.best_step,
        "steps": result.steps,
        "minutes": minutes,
        "history": result.history,
        "warnings": result.warnings,
        "config": result.config,
    }
    write_json(out / REPORT_NAME, report)
    print(summary)
    for message in result.warnings:
        print(f"warning: {message}", file=sys.stderr)
    print(json.dumps({"output": str(out), "val_error_px": round(result.score, 3)}))
    return 0


def add_finetune_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``finetune``."""
    parser = subparsers.add_parser(
        "finetune",
        description="Fine-tune a backbone with the paper's landmark regressor end to end on labelled frames "
        "(a DeepLabCut project, a Lightning Pose CollectedData.csv, a CSV or COCO file), choose the best state "
        "on held-out training frames, and save one model directory that detect/predict/evaluate read. "
        "Ctrl-C writes a checkpoint; rerun with --resume to continue exactly.",
    )
    add_model_arguments(parser)
    parser.set_defaults(backbone="resnet18-faces")
    for action in parser._actions:
        if action.dest == "backbone":
            action.help = (
                "where to start: a registry name (default resnet18-faces, the built-in self-supervised model), a "
                "model directory, or a timm ResNet name for a random init (seeded by --seed)"
            )
        elif action.dest == "device":
            action.help = "torch device: cpu, cuda, cuda:1, ... (default: the GPU when there is one, else the CPU)"
    add_frame_data_arguments(
        parser,
        split_help="dlc: train (default; the library's 80/20 split by frame) or all; csv/coco: all "
        "(test is refused: the model would be fitted on its own test frames)",
        path_help="labels file: a CollectedData CSV, a keypoint CSV, a COCO JSON",
    )
    parser.add_argument("--output", help="model directory to write (checkpoints go there too)")
    parser.add_argument("--steps", type=int, default=1500, help="optimiser steps (default 1500)")
    parser.add_argument("--batch-size", type=int, default=8, help="views per step (default 8)")
    parser.add_argument("--image-size", type=int, default=256, help="network input side in pixels (default 256)")
    parser.add_argument(
        "--lr", type=float, default=1e-3, help="backbone learning rate; the head's is 10x (default 1e-3)"
    )
    parser.add_argument(
        "--stages",
        type=int,
        choices=(1, 2),
        default=None,
        help="1: the whole frame; 2: then a crop around the animal (default: 2 unless the labelled animals fill "
        "the frame)",
    )
    parser.add_argument("--val-fraction", type=float, default=0.15, help="held-out training frames (default 0.15)")
    parser.add_argument(
        "--num-labelled",
        type=int,
        default=None,
        metavar="N",
        help="fit on a seeded subset of N training frames (the few-label setting; default: all)",
    )
    parser.add_argument(
        "--no-relations",
        action="store_true",
        help="no pose relations (default: a one-pass model learns which landmarks move together, such as one paw "
        "seen in two views, and keeps that where validation does not get worse)",
    )
    parser.add_argument(
        "--video",
        nargs="+",
        default=None,
        help="unlabelled recordings for the footage step, besides those found beside the labels (a DeepLabCut "
        "project's config.yaml video_sets and videos/, a videos/ folder beside a labels file)",
    )
    parser.add_argument(
        "--footage-steps",
        type=int,
        default=None,
        metavar="N",
        help="MoCo steps adapting the backbone to the videos before fine-tuning (default 150, about 1.5 min of a "
        "2-core CPU for a ResNet-18; 0: no footage step); needs videos when given",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, views and init (default 0)")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default 100)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run_finetune)
    return parser
