"""The ``contrastive-landmarks`` command line.

Subcommands live with the code they drive; each module contributes ``add_*_parser(subparsers)``
functions that register a subcommand and set ``func`` on its parser. A subcommand whose optional
dependencies are missing is still listed, and says which extra to install.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

__all__ = ["build_parser", "main"]

#: Exceptions a subcommand raises for bad user input (paths, permissions, values): one line on stderr, exit 2.
_USER_ERRORS: tuple[type[Exception], ...] = (
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    ValueError,
)


class _Command(NamedTuple):
    module: str  # the module whose function registers the subcommand
    function: str  # add_*_parser(subparsers)
    extra: str  # the extra that provides its dependencies
    help: str  # its line in ``contrastive-landmarks --help`` (the one place it is written)


#: The subcommands, in the order ``--help`` lists them. ``--help`` alone imports none of their modules
#: (which import torch); a command line naming one imports that one only.
_COMMANDS: dict[str, _Command] = {
    "demo": _Command(
        "contrastive_landmarks.demo",
        "add_demo_parser",
        "viz",
        "detect face landmarks and match them into a warped copy, or between your photos (two pictures)",
    ),
    "pretrain": _Command(
        "contrastive_landmarks.cli.pretrain",
        "add_pretrain_parser",
        "train",
        "MoCo pretraining of a ResNet backbone on unlabelled images or videos",
    ),
    "fit-projector": _Command(
        "contrastive_landmarks.cli.fit_projector",
        "add_fit_projector_parser",
        "train",
        "train the spatial projector (Eq. 3) on a frozen backbone",
    ),
    "fit-regressor": _Command(
        "contrastive_landmarks.cli.fit_regressor",
        "add_fit_regressor_parser",
        "train",
        "fit the linear landmark regressor and save a LandmarkModel directory",
    ),
    "finetune": _Command(
        "contrastive_landmarks.cli.finetune",
        "add_finetune_parser",
        "train",
        "train the backbone and a keypoint head end to end on your own labelled frames",
    ),
    "export": _Command(
        "contrastive_landmarks.cli.pretrain",
        "add_export_parser",
        "train",
        "pretraining checkpoint -> model directory (config.json, model.safetensors, README.md)",
    ),
    "push": _Command(
        "contrastive_landmarks.cli.pretrain",
        "add_push_parser",
        "train",
        "upload a model directory to the Hugging Face Hub",
    ),
    "predict": _Command(
        "contrastive_landmarks.cli.predict",
        "add_predict_parser",
        "train",
        "landmarks and confidences of a model for image files or videos (CSV, JSON, DeepLabCut CSV or .h5)",
    ),
    "filter": _Command(
        "contrastive_landmarks.cli.filter",
        "add_filter_parser",
        "h5",
        "filter a video's predictions: uncertain points interpolated, swaps undone, jitter smoothed",
    ),
    "plot-trajectories": _Command(
        "contrastive_landmarks.cli.filter",
        "add_plot_trajectories_parser",
        "viz",
        "x, y and likelihood of each body part over time, from a predictions file (PNG)",
    ),
    "export-onnx": _Command(
        "contrastive_landmarks.cli.export_onnx",
        "add_export_onnx_parser",
        "onnx",
        "export a model to ONNX for deployment: one pass of the network, its framing in a JSON sidecar and numpy",
    ),
    "evaluate": _Command(
        "contrastive_landmarks.cli.evaluate",
        "add_evaluate_parser",
        "viz",
        "run the paper's evaluation protocols, or score a model on your test frames (evaluate MODEL)",
    ),
    "plot": _Command(
        "contrastive_landmarks.cli.evaluate", "add_plot_parser", "viz", "make figures (needs the [viz] extra)"
    ),
}


class _HelpFromTable:
    """The subparsers action as a registering function sees it: ``add_parser`` gets the table's help line."""

    def __init__(self, subparsers) -> None:
        self._subparsers = subparsers

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        if name in _COMMANDS:
            kwargs["help"] = _COMMANDS[name].help
        return self._subparsers.add_parser(name, **kwargs)


def _listed(subparsers, name: str, help_text: str, handler=None) -> None:
    """``name`` listed without its options; whatever follows it is swallowed (the handler explains)."""
    sub = subparsers.add_parser(name, help=help_text, add_help=False, prefix_chars="\0")
    sub.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    if handler is not None:
        sub.set_defaults(func=handler)


def _unavailable(name: str, extra: str, error: Exception):
    def handler(args: argparse.Namespace) -> int:
        print(
            f'`{name}` needs the [{extra}] extra: pip install "contrastive-landmarks[{extra}]" ({error})',
            file=sys.stderr,
        )
        return 2

    return handler


def _load_config(path: str) -> dict:
    """Options from a JSON file (keys are option names with ``_`` or ``-``)."""
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"config file not found: {file}")
    text = file.read_text()
    if file.suffix in (".yaml", ".yml"):
        raise SystemExit('config files are JSON (e.g. {"epochs": 10}); YAML is not supported')
    return {k.replace("-", "_"): v for k, v in json.loads(text).items()}


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's layout, with the help column placed after the longest subcommand name: argparse measures the
    names without the indent it prints them with, so ``plot-trajectories`` would wrap onto a line of its own."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        choices = getattr(action, "_choices_actions", [])
        if choices and action.help is not argparse.SUPPRESS:
            longest = max(len(self._format_action_invocation(choice)) for choice in choices)
            indent = self._current_indent + 2 * self._indent_increment
            self._action_max_length = max(self._action_max_length, longest + indent)


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser: ``commands`` (default: all) with their options, the others listed by name.

    A subcommand whose optional dependencies are missing is listed with the extra it needs.
    """
    wanted = set(_COMMANDS) if commands is None else set(commands)
    parser = argparse.ArgumentParser(
        prog="contrastive-landmarks",
        formatter_class=_HelpFormatter,
        description="Learn object-landmark representations without labels (MoCo + hypercolumns + spatial "
        "projector) and turn them into keypoints with a few labels.",
    )
    parser.add_argument(
        "--config", metavar="FILE.json", help="read option defaults from a JSON file; options on the command line win"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in _COMMANDS.items():
        if name not in wanted:
            _listed(subparsers, name, command.help)
            continue
        try:
            module = importlib.import_module(command.module)
        except ImportError as error:
            if (getattr(error, "name", None) or "").startswith("contrastive_landmarks"):
                continue  # part of this package that is not there: nothing to register
            handler = _unavailable(name, command.extra, error)
            _listed(subparsers, name, f"(needs the [{command.extra}] extra)", handler)
            continue
        getattr(module, command.function)(_HelpFromTable(subparsers))
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names (the first word that is one, after the global options), if any."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif word in _COMMANDS:
            return word
        elif not word.startswith("-"):
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``contrastive-landmarks`` console script.

    Ctrl-C anywhere (while a subcommand's module imports torch at start-up, or during a command that does not
    stop cleanly on its own) prints one line and returns 130, the shell's status for an interrupt.
    """
    command: str | None = None
    try:
        from .evaluate_keypoints import shorthand

        argv = shorthand(list(sys.argv[1:] if argv is None else argv))
        command = _command_of(argv)
        return _run(argv, command)
    except KeyboardInterrupt:
        print(f"contrastive-landmarks{f' {command}' if command else ''}: interrupted (Ctrl-C)", file=sys.stderr)
        return 130


def _run(argv: list[str], command: str | None) -> int:
    """Parse ``argv`` (``command``'s module imported only) and run the subcommand."""
    parser = build_parser([command] if command else [])
    args = parser.parse_args(argv)
    if args.config:
        # re-parse with the file's values as defaults for the chosen subcommand
        defaults = _load_config(args.config)
        subparser = parser._subparsers._group_actions[0].choices.get(args.command) if parser._subparsers else None
        if subparser is not None:
            known = {a.dest for a in subparser._actions}
            unknown = sorted(set(defaults) - known)
            if unknown:
                parser.error(f"{args.config}: unknown options for `{args.command}`: {unknown}")
            subparser.set_defaults(**defaults)
            args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    from ..hub import PretrainedNotAvailableError  # a RuntimeError whose message says what to do instead
    from .common import UserError, fail

    try:
        return int(args.func(args) or 0)
    except (*_USER_ERRORS, UserError, PretrainedNotAvailableError) as error:
        # a problem with what the user passed: one line, no traceback (-v/--verbose prints it as well)
        if args.verbose:
            traceback.print_exc()
        message = " ".join(str(error).split()) or type(error).__name__
        return fail(args.command, message)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
