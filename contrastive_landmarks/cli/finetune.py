"""The ``finetune`` subcommand: :func:`~contrastive_landmarks.train.finetune` on a user's own labelled frames."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .common import (
    UserError,
    add_frame_data_arguments,
    add_model_arguments,
    describe_backbone,
    fail,
    progress_available,
    setup,
)
from .reporting import args_json, model_card, write_json

__all__ = ["add_finetune_parser"]

REPORT_NAME = "finetune.json"


def _load_backbone(args):
    import torch

    from .. import load_backbone
    from .common import _random_init

    if _random_init(args):
        torch.manual_seed(args.seed)
    return load_backbone(args.backbone, args.weights)


def _options(args):
    from ..framing import Framing
    from ..train.finetune import FinetuneOptions

    return FinetuneOptions(
        steps=args.steps,
        batch_size=args.batch_size,
        image_size=args.image_size,
        lr=args.lr,
        framing=Framing(stages=args.stages),
        val_fraction=args.val_fraction,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        output_dir=args.output,
        resume=args.resume,
        progress=progress_available(not args.no_progress),
    )


def _resume_command() -> str:
    argv = [a for a in sys.argv[1:] if a != "--resume"]
    return "contrastive-landmarks " + " ".join([*argv, "--resume"])


def _run_finetune(args: argparse.Namespace) -> int:
    from ..data.registry import frames_by_name
    from ..train.finetune import FinetuneInterrupted, finetune

    setup(args)
    try:
        if not args.output:
            raise UserError("--output DIR is required (where the model directory is written)")
        args.split = args.split or ("train" if args.dataset == "dlc" else "all")
        train = frames_by_name(args.dataset, args.root, args.split, path=args.path)
        backbone = _load_backbone(args)
        options = _options(args)
        started = time.perf_counter()
        result = finetune(backbone, train, options=options)
    except FinetuneInterrupted as stop:
        print(f"contrastive-landmarks finetune: {stop}; resume with:\n  {_resume_command()}", file=sys.stderr)
        return 130
    except (UserError, ValueError, FileNotFoundError, NotImplementedError) as error:
        return fail("finetune", error)
    minutes = (time.perf_counter() - started) / 60
    out = Path(args.output)
    summary = (
        f"Fine-tuned end to end from {describe_backbone(args)} on {result.config['train_frames']} frames "
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
    add_frame_data_arguments(
        parser,
        split_help="dlc: train (default; the library's 80/20 split by frame) or all; csv/coco: all",
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
        "--stages", type=int, choices=(1, 2), default=2, help="2: whole frame, then a crop around the animal (default)"
    )
    parser.add_argument("--val-fraction", type=float, default=0.15, help="held-out training frames (default 0.15)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, views and init (default 0)")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default 100)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run_finetune)
    return parser
