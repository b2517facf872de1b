"""One validation-only fit of the fine-tuning recipe, written as a JSON record: the sweep harness of issue 29.

Fits :func:`~contrastive_landmarks.train.finetune` on the *training* frames of a development project (the
library's seed-0 80/20 split; the test frames are never read), optionally after the footage step
(:func:`~contrastive_landmarks.train.footage.adapt_to_footage` on the project's own videos), and writes one record
to ``--out``: command, commit, torch version, machine, seed, options, the validation curve, the validation error
beside the training frames' mean pose, and the minutes of each part. Run several single-thread fits at once::

    python benchmarks/finetune_sweep.py lp --footage-steps 150 --seed 1 --threads 1 \
        --out benchmarks/results/sweep/lp-faces-footage150-s1.json &
    python benchmarks/finetune_sweep.py lp --footage-steps 0 --num-labelled 10 --set augment.rotation=180 ...

With ``--holdout F`` (the few-label setting), a fixed fraction of the training frames (drawn with seed 0, the same
for every run) is set aside before anything else; the fit sees only the rest (``--num-labelled`` draws from it, and
the recipe holds out its own validation frames out of those, as a user's run would), and the record adds the
fitted model's error on the set-aside frames beside the mean pose of the frames it was given, scored on them too:
with 10 labelled frames the recipe's own 3 validation frames are too few to compare options on.
``--footage-dir`` keeps the footage step's output so that runs with the same footage options reuse it (run one
first, then the others).

``--pseudo-labels N`` (a prototype, measured before it goes into the library): after the fit, the model labels
frames spread over the project's videos, the ``N`` frames it is surest of (each point kept where its likelihood is
at least that point's median over those frames) join the labelled frames, and a second, shorter fit
(``--pseudo-steps``, from the first fit's backbone, nothing held out) runs on both; the record keeps the first fit's
set-aside error beside the second's.

``--set`` takes :class:`~contrastive_landmarks.train.FinetuneOptions` fields (``lr=3e-4``), ``framing.*`` /
``augment.*`` fields of its :class:`~contrastive_landmarks.framing.Framing` and
:class:`~contrastive_landmarks.train.keypoint_views.ViewAugment`, and ``footage.*`` fields of
:class:`~contrastive_landmarks.train.footage.FootageOptions`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from contrastive_landmarks import load_backbone
from contrastive_landmarks.data.base import KeypointSubset
from contrastive_landmarks.data.dlc import DLCProject, dlc_split
from contrastive_landmarks.framing import pose_in_frames
from contrastive_landmarks.metrics import mean_pixel_error
from contrastive_landmarks.train._loop import holdout_split
from contrastive_landmarks.train.finetuning import FinetuneOptions, finetune, load_frames
from contrastive_landmarks.train.footage import FootageOptions, adapt_to_footage, project_videos

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
PROJECTS = {"dlc": DATA / "dlc-reaching", "lp": DATA / "lp-mirror-mouse" / "CollectedData.csv"}


def _value(text: str, like):
    if isinstance(like, bool):
        return text.lower() in ("1", "true", "yes", "on")
    if like is None:
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return None if text == "None" else text
    return type(like)(text)


def _options(items: list[str]) -> tuple[FinetuneOptions, FootageOptions]:
    """``FinetuneOptions`` and ``FootageOptions`` with ``--set key=value`` applied (``augment.x``, ``framing.x``,
    ``footage.x`` address the nested dataclasses)."""
    base, footage = FinetuneOptions(), FootageOptions()
    top: dict = {}
    nested: dict[str, dict] = {"augment": {}, "framing": {}, "footage": {}}
    for item in items:
        key, text = item.split("=", 1)
        group, _, name = key.rpartition(".")
        if group:
            owner = footage if group == "footage" else getattr(base, group)
            nested[group][name] = _value(text, getattr(owner, name))
        else:
            top[key] = _value(text, getattr(base, key))
    for group in ("augment", "framing"):
        if nested[group]:
            top[group] = dataclasses.replace(getattr(base, group), **nested[group])
    return dataclasses.replace(base, **top), dataclasses.replace(footage, **nested["footage"])


def _machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": next(
            (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), ""
        )
        if os.path.exists("/proc/cpuinfo")
        else platform.processor(),
        "cpus": os.cpu_count(),
        "load_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        status = ["git", "status", "--porcelain", "contrastive_landmarks"]
        dirty = subprocess.run(status, capture_output=True, text=True)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class _Frames(list):
    """Sample dicts with the ``names`` and ``flip_pairs`` of the project they came from."""

    def __init__(self, samples, like) -> None:
        super().__init__(samples)
        self.names, self.flip_pairs = getattr(like, "names", None), getattr(like, "flip_pairs", None)


@torch.no_grad()
def _pseudo_labelled(model, videos, count: int, pool: int = 400) -> list[dict]:
    """The ``count`` frames out of ``pool`` spread over ``videos`` whose points ``model`` is surest of (mean
    likelihood), each point visible where its likelihood is at least its median over those frames."""
    from contrastive_landmarks.data.video import VideoFrames, video_info

    footage = VideoFrames(videos, every=max(1, sum(video_info(v).num_frames for v in videos) // pool))
    frames = [footage[i]["image"] for i in range(len(footage))]
    points, scores = zip(*(model.detect(frames[i : i + 8], return_scores=True) for i in range(0, len(frames), 8)))
    points, scores = torch.cat(points), torch.cat(scores)
    chosen = scores.mean(1).argsort(descending=True)[:count]
    visible = scores[chosen] >= scores[chosen].median(0).values
    return [{"image": frames[i], "keypoints": points[i], "visible": v} for i, v in zip(chosen.tolist(), visible)]


@torch.no_grad()
def _score_holdout(result, holdout) -> dict:
    """The fitted model on the set-aside frames, beside the mean pose of the frames the fit was given."""
    frames, keypoints, visible = load_frames(holdout)
    model = result.model
    pred = torch.cat([model.detect(frames[i : i + 8]) for i in range(0, len(frames), 8)])
    pose = torch.tensor(result.config["mean_pose"])
    baseline = pose_in_frames(pose, [tuple(f.shape[-2:]) for f in frames])
    per_point = (pred - keypoints).norm(dim=-1)
    return {
        "holdout_frames": len(frames),
        "holdout_error_px": mean_pixel_error(pred, keypoints, visible),
        "holdout_median_px": float(per_point[visible].median()),
        "holdout_mean_pose_px": mean_pixel_error(baseline, keypoints, visible),
        "holdout_part_error_px": [float(per_point[:, j][visible[:, j]].mean()) for j in range(keypoints.shape[1])],
    }


def _second_fit(result, train, options, args, holdout) -> dict:
    """The pseudo-label round: the first fit labels video frames, a second fit runs on them and the labelled ones."""
    from contrastive_landmarks.train.finetuning import _labelled_subset

    started = time.perf_counter()
    frames, keypoints, visible = load_frames(train)
    if options.num_labelled is not None:
        frames, keypoints, visible = _labelled_subset(frames, keypoints, visible, options.num_labelled, options.seed)
    labelled = [{"image": f, "keypoints": k, "visible": v} for f, k, v in zip(frames, keypoints, visible)]
    pseudo = _pseudo_labelled(result.model, project_videos(PROJECTS[args.project]), args.pseudo_labels)
    second = dataclasses.replace(options, num_labelled=None, val_fraction=0.0, steps=args.pseudo_steps)
    refit = finetune(result.model.hypercolumn.backbone, _Frames(labelled + pseudo, train), options=second)
    out = {
        "pseudo_frames": len(pseudo),
        "pseudo_points_kept": float(torch.stack([p["visible"] for p in pseudo]).float().mean()),
        "pseudo_minutes": (time.perf_counter() - started) / 60,
        "pseudo_curve": refit.history,
    }
    if holdout is not None:  # scored beside the mean pose of the labelled frames (the first fit's), not of these
        out.update({k: v for k, v in _score_holdout(refit, holdout).items() if k != "holdout_mean_pose_px"})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", choices=sorted(PROJECTS))
    parser.add_argument("--backbone", default="resnet18-faces", help="what load_backbone reads (resnet18: random)")
    parser.add_argument("--footage-steps", type=int, default=0, help="MoCo steps on the project's videos (0: none)")
    parser.add_argument("--num-labelled", type=int, default=None, help="a seeded subset of the training frames")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fit, the subset and the footage step")
    parser.add_argument("--holdout", type=float, default=0.0, help="training frames set aside to score on")
    parser.add_argument("--footage-dir", default=None, help="where the footage step writes (reused when it is done)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], help="option overrides, key=value")
    parser.add_argument("--pseudo-labels", type=int, default=0, help="video frames the fit labels for a second fit")
    parser.add_argument("--pseudo-steps", type=int, default=750, help="steps of that second fit")
    parser.add_argument("--out", required=True, help="JSON record to write")
    parser.add_argument("--keep", default=None, help="save the fitted model directory here (to study it later)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options, footage = _options(args.set)
    footage = dataclasses.replace(footage, steps=args.footage_steps, seed=args.seed)
    options = dataclasses.replace(options, seed=args.seed, num_labelled=args.num_labelled, progress=False)
    project = DLCProject(PROJECTS[args.project])
    train = KeypointSubset(project, dlc_split(project, "train"))
    holdout = None
    if args.holdout:
        kept, aside = holdout_split(len(train), args.holdout, 0)
        train, holdout = KeypointSubset(project, [train.indices[i] for i in kept]), [train.indices[i] for i in aside]
    torch.manual_seed(args.seed)  # a random init, when the backbone has no weights
    backbone = load_backbone(args.backbone)
    record: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": _commit(),
        "torch": torch.__version__,
        "machine": _machine(),
        "project": args.project,
        "backbone": args.backbone,
        "seed": args.seed,
        "set": args.set,
        "options": options.settings,
        "footage": dataclasses.asdict(footage),
        "split": "seed-0 dlc_split train frames; validation held out of them; test frames not read",
        "holdout": args.holdout,
        "pseudo_labels": args.pseudo_labels,
    }
    started = time.perf_counter()
    if footage.steps and args.footage_dir:
        backbone = adapt_to_footage(backbone, project_videos(PROJECTS[args.project]), args.footage_dir, footage)
    elif footage.steps:
        with tempfile.TemporaryDirectory() as folder:
            backbone = adapt_to_footage(backbone, project_videos(PROJECTS[args.project]), folder, footage)
    record["footage_minutes"] = (time.perf_counter() - started) / 60
    fitted = time.perf_counter()
    result = finetune(backbone, train, options=options)
    record.update(
        {
            "finetune_minutes": (time.perf_counter() - fitted) / 60,
            "minutes": (time.perf_counter() - started) / 60,
            "val_error_px": result.score,
            "mean_pose_px": result.baseline,
            "best_step": result.best_step,
            "train_frames": result.config["train_frames"],
            "val_frames": result.config["val_frames"],
            "framing": result.config["framing"],  # as decided (the options may leave its stages to the poses)
            "decode_window": result.config.get("decode_window"),
            "curve": result.history,
            "warnings": result.warnings,
            "load_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            # CPU time of this process: comparable between runs on a shared machine, unlike wall minutes
            "cpu_minutes": (lambda t: (t.ru_utime + t.ru_stime) / 60)(resource.getrusage(resource.RUSAGE_SELF)),
        }
    )
    if args.keep:
        result.model.save_pretrained(args.keep)
    if holdout is not None:
        record.update(_score_holdout(result, KeypointSubset(project, holdout)))
    if args.pseudo_labels:  # the first fit's scores stay, as first_*; the second's take their names
        first = {f"first_{k}": v for k, v in record.items() if k.startswith("holdout_") and k != "holdout_frames"}
        record.update(_second_fit(result, train, options, args, holdout and KeypointSubset(project, holdout)))
        record.update(first)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    keys = ("val_error_px", "mean_pose_px", "holdout_error_px", "holdout_mean_pose_px", "best_step", "minutes")
    print(json.dumps({k: record[k] for k in keys if k in record}), flush=True)


if __name__ == "__main__":
    main()
