"""Tracked vs every-frame video prediction, end to end, in one run (issue 30, item 1).

Times ``contrastive-landmarks predict MODEL VIDEO`` as a user runs it (model loading, decoding, prediction, the
CSV written) for each variant, alternating them ``--repeats`` times so that the load of a shared machine falls on
all alike, and reports the median frames/s of each, the speed-up of tracking over today's every-frame path, and how
far the tracked points are from the every-frame points (mean, median, 95th percentile and max px over every frame
and landmark). Variants:

- ``tracked``: the default (``contrastive_landmarks.tracking``, ``--precision auto``);
- ``every-frame``: ``--every-frame --precision fp32``, the two-pass ``detect`` on every frame, as before tracking;
- ``every-frame-auto``: ``--every-frame`` with the default precision, to separate the gain of bfloat16 from that of
  tracking, and to show how far bfloat16 alone moves the every-frame points.

Also recorded, on the first ``--sensitivity-frames`` frames: how far the every-frame points move when the
second-pass crop is moved by one pixel or made 1 % larger, or placed from the previous frame's crop; no tracker
that places the crop otherwise than the first pass does can agree with the every-frame points better than that.
And each variant's mean frame-to-frame move of the points (jitter, on a 250 frames/s video mostly noise).

With ``--labels`` (a DeepLabCut labels file of the same rig), the accuracy question asked directly on its held-out
test frames (``dlc_split``, seed 0, the frames ``finetune`` did not train on): the error against the labels of the
every-frame two-pass points, and of one pass on the crop a tracker would place there (from the frame's own
two-pass points, as if the animal had not moved since the frame before), in float32 and in bfloat16.

Writes one JSON record under ``benchmarks/results/video/`` (machine, load average, command, commit, model).

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/bench_video.py --model /tmp/lpmodel \\
        --video ../shared/data/lp-mirror-mouse/videos/test_vid.mp4 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contrastive_landmarks import LandmarkModel  # noqa: E402
from contrastive_landmarks.cli import main  # noqa: E402
from contrastive_landmarks.data.dlc import DLCProject, dlc_split, read_dlc_labels  # noqa: E402
from contrastive_landmarks.data.video import read_video_frames, video_info  # noqa: E402
from contrastive_landmarks.device import cpu_has_bfloat16  # noqa: E402
from contrastive_landmarks.framing import frame_boxes  # noqa: E402
from contrastive_landmarks.tracking import inference_precision  # noqa: E402

VARIANTS = {
    "tracked": [],
    "every-frame": ["--every-frame", "--precision", "fp32"],
    "every-frame-auto": ["--every-frame"],
}


def machine() -> dict:
    """What ran it: CPU model and cores, torch, its threads, and whether the CPU computes bfloat16."""
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_bfloat16": cpu_has_bfloat16(),
        "platform": platform.platform(),
    }


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_predict(model: str, video: Path, output: Path, extra: list[str], batch_size: int) -> tuple[float, str]:
    """Seconds of one ``predict`` call and its stderr."""
    args = ["predict", model, str(video), "--output", str(output), "--no-progress", "--batch-size", str(batch_size)]
    err = io.StringIO()
    began = time.perf_counter()
    with contextlib.redirect_stderr(err):
        code = main([*args, *extra])
    seconds = time.perf_counter() - began
    if code != 0:
        raise SystemExit(f"predict failed ({code}): {err.getvalue().strip()}")
    return seconds, err.getvalue()


def distances(a: np.ndarray, b: np.ndarray) -> dict:
    """Per frame and landmark px distances ``(T, N)`` between two ``(T, N, 2)`` tracks, summarised."""
    d = np.linalg.norm(a - b, axis=-1)
    d = d[np.isfinite(d)]
    return {
        "mean_px": float(d.mean()),
        "median_px": float(np.median(d)),
        "p95_px": float(np.percentile(d, 95)),
        "max_px": float(d.max()),
        "share_within_1px": float((d <= 1).mean()),
    }


def jitter(track: np.ndarray) -> float:
    """Mean frame-to-frame move of the points, px."""
    return float(np.nanmean(np.linalg.norm(track[1:] - track[:-1], axis=-1)))


@torch.no_grad()
def sensitivity(model_dir: str, video: Path, frames: int) -> dict:
    """How far the every-frame (float32) points move when its (last) crop moves: the floor of any tracker's
    agreement with them (a one-stage model's crop is the letterboxed frame)."""
    model = LandmarkModel.from_pretrained(model_dir)
    images = torch.stack([image for _, image in read_video_frames(video, max_frames=frames)])
    sizes = [tuple(images.shape[-2:])] * len(images)
    boxes = frame_boxes(sizes)
    if _two_stage(model):
        boxes = model.boxes_around(model.detect_in_boxes(images, boxes), sizes)
    reference = model.detect_in_boxes(images, boxes).numpy()
    moved = {
        "crop_moved_1px_x": boxes + torch.tensor([1.0, 0, 0, 0]),
        "crop_moved_1px_y": boxes + torch.tensor([0, 1.0, 0, 0]),
        "crop_1pct_larger": boxes * torch.tensor([1, 1, 1.01, 1]),
        "previous_frames_crop": torch.cat([boxes[:1], boxes[:-1]]),
    }
    out = {name: distances(model.detect_in_boxes(images, b).numpy(), reference) for name, b in moved.items()}
    step = (boxes[1:, :3] - boxes[:-1, :3]).abs().mean(0).tolist()
    out["every_frame_crop_frame_to_frame_change_px"] = dict(zip(("cx", "cy", "side"), step))
    out["frames"] = len(images)
    return out


@torch.no_grad()
def labelled_accuracy(model_dir: str, labels: Path) -> dict:
    """Mean px error on the labels' test frames: every-frame two-pass vs the crop a tracker places, fp32 and auto."""
    model = LandmarkModel.from_pretrained(model_dir)
    dataset = DLCProject(labels)
    samples = [dataset[i] for i in dlc_split(dataset, "test")]
    out: dict = {"labels": str(labels), "test_frames": len(samples)}
    for precision in ("fp32", "auto"):
        errors: dict[str, list[float]] = {"every_frame": [], "tracker_crop": []}
        with inference_precision(torch.device("cpu"), precision):
            for sample in samples:
                image, truth, visible = sample["image"][None], sample["keypoints"], sample["visible"]
                sizes = [tuple(image.shape[-2:])]
                every = model.detect(image)
                if _two_stage(model):
                    tracker = model.detect_in_boxes(image, model.boxes_around(every.float(), sizes))
                else:  # one pass on the whole frame: what a video gets too
                    tracker = every
                for name, points in (("every_frame", every), ("tracker_crop", tracker)):
                    errors[name] += (points[0].float() - truth).norm(dim=-1)[visible].tolist()
        out[precision] = {name: float(np.mean(e)) for name, e in errors.items()}
    return out


def _two_stage(model: LandmarkModel) -> bool:
    return model.framing is not None and model.framing.stages == 2


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model directory (finetune's output)")
    parser.add_argument("--video", type=Path, default=ROOT.parent / "shared/data/lp-mirror-mouse/videos/test_vid.mp4")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each variant (median reported)")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--sensitivity-frames", type=int, default=100, help="0: skip the crop-sensitivity check")
    parser.add_argument("--labels", type=Path, default=None, help="labels of the rig (CollectedData.csv): accuracy")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/video")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = video_info(args.video)
    load_before = os.getloadavg()
    seconds: dict[str, list[float]] = {v: [] for v in args.variants}
    tracks: dict[str, np.ndarray] = {}
    notes: dict[str, str] = {}
    one_stage = not _two_stage(LandmarkModel.from_pretrained(args.model))
    untracked = "one pass a frame (one-stage model)" if one_stage else "every frame two-pass"
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for variant in args.variants:
                output = Path(scratch) / f"{variant}.csv"
                took, err = run_predict(args.model, args.video, output, VARIANTS[variant], args.batch_size)
                seconds[variant].append(took)
                print(f"repeat {repeat} {variant}: {info.num_frames / took:.1f} frames/s", file=sys.stderr, flush=True)
                if repeat == 0:
                    tracks[variant] = read_dlc_labels(output)[2]
                    found = re.search(r"tracked, (\d+) frames on the whole frame", err)
                    notes[variant] = f"{found.group(1)} two-pass frames" if found else untracked
    load_after = os.getloadavg()
    results = {}
    for variant in args.variants:
        median = statistics.median(seconds[variant])
        results[variant] = {
            "arguments": VARIANTS[variant],
            "seconds": seconds[variant],
            "median_seconds": median,
            "frames_per_second": info.num_frames / median,
            "jitter_px": jitter(tracks[variant]),
            "two_pass": notes[variant],
        }
    record = {
        "what": "tracked vs every-frame predict on one video, end to end (issue 30, item 1)",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": commit(),
        "machine": machine(),
        "load_average_1_5_15": {"before": load_before, "after": load_after},
        "model": {
            "path": args.model,
            "config_sha256": hashlib.sha256((Path(args.model) / "config.json").read_bytes()).hexdigest()[:16],
            "finetune": _finetune_summary(Path(args.model)),
        },
        "video": {
            "path": str(args.video),
            "frames": info.num_frames,
            "size": [info.width, info.height],
            "fps": info.fps,
        },
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "variants": results,
    }
    if "tracked" in tracks and "every-frame" in tracks:
        record["tracked_vs_every_frame"] = distances(tracks["tracked"], tracks["every-frame"])
        record["speedup_tracked_over_every_frame"] = (
            results["tracked"]["frames_per_second"] / results["every-frame"]["frames_per_second"]
        )
    if "every-frame-auto" in tracks and "every-frame" in tracks:
        record["every_frame_auto_vs_fp32"] = distances(tracks["every-frame-auto"], tracks["every-frame"])
    if "tracked" in tracks and "every-frame-auto" in tracks:
        record["tracked_vs_every_frame_auto"] = distances(tracks["tracked"], tracks["every-frame-auto"])
    if args.sensitivity_frames:
        record["every_frame_crop_sensitivity"] = sensitivity(args.model, args.video, args.sensitivity_frames)
    if args.labels is not None:
        record["labelled_test_frames_error_px"] = labelled_accuracy(args.model, args.labels)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"{args.video.stem}-{Path(args.model).name}-{stamp}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k not in ("machine",)}, indent=2))
    print(f"wrote {path}", file=sys.stderr)


def _finetune_summary(directory: Path) -> dict:
    """Steps, footage steps and validation error of the model, from its ``finetune.json`` when there is one."""
    path = directory / "finetune.json"
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    command = report.get("command", {})
    keys = ("steps", "footage_steps", "image_size", "stages", "dataset", "path")
    summary = {k: command.get(k) for k in keys}
    summary.update({k: report.get(k) for k in ("score_px", "mean_pose_px")})
    return summary


if __name__ == "__main__":
    main_()
