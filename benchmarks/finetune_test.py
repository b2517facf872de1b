"""The default path as a user runs it, scored once on the test frames: the reported numbers of issue 29.

Runs ``contrastive-landmarks finetune`` (every default unless ``--`` passes more options) on a development project's
seed-0 training frames in a fresh process, then ``evaluate`` on its test frames once, then the independent check
``../shared/tools/dlc_test_error.py`` on ``predict --format dlc`` output of the same frames (it shares no code with
the library), and writes one JSON record: command, commit, torch, machine, minutes, test error beside the training
mean pose, and the cross-check's lines::

    python benchmarks/finetune_test.py lp --seed 0 --out benchmarks/results/test/lp-default-s0.json
    python benchmarks/finetune_test.py lp --seed 1 --out ... -- --num-labelled 10
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from finetune_sweep import DATA, PROJECTS, _commit, _machine

CLI = [sys.executable, "-c", "import sys; from contrastive_landmarks.cli import main; sys.exit(main())"]
CHECK = DATA / ".." / "tools" / "dlc_test_error.py"


def _run(args: list[str], env: dict) -> str:
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{' '.join(args[3:])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", choices=sorted(PROJECTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--keep", default=None, help="copy the fitted model directory here (for plots and reuse)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    args.extra = argv[cut + 1 :]  # more finetune options, after --
    project = PROJECTS[args.project]
    data = ["--dataset", "dlc", "--root" if project.is_dir() else "--path", str(project)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    threads = ["--threads", str(args.threads)] if args.threads else []
    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / "model"
        command = ["finetune", *data, "--output", str(model), "--seed", str(args.seed), "--no-progress", *threads]
        command += args.extra
        started = time.perf_counter()
        _run([*CLI, *command], env)
        minutes = (time.perf_counter() - started) / 60
        report = json.loads((model / "finetune.json").read_text())
        metrics_path = Path(folder) / "test.json"
        _run([*CLI, "evaluate", str(model), *data, "--split", "test", "--output", str(metrics_path)], env)
        metrics = json.loads(metrics_path.read_text())
        check = _cross_check(model, project, Path(folder), env)
        if args.keep:
            shutil.copytree(model, args.keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.pt", "footage"))
    record = {
        "command": "contrastive-landmarks " + " ".join(command),
        "harness": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": _commit(),
        "machine": _machine(),
        "project": args.project,
        "seed": args.seed,
        "minutes": minutes,
        # CPU time of the finetune, evaluate and predict processes: comparable on a shared machine
        "cpu_minutes": (lambda t: (t.ru_utime + t.ru_stime) / 60)(resource.getrusage(resource.RUSAGE_CHILDREN)),
        "footage": report.get("footage"),
        "val_error_px": report["score_px"],
        "best_step": report["best_step"],
        "train_frames": report["config"]["train_frames"],
        "val_frames": report["config"]["val_frames"],
        "framing": report["config"]["framing"],
        "image_size": report["config"]["image_size"],
        "decode_window": report["config"].get("decode_window"),
        "relations": report["config"].get("relations"),
        "test": metrics,
        "cross_check": check,
        "curve": report["history"],
        "warnings": report["warnings"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(
        json.dumps(
            {"test_mean_px": metrics.get("mean_px"), "mean_pose_px": metrics.get("mean_pose"), "minutes": minutes}
        )
    )


def _cross_check(model: Path, project: Path, folder: Path, env: dict) -> list[str]:
    """``dlc_test_error.py``'s lines for the model's ``predict --format dlc`` output on the test frames."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from contrastive_landmarks.data.dlc import DLCProject, dlc_split

    labels = DLCProject(project)
    frames = [labels.image_path(i) for i in dlc_split(labels, "test")]
    predictions = folder / "test_predictions.csv"
    _run([*CLI, "predict", str(model), *map(str, frames), "--format", "dlc", "--output", str(predictions)], env)
    files = labels.files if len(labels.files) == 1 else None
    if files is None:
        return [f"skipped: {len(labels.files)} label files"]
    done = subprocess.run([sys.executable, str(CHECK), str(files[0]), str(predictions)], capture_output=True, text=True)
    return (done.stdout + done.stderr).strip().splitlines()


if __name__ == "__main__":
    main()
