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

__all__ = ["build_parser", "main"]

#: Exceptions a subcommand raises for bad user input (paths, permissions, values): one line on stderr, exit 2.
_USER_ERRORS: tuple[type[Exception], ...] = (
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    ValueError,
)

# (module, function names, the subcommands they register, extra that provides their dependencies)
_SUBCOMMANDS: tuple[tuple[str, tuple[str, ...], tuple[str, ...], str], ...] = (
    ("contrastive_landmarks.demo", ("add_demo_parser",), ("demo",), "viz"),
    ("contrastive_landmarks.cli.pretrain", ("add_pretrain_parser",), ("pretrain",), "train"),
    ("contrastive_landmarks.cli.fit_projector", ("add_fit_projector_parser",), ("fit-projector",), "train"),
    ("contrastive_landmarks.cli.fit_regressor", ("add_fit_regressor_parser",), ("fit-regressor",), "train"),
    ("contrastive_landmarks.cli.finetune", ("add_finetune_parser",), ("finetune",), "train"),
    ("contrastive_landmarks.cli.pretrain", ("add_export_parser", "add_push_parser"), ("export", "push"), "train"),
    ("contrastive_landmarks.cli.predict", ("add_predict_parser",), ("predict",), "train"),
    ("contrastive_landmarks.cli.evaluate", ("add_evaluate_parser", "add_plot_parser"), ("evaluate", "plot"), "viz"),
)


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


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (all subcommands)."""
    parser = argparse.ArgumentParser(
        prog="contrastive-landmarks",
        description="Learn object-landmark representations without labels (MoCo + hypercolumns + spatial "
        "projector) and turn them into keypoints with a few labels.",
    )
    parser.add_argument(
        "--config", metavar="FILE.json", help="read option defaults from a JSON file; options on the command line win"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, functions, names, extra in _SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            if (getattr(error, "name", None) or "").startswith("contrastive_landmarks"):
                continue  # part of this package that is not there: nothing to register
            for name in names:  # still listed, each saying which extra it needs
                # no option prefix: whatever options follow are swallowed, and the handler explains
                sub = subparsers.add_parser(
                    name, help=f"(needs the [{extra}] extra)", add_help=False, prefix_chars="\0"
                )
                sub.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
                sub.set_defaults(func=_unavailable(name, extra, error))
            continue
        for function in functions:
            getattr(module, function)(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``contrastive-landmarks`` console script."""
    from .evaluate_keypoints import shorthand

    parser = build_parser()
    argv = shorthand(list(sys.argv[1:] if argv is None else argv))
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
