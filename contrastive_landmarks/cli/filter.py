"""The ``filter`` and ``plot-trajectories`` subcommands: what a DeepLabCut user does with a video's predictions.

``filter PREDICTIONS...`` writes ``<stem>_filtered<ext>`` beside each predictions file (DeepLabCut's
``filterpredictions`` naming; for an ``.h5`` also the ``_filtered.csv`` it writes beside it) with
:func:`~contrastive_landmarks.filtering.filter_track`. ``plot-trajectories PREDICTIONS -o out.png`` draws x, y and
likelihood of each body part over time (:func:`~contrastive_landmarks.viz.plot_trajectories`). Both read every
format ``predict`` writes (:func:`~contrastive_landmarks.data.dlc_output.read_track`), DeepLabCut's own
single-animal ``.h5`` / CSV included. The p-cutoff is ``--pcutoff``, else the ``pcutoff`` of a DeepLabCut
project's ``config.yaml`` in the file's folder or the one above it, else 0.6.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .common import UserError, fail
from .predict import check_writable

if TYPE_CHECKING:
    from ..data.dlc_output import Track
    from ..filtering import FilteredTrack

__all__ = [
    "add_filter_arguments",
    "add_filter_parser",
    "add_plot_trajectories_parser",
    "describe_filtering",
    "filter_and_write",
    "filtered_outputs",
    "probability",
    "resolve_pcutoff",
]


def probability(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def _odd_window(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an odd number of frames, got {text!r}") from None
    if value < 1 or value % 2 == 0:
        raise argparse.ArgumentTypeError(f"must be an odd number of frames (1, 3, 5, ...), got {value}")
    return value


def _pixels(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of pixels (inf: off), got {value}")
    return value


def _pcutoff_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pcutoff",
        type=probability,
        default=None,
        help="likelihood below which a point counts as missing (default: the pcutoff of a DeepLabCut project's "
        "config.yaml in the file's folder or the one above, else 0.6)",
    )


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    """``--window``, ``--pcutoff``, ``--max-jump``: the settings of
    :func:`~contrastive_landmarks.filtering.filter_track` (shared by ``filter`` and ``predict --filter``)."""
    parser.add_argument(
        "--window",
        type=_odd_window,
        default=None,
        help="smoothing window in frames, odd (default 5 for median, 9 for savgol; 1: interpolate only)",
    )
    _pcutoff_argument(parser)
    parser.add_argument(
        "--max-jump",
        type=_pixels,
        default=None,
        metavar="PX",
        help="a point further than this from its body part's running median is a swap or a jump: swapped back or "
        "interpolated (default: 8x the part's typical jitter, at least 2 px; inf: off)",
    )


def resolve_pcutoff(args: argparse.Namespace, near: Path) -> tuple[float, str]:
    """``(p-cutoff, where it came from)``: ``--pcutoff``, else the DeepLabCut project's around ``near``
    (:func:`~contrastive_landmarks.filtering.find_pcutoff`), else the default 0.6."""
    from ..filtering import find_pcutoff

    if args.pcutoff is not None:
        return args.pcutoff, "--pcutoff"
    value, config = find_pcutoff(near)
    return value, (str(config) if config is not None else "the default")


def filtered_outputs(path: Path, fmt: str) -> list[tuple[Path, str]]:
    """``(file, format)`` pairs the filtered copy of the predictions file ``path`` (written as ``fmt``) goes to:
    ``<stem>_filtered<ext>`` as ``fmt``, and for an ``.h5`` also ``<stem>_filtered.csv`` as DeepLabCut's CSV
    (DeepLabCut's ``filterpredictions`` names and writes both)."""
    outputs = [(path.with_name(f"{path.stem}_filtered{path.suffix}"), fmt)]
    if fmt == "h5":
        outputs.append((path.with_name(f"{path.stem}_filtered.csv"), "dlc"))
    return outputs


def filter_and_write(
    track: Track, outputs: list[tuple[Path, str]], args: argparse.Namespace, method: str, pcutoff: float
) -> FilteredTrack:
    """Filter ``track`` (``--window`` and ``--max-jump`` from ``args``) and write it to each ``(file, format)`` of
    ``outputs``; the likelihoods stay the model's (exchanged along with swapped points)."""
    from ..data.dlc_output import write_track
    from ..filtering import filter_track

    result = filter_track(
        track.xy, track.likelihood, method=method, window=args.window, pcutoff=pcutoff, max_jump=args.max_jump
    )
    filtered = track.replace(xy=result.xy, likelihood=result.likelihood)
    for output, fmt in outputs:
        write_track(output, filtered, fmt)
    return result


def describe_filtering(result: FilteredTrack, method: str, pcutoff: float, source: str, names: list[str]) -> str:
    """One line: what :func:`filter_and_write` did, naming the body parts (of ``names``) it left as they were."""
    line = (
        f"{method}, p-cutoff {pcutoff:g} from {source}: {int(result.filled.sum())} points interpolated, "
        f"{int(result.swapped.sum())} swapped back"
    )
    left = [name for name, skipped in zip(names, result.unfiltered) if skipped]
    if left:
        line += (
            f"; {', '.join(left)} left unfiltered, no point of {'it' if len(left) == 1 else 'them'} reaching the "
            "p-cutoff (set a lower --pcutoff)"
        )
    return line


def _run_filter(args: argparse.Namespace) -> int:
    from ..data.dlc_output import file_format, read_track, require_h5

    try:
        files = [Path(p) for p in args.predictions]
        plans = []
        for path in files:  # every output checked before any is written
            if not path.is_file():
                raise UserError(f"predictions not found: {path}")
            fmt = file_format(path)
            if fmt == "h5":
                require_h5()
            outputs = filtered_outputs(path, fmt)
            for output, _ in outputs:
                check_writable(output, files)
            plans.append((path, outputs))
        for path, outputs in plans:
            track = read_track(path)
            if track.key != "frame":
                raise UserError(f"{path} holds images, not the frames of a video: there is no track to filter")
            pcutoff, source = resolve_pcutoff(args, path)
            result = filter_and_write(track, outputs, args, args.method, pcutoff)
            what = describe_filtering(result, args.method, pcutoff, source, track.names)
            written = ", ".join(str(output) for output, _ in outputs)
            print(f"filtered {path} ({len(track.index)} frames, {what}): wrote {written}", file=sys.stderr)
    except (UserError, ValueError, FileNotFoundError, ImportError) as error:
        return fail("filter", error)
    return 0


def add_filter_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``filter``."""
    parser = subparsers.add_parser(
        "filter",
        description="Filter the predictions of videos (predict's CSV / DeepLabCut CSV / .h5 / JSON, or DeepLabCut's "
        "own): points below the p-cutoff are interpolated linearly in time (held at the ends), swaps of two body "
        "parts are exchanged back and other jumps interpolated, then jitter is smoothed. Writes "
        "<stem>_filtered<ext> beside each file (for an .h5 also <stem>_filtered.csv, as DeepLabCut does); the "
        "likelihoods are kept as the model gave them.",
    )
    parser.add_argument("predictions", nargs="+", metavar="PREDICTIONS", help="prediction files (.csv, .h5, .json)")
    parser.add_argument(
        "--method",
        choices=("median", "savgol"),
        default="median",
        help="median (DeepLabCut's default) or savgol (Savitzky-Golay, degree 2) smoothing (default median)",
    )
    add_filter_arguments(parser)
    parser.set_defaults(func=_run_filter)
    return parser


# -- the trajectory plot ----------------------------------------------------------------------------------------
def _run_plot_trajectories(args: argparse.Namespace) -> int:
    from ..data.dlc_output import read_track
    from ..viz import plot_trajectories

    try:
        path = Path(args.predictions)
        output = Path(args.output)
        check_writable(output, [path])
        track = read_track(path)
        pcutoff, source = resolve_pcutoff(args, path)
        plot_trajectories(
            track.xy,
            track.likelihood,
            track.names,
            pcutoff=pcutoff,
            frames=track.index if track.key == "frame" else None,
            hide_below_pcutoff=args.hide_below_pcutoff,
            title=args.title if args.title is not None else path.name,
            path=output,
        )
    except (UserError, ValueError, FileNotFoundError, ImportError) as error:
        return fail("plot-trajectories", error)
    print(
        f"wrote {output} ({len(track.names)} body parts, {len(track.index)} rows, p-cutoff {pcutoff:g} from {source})",
        file=sys.stderr,
    )
    return 0


def add_plot_trajectories_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``plot-trajectories``."""
    parser = subparsers.add_parser(
        "plot-trajectories",
        description="x, y and likelihood of each body part over time, from a predictions file (predict's CSV / "
        "DeepLabCut CSV / .h5 / JSON, or DeepLabCut's own): three stacked panels, the p-cutoff dashed.",
    )
    parser.add_argument("predictions", metavar="PREDICTIONS", help="a prediction file (.csv, .h5, .json)")
    parser.add_argument("-o", "--output", required=True, help="PNG file to write")
    _pcutoff_argument(parser)
    parser.add_argument(
        "--hide-below-pcutoff",
        action="store_true",
        help="leave points below the p-cutoff out of the x and y panels (DeepLabCut's plot_trajectories does)",
    )
    parser.add_argument("--title", default=None, help="figure title (default: the file name)")
    parser.set_defaults(func=_run_plot_trajectories)
    return parser
