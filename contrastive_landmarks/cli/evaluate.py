"""``evaluate`` and ``plot`` subcommands of the ``contrastive-landmarks`` CLI.

:func:`add_evaluate_parser` registers ``evaluate {regression,matching}`` and :func:`add_plot_parser`
registers ``plot {landmarks,matches,pca,nmf,fewshot}`` on an ``argparse`` subparsers object; each
leaf parser sets ``func`` to a handler taking the parsed arguments (the main CLI calls it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from ..data.registry import by_name
from .common import (
    UserError,
    add_data_arguments,
    add_dataset_arguments,
    add_model_arguments,
    check_landmark_names,
    describe_backbone,
    fail,
    load_hypercolumn,
    resolve_device_option,
    setup,
    split_train_val,
)

__all__ = ["add_evaluate_parser", "add_plot_parser"]

logger = logging.getLogger(__name__)


def _report(results: dict, args, label: str) -> int:
    from ..evaluation import results_table, save_results

    print(results_table({label: results}))
    if args.output:
        save_results(results, args.output)
        print(f"wrote {args.output}")
    return 0


# -- evaluate --------------------------------------------------------------------------------------------------
def _run_regression(args) -> int:
    from ..data.base import KeypointSubset
    from ..evaluation import evaluate_regression

    setup(args)
    try:
        resolve_device_option(args)
        features = load_hypercolumn(args, args.size)
        if args.root is None and args.path is None:
            raise UserError("give the data with --root DIR (or --path FILE for csv/coco)")
        common = {"image_size": args.image_size, "path": args.path}
        train = by_name(
            args.dataset,
            args.root,
            "train",
            face_crop=args.face_crop,
            jitter=args.face_crop,
            limit=args.limit_train,
            **common,
        )
        clean = (
            by_name(args.dataset, args.root, "train", face_crop=args.face_crop, limit=args.limit_train, **common)
            if args.face_crop
            else train
        )
        if args.val_split is not None:
            train_part, val = list(range(len(train))), by_name(args.dataset, args.root, args.val_split, **common)
        else:
            train_part, val_part = split_train_val(len(train), args.val_fraction, args.split_seed, args.max_val)
            val = KeypointSubset(clean, val_part) if val_part else None
        test = by_name(args.dataset, args.root, args.test_split, limit=args.limit_test, **common)
        if args.test_split == "train" and args.val_split is None:
            raise UserError("--test-split train would test on the training images; name a held-out split")
        fit_options = {
            "steps": args.steps,
            "heatmaps_per_landmark": args.heatmaps,
            "init": args.init,
            "weight_decay": args.weight_decay,
            "batch_size": args.batch_size,
        }
        results = evaluate_regression(
            features,
            KeypointSubset(train, train_part),
            test,
            val_set=val,
            num_labelled=args.num_labelled,
            seeds=args.seeds,
            stages=args.stages,
            lrs=args.lrs,
            metric=args.metric,
            eye_indices=args.eye_indices,
            device=args.device,
            progress=(lambda m: print(m, file=sys.stderr)) if args.verbose_progress else None,
            **fit_options,
        )
    except (UserError, ValueError, FileNotFoundError, TypeError) as error:
        return fail("evaluate regression", error)
    results["config"]["dataset"] = {
        "name": args.dataset,
        "root": args.root,
        "face_crop": args.face_crop,
        "limit_train": args.limit_train,
        "limit_test": args.limit_test,
        "val_split": args.val_split,
        "test_split": args.test_split,
        "backbone": args.backbone,
        "weights": args.weights,
        "image_size": args.image_size,
    }
    for message in results["warnings"]:
        print(f"contrastive-landmarks evaluate regression: warning: {message}", file=sys.stderr)
    return _report(results, args, describe_backbone(args))


def _run_matching(args) -> int:
    setup(args)
    from ..data.transforms import paper_resize
    from ..evaluation import evaluate_matching

    model = load_hypercolumn(args, None)
    if args.crop is None:
        args.crop = (paper_resize(args.image_size) - args.image_size) // 2
    resize = args.image_size + 2 * args.crop
    dataset = by_name(
        args.dataset, args.root, args.split, image_size=args.image_size, resize=resize, path=args.path, limit=args.limit
    )
    results = evaluate_matching(
        model,
        dataset,
        num_images=args.limit,
        seed=args.seed,
        crop=args.crop,
        similarity=args.similarity,
        frame=args.frame,
        batch_size=args.batch_size,
    )
    results["config"]["dataset"] = {
        "name": args.dataset,
        "root": args.root,
        "split": args.split,
        "backbone": args.backbone,
        "weights": args.weights,
        "resize": resize,
    }
    return _report(results, args, describe_backbone(args))


def add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``evaluate regression`` and ``evaluate matching``."""
    parser = subparsers.add_parser("evaluate", description="Landmark regression (Tables 2-5) and matching (Table 1).")
    sub = parser.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)

    reg = sub.add_parser(
        "regression",
        help="linear landmark regression on frozen features",
        description="Fit the linear regressor (the library's recipe, fit-regressor's defaults) on "
        "frozen hypercolumn features of the training images, choose on a validation split, report "
        "the test error once per seed beside the training set's mean shape on the same images.",
    )
    add_model_arguments(reg)
    add_dataset_arguments(reg)
    reg.add_argument(
        "--val-split",
        default=None,
        help="a validation split of the dataset (aflw_in: val); default: carved out of train",
    )
    reg.add_argument("--test-split", default="test", help="split evaluated once at the end (default test)")
    reg.add_argument(
        "--image-size", type=int, default=None, help="network input size (default: the backbone's own, else 96)"
    )
    reg.add_argument(
        "--face-crop", action="store_true", help="mtfl: cut training faces at the test framing, with jitter spanning it"
    )
    reg.add_argument("--limit-train", type=int, default=None, help="use only the first N training images")
    reg.add_argument("--limit-test", type=int, default=None, help="use only the first N test images")
    reg.add_argument("--num-labelled", type=int, default=None, help="few-shot: labelled training images per seed")
    reg.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (mean ± std over them)")
    reg.add_argument("--seed", type=int, default=0, help="seed of a random-init backbone (default 0)")
    reg.add_argument("--val-fraction", type=float, default=0.1, help="validation share of train (default 0.1)")
    reg.add_argument("--max-val", type=int, default=1000, help="at most this many validation images")
    reg.add_argument("--split-seed", type=int, default=0, help="seed of the train/validation split (default 0)")
    reg.add_argument(
        "--stages",
        nargs="+",
        default=None,
        help="stages used (e.g. conv4_x for a single layer); default the whole hypercolumn",
    )
    reg.add_argument(
        "--heatmaps",
        type=int,
        default=None,
        help="intermediate heatmaps K per landmark (default 10, fewer for many landmarks: 2 for 68)",
    )
    reg.add_argument("--init", choices=("soft", "paper"), default="soft", help="regressor start (default soft)")
    reg.add_argument("--size", type=int, default=None, help="hypercolumn grid (default: half the input size)")
    reg.add_argument("--steps", type=int, default=2000, help="optimiser steps (default 2000)")
    reg.add_argument(
        "--lrs",
        type=float,
        nargs="+",
        default=None,
        help="learning rates tried; the best on validation is kept (default: fit-regressor's 1e-2)",
    )
    reg.add_argument("--weight-decay", type=float, default=1e-4, help="Adam weight decay (default 1e-4)")
    reg.add_argument("--batch-size", type=int, default=32, help="regressor batch size (default 32)")
    reg.add_argument(
        "--metric",
        choices=("auto", "iod", "pixel"),
        default="auto",
        help="iod (where the dataset names eyes; auto), or mean pixel error",
    )
    reg.add_argument("--eye-indices", type=int, nargs=2, default=None, help="override the dataset's eye indices")
    reg.add_argument("--output", default=None, help="write the results JSON here")
    reg.add_argument("--verbose-progress", action="store_true", help="print per-seed validation scores")
    reg.set_defaults(func=_run_regression)

    mat = sub.add_parser(
        "matching",
        help="landmark matching on TPS-warped pairs (Table 1)",
        description="Match each image's landmarks into a TPS-warped copy (same identity) and into "
        "the next image (different identity); mean error in the 70-pixel frame.",
    )
    add_model_arguments(mat, device=False)
    add_data_arguments(mat)
    mat.add_argument(
        "--crop",
        type=int,
        default=None,
        help="border cropped after warping (default the paper's 20 at 96 px, 136 -> 96, scaled with --image-size)",
    )
    mat.add_argument("--seed", type=int, default=1, help="seed of the warps (default 1)")
    mat.add_argument(
        "--similarity",
        choices=("stage_cosine", "cosine", "dot"),
        default=None,
        help="descriptor similarity (default stage_cosine for hypercolumns)",
    )
    mat.add_argument("--frame", type=float, default=70.0, help="errors are reported in this frame (default 70)")
    mat.add_argument("--batch-size", type=int, default=16, help="images per step (default 16)")
    mat.add_argument("--output", default=None, help="write the results JSON here")
    mat.set_defaults(func=_run_matching)

    from .evaluate_keypoints import add_keypoints_parser

    keypoints = add_keypoints_parser(sub)
    keypoints.set_defaults(func=_names_checked(keypoints.get_default("func")))
    return parser


# -- evaluate keypoints: the model's landmarks against the data's body parts -----------------------------------
def _check_keypoint_names(args: argparse.Namespace) -> str | None:
    """Compare the landmarks ``args.model`` predicts with the body parts the data labels (:func:`check_landmark_names`),
    reading only the model's ``config.json`` and the labels, before the model runs."""
    from ..data.registry import frames_by_name
    from ..hub import resolve_weights

    config = resolve_weights(args.model).config or {}
    head = config.get("regressor")
    if not head:  # no keypoint head: the command itself says so
        return None
    split = args.split or ("test" if args.dataset == "dlc" else "all")
    data = frames_by_name(args.dataset, args.root, split, path=args.path)
    names = list(getattr(data, "names", None) or ())
    if not names and not len(data):  # no frames: the command itself says so
        return None
    count = len(names) if names else int(data[0]["keypoints"].shape[0])
    return check_landmark_names(
        head.get("landmark_names") or (),
        int(head["num_landmarks"]),
        names,
        count,
        model=f"the model {args.model}",
        data=f"the data {args.path or args.root}",
    )


def _names_checked(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``run`` (the ``evaluate keypoints`` handler), after :func:`_check_keypoint_names`: a model of other body
    parts is refused naming them, names missing on either side are a warning and the evaluation goes on."""

    def checked(args: argparse.Namespace) -> int:
        try:
            warning = _check_keypoint_names(args)
        except (UserError, ValueError, FileNotFoundError) as error:
            return fail("evaluate", error)
        if warning:
            print(f"contrastive-landmarks evaluate: warning: {warning}", file=sys.stderr)
        return run(args)

    return checked


# -- plot --------------------------------------------------------------------------------------------------------
def _images(args, count: int):
    import torch

    dataset = by_name(args.dataset, args.root, args.split, image_size=args.image_size or 96, path=args.path)
    picks = [dataset[i] for i in range(args.start, min(args.start + count, len(dataset)))]
    return picks, torch.stack([p["image"] for p in picks])


def _plot_landmarks(args) -> int:
    from .. import viz

    samples, images = _images(args, args.num)
    import torch

    target = torch.stack([s["keypoints"] for s in samples])
    visible = torch.stack([s["visible"] for s in samples])
    viz.plot_landmarks(images, None, target, visible, ncols=args.ncols, path=args.output)
    print(f"wrote {args.output}")
    return 0


def _plot_matches(args) -> int:
    setup(args)

    from .. import match, viz

    model = load_hypercolumn(args, None)
    dataset = by_name(args.dataset, args.root, args.split, image_size=args.image_size, path=args.path)
    a, b = dataset[args.pair[0]], dataset[args.pair[1]]
    norm = model.backbone.normalize
    found = match(model, norm(a["image"][None]), a["keypoints"][None], norm(b["image"][None]))
    viz.plot_matches(a["image"], a["keypoints"], b["image"], found.points[0], target_b=b["keypoints"], path=args.output)
    print(f"wrote {args.output}")
    return 0


def _features(args, model, images):
    import torch

    with torch.no_grad():
        return model(model.backbone.normalize(images))


def _plot_pca(args) -> int:
    setup(args)
    from .. import viz

    model = load_hypercolumn(args, args.grid)
    _, images = _images(args, args.num)
    viz.plot_pca(images, _features(args, model, images), ncols=args.ncols, path=args.output)
    print(f"wrote {args.output}")
    return 0


def _plot_nmf(args) -> int:
    setup(args)
    from .. import viz

    model = load_hypercolumn(args, args.grid)
    _, images = _images(args, args.num)
    viz.plot_nmf_parts(images, _features(args, model, images), args.parts, ncols=args.ncols, path=args.output)
    print(f"wrote {args.output}")
    return 0


def _plot_fewshot(args) -> int:
    from .. import viz

    curves: dict[str, dict[int, list[float]]] = {}
    metric = None
    for spec in args.results:
        label, _, file = spec.rpartition("=")
        result = json.loads(Path(file).read_text())
        config = result["config"]
        n = config["num_labelled"] if config.get("num_labelled") is not None else config["train_images"]
        curves.setdefault(label or Path(file).stem, {}).setdefault(int(n), []).extend(result["test"]["per_seed"])
        metric = result.get("metric", metric)
    viz.plot_fewshot(curves, metric=metric or "error", title=args.title, path=args.output)
    print(f"wrote {args.output}")
    return 0


def add_plot_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``plot landmarks|matches|pca|nmf|fewshot``."""
    parser = subparsers.add_parser(
        "plot", description="Landmarks, matches, PCA and NMF visualisations, few-shot curves."
    )
    sub = parser.add_subparsers(dest="plot", metavar="PLOT", required=True)

    def image_plot(name: str, help_text: str, handler, *, model: bool = True, count: int = 8):
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_data_arguments(p)
        if model:
            add_model_arguments(p, device=False)
        p.add_argument("--start", type=int, default=0, help="index of the first image (default 0)")
        p.add_argument("--num", type=int, default=count, help=f"number of images (default {count})")
        p.add_argument("--ncols", type=int, default=4, help="images per row (default 4)")
        p.add_argument("--output", required=True, help="PNG file to write")
        p.set_defaults(func=handler)
        return p

    image_plot("landmarks", "annotated landmarks on a grid of images", _plot_landmarks, model=False)
    matches = sub.add_parser("matches", help="nearest-neighbour matches of one image's landmarks in another")
    add_data_arguments(matches)
    add_model_arguments(matches, device=False)
    matches.add_argument("--pair", type=int, nargs=2, default=[0, 1], help="indices of the two images (default 0 1)")
    matches.add_argument("--output", required=True, help="PNG file to write")
    matches.set_defaults(func=_plot_matches)
    pca = image_plot("pca", "PCA of the hypercolumn mapped to RGB", _plot_pca)
    pca.add_argument("--grid", type=int, default=48, help="hypercolumn grid (default 48)")
    nmf = image_plot("nmf", "NMF parts of the hypercolumn overlaid on the images (paper Fig. 5)", _plot_nmf)
    nmf.add_argument("--grid", type=int, default=48, help="hypercolumn grid (default 48)")
    nmf.add_argument("--parts", type=int, default=8, help="number of NMF parts (default 8)")
    few = sub.add_parser("fewshot", help="error against the number of labelled images, from result JSONs")
    few.add_argument("results", nargs="+", help="LABEL=results.json files from `evaluate regression`")
    few.add_argument("--title", default=None, help="plot title")
    few.add_argument("--output", required=True, help="PNG file to write")
    few.set_defaults(func=_plot_fewshot)
    return parser
