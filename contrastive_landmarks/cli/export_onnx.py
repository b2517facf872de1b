"""The ``export-onnx`` subcommand: a model to ONNX for deployment without this library (``docs/export.md``).

``export-onnx MODEL OUT.onnx`` writes ``OUT.onnx`` (one pass of the network), ``OUT.json`` (the sidecar: input,
outputs, framing) and ``OUT_framing.py`` (numpy-only framing around the graph) with
:func:`~contrastive_landmarks.export.export_onnx`; ``--check`` then runs the export in onnxruntime on two frames
(640x480 and 832x747) and prints how far its points are from ``detect``'s.
"""

from __future__ import annotations

import argparse

__all__ = ["add_export_onnx_parser"]


def _opset(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ONNX opset number, got {text!r}") from None
    if value < 12:
        raise argparse.ArgumentTypeError(f"the export needs opset 12 or later, got {value}")
    return value


def _run_export_onnx(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .common import UserError

    output = Path(args.output)
    if output.suffix != ".onnx":
        raise UserError(f"the output must be a .onnx file, got {output}")
    if not output.parent.is_dir():
        raise UserError(f"the folder {output.parent} for {output.name} does not exist")
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UserError('export-onnx needs the [onnx] extra: pip install "contrastive-landmarks[onnx]"') from None
    from ..export import DEFAULT_OPSET, compare_with_detect, export_onnx
    from ..pipeline import LandmarkModel

    model = LandmarkModel.from_pretrained(args.model)
    path = export_onnx(model, output, opset=args.opset or DEFAULT_OPSET, reference=not args.no_reference)
    written = [path, path.with_suffix(".json")] + (
        [] if args.no_reference else [path.with_name(f"{path.stem}_framing.py")]
    )
    print("wrote " + ", ".join(str(p) for p in written))
    if args.check:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UserError(
                '--check runs the export in onnxruntime: pip install "contrastive-landmarks[onnx]"'
            ) from None
        gap = compare_with_detect(model, path)
        print(
            f"checked on 640x480 and 832x747 frames: points within {gap['max_px']:.2g} px of detect "
            f"(mean {gap['mean_px']:.2g} px), scores within {gap['max_score']:.2g}"
        )
    return 0


def add_export_onnx_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``export-onnx``."""
    parser = subparsers.add_parser(
        "export-onnx",
        description="Export a model with a landmark regressor (fine-tuned, or built-in such as resnet18-faces) to "
        "ONNX: OUT.onnx is one pass of the network ([0, 1] RGB crops at the model's input size -> points and "
        "scores), OUT.json says how detect frames a frame (whole frame, then a crop around the points), and "
        "OUT_framing.py does that framing in numpy around onnxruntime. See docs/export.md.",
    )
    parser.add_argument("model", help="model directory, registry name or Hub repo id (LandmarkModel.from_pretrained)")
    parser.add_argument("output", help="the .onnx file to write; the .json sidecar and _framing.py go beside it")
    parser.add_argument("--opset", type=_opset, default=None, help="ONNX opset, 12 or later (default 17)")
    parser.add_argument(
        "--no-reference", action="store_true", help="do not write OUT_framing.py (the numpy framing) beside it"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="run the export in onnxruntime on two test frames and print its distance to detect's points",
    )
    parser.set_defaults(func=_run_export_onnx)
    return parser
