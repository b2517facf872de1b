"""``evaluate keypoints MODEL`` (also ``evaluate MODEL``): a keypoint model on a user's own test frames."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import UserError, add_frame_data_arguments, fail, setup
from .reporting import write_json

__all__ = ["add_keypoints_parser"]

PROTOCOLS = ("regression", "matching", "keypoints")


def shorthand(argv: list[str]) -> list[str]:
    """``evaluate MODEL ...`` -> ``evaluate keypoints MODEL ...`` (a model where a protocol would be)."""
    if "evaluate" in argv:
        at = argv.index("evaluate") + 1
        if at < len(argv) and argv[at] not in PROTOCOLS and not argv[at].startswith("-"):
            return [*argv[:at], "keypoints", *argv[at:]]
    return argv


def _mean_pose(model_dir: str):
    import torch

    report = Path(model_dir) / "finetune.json"
    if not report.is_file():
        return None
    pose = json.loads(report.read_text()).get("config", {}).get("mean_pose")
    return None if pose is None else torch.tensor(pose, dtype=torch.float32)


def _run_keypoints(args: argparse.Namespace) -> int:
    from ..data.registry import frames_by_name
    from ..evaluation.keypoints import evaluate_keypoints
    from ..pipeline import LandmarkModel

    setup(args)
    try:
        model = LandmarkModel.from_pretrained(args.model)
        if model.regressor is None:
            raise UserError(f"{args.model} has no keypoint head (fit one with finetune or fit-regressor)")
        split = args.split or ("test" if args.dataset == "dlc" else "all")
        data = frames_by_name(args.dataset, args.root, split, path=args.path)
        metrics, arrays = evaluate_keypoints(model, data, mean_pose=_mean_pose(args.model), p_cutoff=args.p_cutoff)
    except (UserError, ValueError, FileNotFoundError) as error:
        return fail("evaluate", error)
    metrics = {
        "model": str(args.model),
        "dataset": args.dataset,
        "data": args.path or args.root,
        "split": split,
        **metrics,
    }
    baseline = metrics.get("mean_pose", {}).get("mean_px")
    line = f"{split}: mean {metrics['mean_px']:.2f} px, median {metrics['median_px']:.2f} px"
    line += f" over {metrics['points']} points"
    print(line + (f" (training mean pose: {baseline:.2f} px)" if baseline is not None else ""))
    if args.output:
        out = Path(args.output)
        write_json(out, metrics)
        print(f"wrote {out}")
        if not args.no_plot:
            from ..viz import plot_keypoints

            picture = out.with_suffix(".png")
            count = min(args.plot_frames, len(arrays["frames"]))
            plot_keypoints(
                arrays["frames"][:count],
                arrays["pred"][:count],
                arrays["truth"][:count],
                arrays["visible"][:count],
                names=model.landmark_names,
                path=picture,
            )
            print(f"wrote {picture}")
    else:
        print(json.dumps(metrics, indent=1))
    return 0


def add_keypoints_parser(sub) -> argparse.ArgumentParser:
    """Register ``evaluate keypoints`` on the ``evaluate`` protocols."""

    parser = sub.add_parser(
        "keypoints",
        help="a keypoint model on your own test frames (also: evaluate MODEL ...)",
        description="Mean / median error in the frames' own pixels, per body part, PCK at 5 and 10 px and at "
        "0.05 of the animal's box diagonal, DeepLabCut's p-cutoff view, the likelihood's ROC AUC for errors "
        "above 10 px, beside the training frames' mean pose; JSON plus a picture of test frames.",
    )
    parser.add_argument("model", help="a model directory (finetune / fit-regressor output) or a registry name")
    add_frame_data_arguments(
        parser,
        split_help="dlc: test (default), train or all; csv/coco: all",
        path_help="labels file: CollectedData CSV, keypoint CSV or COCO JSON (your test set)",
    )
    parser.add_argument("--p-cutoff", type=float, default=0.6, help="likelihood cut-off (DeepLabCut's 0.6)")
    parser.add_argument("--output", help="write the metrics JSON here (and a picture beside it, .png)")
    parser.add_argument("--plot-frames", type=int, default=8, help="test frames in the picture (default 8)")
    parser.add_argument("--no-plot", action="store_true", help="no picture")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.set_defaults(func=_run_keypoints)
    return parser
