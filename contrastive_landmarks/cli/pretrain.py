"""Backbone subcommands of the ``contrastive-landmarks`` CLI: ``pretrain`` (MoCo), ``export`` (checkpoint ->
model directory) and ``push`` (to the Hugging Face Hub).

Each ``add_*_parser(subparsers)`` registers one subcommand (the main CLI calls them) and sets ``func`` to a
handler taking the parsed arguments and returning an exit status. The ``pretrain`` options are generated
from :class:`~contrastive_landmarks.train.PretrainConfig`'s fields and their help texts
(:func:`add_config_options`), so the command line and the Python API cannot drift apart.

Errors a user can fix (bad settings, missing files, being offline) are reported as one line on
stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import textwrap
import types
import typing
import warnings
from pathlib import Path

from .common import UserError, check_output_dir, fail, progress_available

__all__ = ["add_config_options", "add_export_parser", "add_pretrain_parser", "add_push_parser", "config_from_args"]

logger = logging.getLogger(__name__)


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# -- options generated from a dataclass ------------------------------------------------------------
def _option_type(annotation) -> tuple[type, bool, bool]:
    """``(scalar type, is a list, may be None)`` of a field annotation such as ``int | None`` or ``list[str]``."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) != 1:
            raise TypeError(f"cannot make a command-line option of {annotation}")
        annotation, origin = args[0], typing.get_origin(args[0])
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(annotation) or (str,)
        return inner, True, optional
    if annotation not in (bool, int, float, str):
        raise TypeError(f"cannot make a command-line option of {annotation}")
    return annotation, False, optional


def add_config_options(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    skip: tuple[str, ...] = (),
    notes: typing.Mapping[str, str] | None = None,
) -> None:
    """One option per field of dataclass ``cls``: ``--field-name``, help from ``metadata["help"]``.

    Booleans become ``--flag`` / ``--no-flag``, lists take several values (``nargs="+"``), ``X | None``
    fields take an ``X`` and default to ``None``. The parsed value's ``dest`` is the field name. A list
    without a default is marked "(required)" unless ``notes`` gives its field another ending (e.g.
    ``{"data": " (one of --data / --video is required)"}``).
    """
    notes = dict(notes or {})
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        scalar, is_list, _ = _option_type(hints[f.name])
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        text = f.metadata.get("help", "").replace("%", "%%")
        flag = "--" + f.name.replace("_", "-")
        if scalar is bool and not is_list:
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=text if default is None else f"{text} (default: {'on' if default else 'off'})",
            )
            continue
        if f.name in notes:
            suffix = notes[f.name]
        elif is_list:
            suffix = f" (default: {' '.join(map(str, default))})" if default else " (required)"
        elif default is None:
            suffix = "" if "default" in text else " (default: none)"
        else:
            suffix = f" (default: {default})"
        parser.add_argument(
            flag,
            dest=f.name,
            type=scalar,
            nargs="+" if is_list else None,
            default=default,
            metavar=f.name.upper(),
            help=text + suffix,
        )


def config_from_args(cls: type, args: argparse.Namespace):
    """An instance of dataclass ``cls`` from the parsed options of :func:`add_config_options`."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})


def _paragraphs(*texts: str) -> str:
    return "\n\n".join(textwrap.fill(t, 100) for t in texts)


# -- pretrain ---------------------------------------------------------------------------------------------
def _resume_command() -> str:
    import sys

    argv = [a for a in sys.argv[1:] if a not in ("--resume", "--no-resume")]
    return "contrastive-landmarks " + " ".join([*argv, "--resume"])


_ONE_SOURCE = " (one of --data / --video is required)"


def _check_pretrain_inputs(config) -> None:
    """Refuse, before any work, what the command line got wrong: no source, a ``--video`` that is no video,
    an ``--output-dir`` that is a file, a ``--device`` this machine does not have."""
    from ..data.video import VIDEO_EXTENSIONS
    from ..device import resolve_device

    if not config.data and not config.video:
        raise UserError("give the images with --data FOLDER/LIST or the videos with --video FILE (one is required)")
    for spec in config.video:
        path = Path(str(spec).split(";", 1)[0].strip())
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            kind = "a folder" if path.is_dir() else "not a video"
            raise UserError(
                f"--video {path} is {kind} (videos end in {', '.join(VIDEO_EXTENSIONS)}); give images with --data"
            )
    check_output_dir(config.output_dir, "--output-dir")
    if config.device != "auto":
        resolve_device(config.device)


def _run_pretrain(args: argparse.Namespace) -> int:
    import sys

    from ..train import PretrainConfig, pretrain
    from ..train.pretraining import PretrainInterrupted

    config = config_from_args(PretrainConfig, args)
    try:
        _check_pretrain_inputs(config)
    except (UserError, ValueError) as error:
        return fail("pretrain", error)
    config.progress = progress_available(config.progress)
    try:
        with warnings.catch_warnings():  # printed below as one line
            warnings.filterwarnings("ignore", message="MoCo's loss stayed near chance", category=UserWarning)
            result = pretrain(config)
    except PretrainInterrupted as stop:
        print(f"contrastive-landmarks pretrain: {stop}; resume with:\n  {_resume_command()}", file=sys.stderr)
        return 130
    except FileExistsError as error:
        return fail("pretrain", f"{error} (on the command line: --resume, or another --output-dir)")
    except (ValueError, FileNotFoundError, ImportError) as error:
        return fail("pretrain", error)
    if _main_process():
        state = "finished" if result["finished"] else "stopped (resume with --resume)"
        print(
            f"pretrain {state} at step {result['global_step']} (epoch {result['epoch']}); "
            f"checkpoint {result['checkpoint']}"
        )
        if result["backbone"] is not None:
            print(f"backbone exported to {result['backbone']}")
        if result["warning"]:
            print(f"warning: {result['warning']}", file=sys.stderr)
    return 0


def add_pretrain_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``pretrain``."""
    from ..train import PretrainConfig

    parser = subparsers.add_parser(
        "pretrain",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_paragraphs(
            "MoCo pretraining (the paper's invariant learning) on unlabelled images; defaults are the authors' "
            "recipe for faces. Writes OUTPUT_DIR/checkpoint.pt (resumable to the batch), log.jsonl, config.json "
            "and, at the end, the exported backbone in OUTPUT_DIR/backbone.",
            "Several GPUs or machines: torchrun --nproc_per_node=G -m contrastive_landmarks.cli pretrain ... "
            "(--batch-size is the global batch). A run's OUTPUT_DIR/config.json works as --config.",
        ),
    )
    add_config_options(parser, PretrainConfig, notes={"data": _ONE_SOURCE, "video": _ONE_SOURCE})
    parser.set_defaults(func=_run_pretrain)
    return parser


# -- export ----------------------------------------------------------------------------------------------------
def _measured(path: str) -> dict[str, str]:
    """Model-card rows from a JSON file: a flat ``{name: value}`` object, or an ``evaluate`` results file."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"results file not found: {file}")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{file} is not JSON ({error})") from error
    if not isinstance(data, dict):
        raise UserError(f"{file} must hold a JSON object")
    if isinstance(data.get("test"), dict) and "mean" in data["test"]:
        config = data.get("config", {})
        dataset = (config.get("dataset") or {}).get("name", "")
        shots = config.get("num_labelled")
        label = " ".join(
            str(p) for p in (config.get("protocol", "result"), dataset, f"{shots}-shot" if shots else None) if p
        )
        test = data["test"]
        return {label: f"{test['mean']:.2f} ± {test.get('std', 0):.2f} {data.get('metric', '')}".strip()}
    return {str(k): (v if isinstance(v, str) else json.dumps(v)) for k, v in data.items()}


def _run_export(args: argparse.Namespace) -> int:
    import torch

    from ..hub import WEIGHTS_NAME
    from ..train.pretraining import CHECKPOINT_NAME, export_backbone

    try:
        checkpoint = Path(args.checkpoint)
        if checkpoint.is_dir():
            checkpoint = checkpoint / CHECKPOINT_NAME
        info: dict[str, str] = {}
        for path in args.results or ():
            info.update(_measured(path))
        for item in args.card or ():
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UserError(f"--card takes KEY=VALUE, got {item!r}")
            info[key] = value
        if args.half:
            info["weights"] = "float16 (loaded back as float32)"
        out = export_backbone(checkpoint, args.output, info, dtype=torch.float16 if args.half else None)
    except (UserError, ValueError, FileNotFoundError) as error:
        return fail("export", error)
    size = (out / WEIGHTS_NAME).stat().st_size
    print(f"wrote {out} ({size / 2**20:.1f} MiB of weights); load it with load_backbone({str(out)!r})")
    return 0


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``export``."""
    parser = subparsers.add_parser(
        "export",
        description="Write the query encoder's backbone of a MoCo checkpoint in the Hub layout that load_backbone "
        "and the Hugging Face Hub read, with a model card (data, recipe, epochs, training time, and measured "
        "numbers from --results).",
    )
    parser.add_argument("checkpoint", help="checkpoint.pt, or the pretraining output folder holding it")
    parser.add_argument("output", help="model directory to write")
    parser.add_argument("--half", action="store_true", help="store the weights as float16 (half the size)")
    parser.add_argument(
        "--results",
        nargs="+",
        default=None,
        metavar="FILE.json",
        help="measured numbers for the model card: `evaluate` result files or {name: value} JSON",
    )
    parser.add_argument(
        "--card", nargs="+", default=None, metavar="KEY=VALUE", help="extra model-card rows, e.g. license=mit"
    )
    parser.set_defaults(func=_run_export)
    return parser


# -- push ------------------------------------------------------------------------------------------------------
def _offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _run_push(args: argparse.Namespace) -> int:
    import sys

    from ..hub import WEIGHTS_NAME, read_config

    folder = Path(args.directory)
    try:
        read_config(folder)
        if not (folder / WEIGHTS_NAME).is_file():
            raise UserError(f"{folder} has no {WEIGHTS_NAME}")
    except (UserError, FileNotFoundError) as error:
        return fail("push", error)
    if _offline():
        return fail(
            "push",
            UserError(
                f"cannot upload {folder} to {args.repo_id}: the Hugging Face Hub is switched off (HF_HUB_OFFLINE is "
                "set). Unset it on a machine with internet access, or upload later with "
                f"`huggingface-cli upload {args.repo_id} {folder}`"
            ),
        )
    from huggingface_hub import HfApi

    from ..hub import TRAINING_STATE_PATTERNS, training_state_files

    left_out = training_state_files(folder)
    if left_out:
        size = sum(path.stat().st_size for path in left_out) / 2**20
        names = ", ".join(str(path.relative_to(folder)) for path in left_out)
        print(f"leaving out training state ({size:.1f} MiB): {names}", file=sys.stderr)
    api = HfApi()  # token: HF_TOKEN or the saved `huggingface-cli login`
    try:
        api.create_repo(args.repo_id, private=args.private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=args.repo_id,
            folder_path=str(folder),
            commit_message=args.message,
            revision=args.revision,
            ignore_patterns=list(TRAINING_STATE_PATTERNS),
        )
    except Exception as error:  # network, authentication, permission: one readable line
        logger.debug("upload failed", exc_info=True)
        return fail(
            "push",
            UserError(
                f"upload of {folder} to {args.repo_id} failed: {type(error).__name__}: {error} (is HF_TOKEN set to a "
                "token with write access, and is the Hub reachable?)"
            ),
        )
    url = getattr(commit, "commit_url", None) or commit
    print(f"uploaded {folder} to {args.repo_id}: {url}")
    return 0


def add_push_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``push``."""
    parser = subparsers.add_parser(
        "push",
        description="Upload a model directory (from export, fit-projector, fit-regressor or finetune) to a Hugging "
        "Face Hub model repository, creating it if needed; training state left beside the model (checkpoints: "
        "*.pt, *.pth, *.ckpt) is not uploaded. The token comes from the environment (HF_TOKEN) or a saved "
        "`huggingface-cli login`; it is never taken on the command line.",
    )
    parser.add_argument("directory", help="model directory (config.json + model.safetensors)")
    parser.add_argument("repo_id", help="Hub repository, e.g. your-name/resnet50-celeba")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", default=None, help="branch to commit to (default main)")
    parser.add_argument("--message", default="Upload contrastive_landmarks model", help="commit message")
    parser.set_defaults(func=_run_push)
