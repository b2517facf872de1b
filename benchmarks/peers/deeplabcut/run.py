"""DeepLabCut 3 (PyTorch engine, its default ``resnet_50``) on exactly our train / test split, on the CPU.

Runs inside this folder's own venv (``install.sh``), never the library's: DeepLabCut is no dependency of
contrastive_landmarks. The library's venv (``--cl-python``) is called once, in a subprocess, to print our split
(``dlc_split(DLCProject(path), "train" / "test")``, seed 0, 20 % test frames) as JSON; nothing of the split is
reimplemented here.

Steps: copy the labelled frames into a DeepLabCut project under ``--work`` (the data folder is only read), with
``config.yaml`` and ``labeled-data/<video>/CollectedData_<scorer>.h5`` (a DeepLabCut project's own .h5 is copied;
a bare labels CSV such as Lightning Pose's gets a config.yaml with the body parts of its header and an .h5 written
by pandas); ``create_training_dataset(trainIndices=[...], testIndices=[...])`` with ``TrainingFraction`` set to
the split's fraction; check that DeepLabCut's train and test frames are ours, by name; ``train_network`` for
``--epochs`` on the CPU; predict the test frames with the last snapshot; write them in DeepLabCut's CSV layout;
score them with the independent ``dlc_test_error.py``; write a JSON record.

Initialisation: DeepLabCut's training always asks timm for ImageNet weights from the Hugging Face Hub (its
``pretrained: false`` is overwritten), which fails offline. By default this runner patches ``timm.create_model``
to ``pretrained=False``: a **random init**, said in the record. ``--imagenet`` leaves timm alone (needs a
network, or the weights in the Hub cache).

DeepLabCut's evaluation of the test frames during training (every ``runner.eval_interval`` epochs, for its logs
and its "best" snapshot) is switched off, so the test frames are read once, for the reported number; it changes
no weight. The snapshot used is the last epoch's.

Usage (from the repository root):
    benchmarks/peers/deeplabcut/.venv/bin/python benchmarks/peers/deeplabcut/run.py dlc-reaching --epochs 11
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
DATA = Path(os.environ.get("CL_DATA", REPO.parent / "shared" / "data"))
SCORER_SCRIPT = Path(os.environ.get("CL_SCORER", REPO.parent / "shared" / "tools" / "dlc_test_error.py"))

SPLIT_CODE = """
import json, sys
from contrastive_landmarks.data.dlc import DLCProject, dlc_split
ds = DLCProject(sys.argv[1])
print(json.dumps({
    "images": list(ds.images),
    "paths": [str(ds.image_path(i)) for i in range(len(ds.images))],
    "names": list(ds.names),
    "scorer": getattr(ds, "scorer", None),
    "files": [str(f) for f in ds.files],
    "train": dlc_split(ds, "train"),
    "test": dlc_split(ds, "test"),
}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "project",
        help="a development project by name (dlc-reaching, lp-mirror-mouse, under ../shared/data), a DeepLabCut "
        "project folder, or a labels CSV in DeepLabCut's layout (Lightning Pose's CollectedData.csv)",
    )
    parser.add_argument("--epochs", type=int, required=True, help="training epochs (DeepLabCut's default is 200)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: DeepLabCut's (8)")
    parser.add_argument("--seed", type=int, default=None, help="DeepLabCut's train_settings.seed (default: its 42)")
    parser.add_argument(
        "--imagenet",
        action="store_true",
        help="ImageNet weights for the backbone as DeepLabCut intends (downloads them from the Hub: needs a "
        "network or a filled cache); default: random init, timm.create_model patched to pretrained=False",
    )
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: this folder's work/<run>)")
    parser.add_argument("--out", type=Path, default=None, help="the JSON record (default: benchmarks/results/peers/)")
    parser.add_argument(
        "--prepare-only", action="store_true", help="stop after building the project and checking DeepLabCut's shuffle"
    )
    parser.add_argument("--tag", default="", help="appended to the record's name, e.g. 'smoke'")
    parser.add_argument(
        "--cl-python",
        default=os.environ.get("CL_PYTHON", str(REPO / ".venv" / "bin" / "python")),
        help="the library's Python, to print our split (default: $CL_PYTHON or <repo>/.venv/bin/python)",
    )
    return parser.parse_args(argv)


def resolve_project(name: str) -> Path:
    path = Path(name)
    if not path.exists() and (DATA / name).exists():
        path = DATA / name
    if path.is_dir() and not (path / "config.yaml").is_file() and (path / "CollectedData.csv").is_file():
        path = path / "CollectedData.csv"  # a Lightning Pose folder
    if not path.exists():
        sys.exit(f"no project {name!r} (nor {DATA / name})")
    return path.resolve()


def our_split(project: Path, cl_python: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [cl_python, "-c", SPLIT_CODE, str(project)], capture_output=True, text=True, env=env, cwd=REPO, check=False
    )
    if done.returncode != 0:
        sys.exit(f"{cl_python} could not print our split:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def frame_key(image: str, default_video: str) -> tuple[str, str, str]:
    """Our frame path -> DeepLabCut's row key ("labeled-data", video, file name)."""
    parts = image.replace("\\", "/").split("/")
    video = parts[-2] if len(parts) >= 3 and parts[-3] == "labeled-data" else default_video
    return ("labeled-data", video, parts[-1])


def build_project(project: Path, split: dict, root: Path) -> tuple[Path, list[tuple[str, str, str]]]:
    """A DeepLabCut project under ``root`` with every labelled frame of ``project``; returns (config, frame keys)."""
    import pandas as pd
    from deeplabcut.utils import auxiliaryfunctions

    if root.exists():
        shutil.rmtree(root)
    (root / "labeled-data").mkdir(parents=True)
    is_dlc = project.is_dir()
    default_video = re.sub(r"[^A-Za-z0-9_.-]", "_", (project if is_dlc else project.parent).name)
    keys = [frame_key(image, default_video) for image in split["images"]]
    if len(set(keys)) != len(keys):
        sys.exit("two frames map to one labeled-data/<video>/<file> name")
    for key, source in zip(keys, split["paths"]):
        target = root.joinpath(*key)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)

    if is_dlc:
        scorer = split["scorer"]
        cfg = auxiliaryfunctions.read_plainconfig(str(project / "config.yaml"))
        for label_file in map(Path, split["files"]):
            video = label_file.parent.name
            h5 = label_file.with_suffix(".h5")
            for source in (label_file, h5):
                if source.is_file():
                    shutil.copy2(source, root / "labeled-data" / video / source.name)
            if not h5.is_file():
                write_h5(label_file, root / "labeled-data" / video / h5.name, video, scorer)
    else:  # a bare labels CSV (Lightning Pose): a config.yaml from its header
        header = pd.read_csv(project, header=[0, 1, 2], index_col=0, nrows=0)
        scorer = str(header.columns.get_level_values(0)[0])
        cfg = {"Task": default_video, "scorer": scorer, "date": "peer", "bodyparts": split["names"], "skeleton": []}
        write_h5(project, root / "labeled-data" / default_video / f"CollectedData_{scorer}.h5", default_video, scorer)
        shutil.copy2(project, root / "labeled-data" / default_video / f"CollectedData_{scorer}.csv")

    videos = sorted({key[1] for key in keys})
    sizes = {}
    for key in keys:
        sizes.setdefault(key[1], root.joinpath(*key))
    n_train, n_test = len(split["train"]), len(split["test"])
    cfg.update(
        {
            "project_path": str(root),
            "video_sets": {str(root / "videos" / f"{v}.mp4"): {"crop": crop_of(sizes[v])} for v in videos},
            "TrainingFraction": [round(n_train / (n_train + n_test), 2)],  # as create_training_dataset rounds it
            "iteration": 0,
            "default_net_type": "resnet_50",
            "engine": "pytorch",
            "snapshotindex": -1,
            "multianimalproject": False,
        }
    )
    cfg.setdefault("pcutoff", 0.6)
    config = root / "config.yaml"
    auxiliaryfunctions.write_plainconfig(str(config), dict(cfg))
    return config, keys


def crop_of(image: Path) -> str:
    from PIL import Image

    with Image.open(image) as im:
        return f"0, {im.width}, 0, {im.height}"


def write_h5(csv_path: Path, h5_path: Path, video: str, scorer: str) -> None:
    """DeepLabCut's labels .h5 (3-level rows and columns) from a labels CSV in its layout, with pandas."""
    import pandas as pd

    frame = pd.read_csv(csv_path, header=[0, 1, 2], index_col=0)
    frame.columns = frame.columns.set_names(["scorer", "bodyparts", "coords"])
    frame.columns = frame.columns.set_levels([scorer], level="scorer")
    rows = [("labeled-data", video, str(i).replace("\\", "/").split("/")[-1]) for i in frame.index]
    frame.index = pd.MultiIndex.from_tuples(rows)
    frame.astype(float).to_hdf(h5_path, key="df_with_missing", mode="w")


def check_labels(merged, labels: Path) -> None:
    """DeepLabCut trains on the .h5 labels, the scorer reads the CSV: they must agree (to 1e-3 px)."""
    import numpy as np
    import pandas as pd

    table = pd.read_csv(labels, header=[0, 1, 2], index_col=0)
    by_name = {str(i).replace("\\", "/").split("/")[-1]: n for n, i in enumerate(table.index)}
    parts = list(dict.fromkeys(merged.columns.get_level_values("bodyparts")))
    for key, row in zip(merged.index, merged.to_numpy(float)):
        theirs = row.reshape(len(parts), 2)
        ours = table.iloc[by_name[str(key[-1])]]
        ours = np.array([[ours.xs((p, c), level=(1, 2)).iloc[0] for c in ("x", "y")] for p in parts], float)
        if not np.allclose(theirs, ours, atol=1e-3, equal_nan=True):
            sys.exit(f"{key}: DeepLabCut's .h5 labels differ from {labels}")


def patch_random_init() -> None:
    import timm

    create = timm.create_model

    def create_model(*args, **kwargs):
        kwargs["pretrained"] = False
        return create(*args, **kwargs)

    timm.create_model = create_model


def predictions_csv(predictions: dict, keys_by_path: dict, names: list[str], scorer: str, out: Path) -> list[str]:
    """Writes DeepLabCut's CSV layout (scorer / bodyparts / coords, x y likelihood); returns the frame names."""
    import csv

    import numpy as np

    rows, frames = [], []
    for path, result in predictions.items():
        key = keys_by_path[str(Path(path).resolve())]
        pose = np.asarray(result["bodyparts"], dtype=float)[0]  # (K, 3): the one animal
        rows.append(["/".join(key)] + [f"{v:.4f}" for v in pose.reshape(-1)])
        frames.append(key[2])
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["scorer"] + [scorer] * (3 * len(names)))
        writer.writerow(["bodyparts"] + [n for n in names for _ in range(3)])
        writer.writerow(["coords"] + ["x", "y", "likelihood"] * len(names))
        writer.writerows(sorted(rows))
    return sorted(frames)


def labels_csv(split: dict, keys: list[tuple[str, str, str]], work: Path) -> Path:
    """The original labels file for the scorer; several (one per video) are joined under the first's header."""
    import csv

    files = [Path(f) for f in split["files"]]
    if len(files) == 1:
        return files[0]
    out = work / "labels.csv"
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        for n, path in enumerate(files):
            with open(path, newline="") as source:
                rows = list(csv.reader(source))
            width = next(i for i, c in enumerate(rows[2]) if i and c.strip() in ("x", "y"))
            for r, row in enumerate(rows):
                if r < 3 and n == 0:
                    writer.writerow([row[0], *row[width:]])
                elif r >= 3 and row:
                    writer.writerow(["/".join(c for c in row[:width] if c), *row[width:]])
    return out


def machine() -> dict:
    cpu = platform.processor()
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as info:
        cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    python = platform.python_version()
    return {"platform": platform.platform(), "processor": cpu, "cpus": os.cpu_count(), "python": python}


def git_commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip() or None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "0" if args.imagenet else "1")
    started = time.time()
    load_start = os.getloadavg()

    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    if not args.imagenet:
        patch_random_init()
    import deeplabcut
    import timm
    from deeplabcut.pose_estimation_pytorch.data import DLCLoader
    from deeplabcut.utils import auxiliaryfunctions

    project = resolve_project(args.project)
    name = project.name if project.is_dir() else project.parent.name
    init = "imagenet" if args.imagenet else "random"
    run_name = f"{name}-resnet50-{init}-{args.epochs}ep" + (f"-{args.tag}" if args.tag else "")
    work = (args.work or HERE / "work" / run_name).resolve()
    out = args.out or REPO / "benchmarks" / "results" / "peers" / f"{run_name}.json"
    work.mkdir(parents=True, exist_ok=True)

    split = our_split(project, args.cl_python)
    config, keys = build_project(project, split, work / "project")
    print(f"project {config}: {len(split['train'])} train and {len(split['test'])} test frames (our split)")

    # DeepLabCut's row order: its own merge of the labelled videos (sorted by labeled-data/<video>/<file>)
    from deeplabcut.generate_training_dataset.trainingsetmanipulation import merge_annotateddatasets

    cfg = auxiliaryfunctions.read_config(str(config))
    merged_dir = work / "merged"
    merged_dir.mkdir(exist_ok=True)
    merged = merge_annotateddatasets(cfg, merged_dir)
    order = {tuple(map(str, key)): n for n, key in enumerate(merged.index)}
    if set(order) != set(keys):
        sys.exit(f"DeepLabCut's merged labels hold {len(order)} frames, ours {len(keys)}: they differ")
    train_rows = sorted(order[keys[i]] for i in split["train"])
    test_rows = sorted(order[keys[i]] for i in split["test"])
    deeplabcut.create_training_dataset(
        str(config),
        Shuffles=[1],
        trainIndices=[train_rows],
        testIndices=[test_rows],
        net_type="resnet_50",
        engine=deeplabcut.Engine.PYTORCH,
        userfeedback=False,
    )
    loader = DLCLoader(str(config), shuffle=1, trainset_index=0)
    dlc_test = {tuple(map(str, k)) for k in loader.df_test.index}
    dlc_train = {tuple(map(str, k)) for k in loader.df_train.index}
    if dlc_test != {keys[i] for i in split["test"]} or dlc_train != {keys[i] for i in split["train"]}:
        sys.exit("DeepLabCut's shuffle does not hold our train / test frames")
    print(f"DeepLabCut's shuffle 1 holds exactly our {len(dlc_train)} train and {len(dlc_test)} test frames")
    if args.prepare_only:
        return

    updates = {"runner.eval_interval": args.epochs + 1}  # no test-frame evaluation while training
    if args.seed is not None:
        updates["train_settings.seed"] = args.seed
    train_start = time.time()
    deeplabcut.train_network(
        str(config),
        shuffle=1,
        trainingsetindex=0,
        device="cpu",
        epochs=args.epochs,
        save_epochs=args.epochs,
        batch_size=args.batch_size,
        pytorch_cfg_updates=updates,
    )
    train_minutes = (time.time() - train_start) / 60
    loader = DLCLoader(str(config), shuffle=1, trainset_index=0)
    model_cfg = auxiliaryfunctions.read_plainconfig(str(loader.model_config_path))  # plain types, for the record
    snapshots = sorted(p.name for p in loader.model_folder.glob("snapshot-*.pt"))  # model_folder: .../train
    last = f"snapshot-{args.epochs:03d}.pt"
    if last not in snapshots:
        sys.exit(f"no snapshot of the last epoch ({last}) in {snapshots}")

    test_paths = [str(work.joinpath("project", *keys[i])) for i in split["test"]]
    keys_by_path = {str(Path(p).resolve()): keys[i] for p, i in zip(test_paths, split["test"])}
    predict_start = time.time()
    predictions = deeplabcut.analyze_images(
        str(config),
        test_paths,
        destfolder=str(work / "analyze_images"),
        shuffle=1,
        trainingsetindex=0,
        snapshot_index=-1,
        device="cpu",
        progress_bar=False,
    )
    predict_minutes = (time.time() - predict_start) / 60
    if len(predictions) != len(test_paths):
        sys.exit(f"DeepLabCut predicted {len(predictions)} of the {len(test_paths)} test frames")
    pred_csv = work / "predictions.csv"
    frames = predictions_csv(predictions, keys_by_path, split["names"], f"DLC_resnet50_{init}", pred_csv)
    frames_txt = work / "test_frames.txt"
    frames_txt.write_text("".join(f"{f}\n" for f in frames))
    labels = labels_csv(split, keys, work)
    check_labels(merged, labels)

    score = subprocess.run(
        [sys.executable, str(SCORER_SCRIPT), str(labels), str(pred_csv), "--frames", str(frames_txt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if score.returncode != 0:
        sys.exit(f"the scorer failed:\n{score.stdout}{score.stderr}")
    lines = score.stdout.strip().splitlines()
    print("\n".join(lines))
    text = score.stdout
    mean, median = (float(v) for v in re.search(r"mean ([\d.]+) px, median ([\d.]+) px", text).groups())
    mean_pose = float(re.search(r"mean pose of the other \d+ labelled frames, same points: ([\d.]+) px", text)[1])

    record = {
        "peer": "DeepLabCut",
        "what": "DeepLabCut 3 (PyTorch engine), its default net resnet_50, trained on our train frames and scored "
        "on our test frames by shared/tools/dlc_test_error.py, in the frames' own pixels",
        "project": name,
        "labels": os.path.relpath(labels, REPO),
        "split": {
            "how": "contrastive_landmarks.data.dlc.dlc_split(DLCProject(path), ...), seed 0, test_fraction 0.2",
            "train": len(split["train"]),
            "test": len(split["test"]),
            "test_frames": frames,
            "TrainingFraction": cfg["TrainingFraction"][0],
        },
        "init": "random (offline)" if not args.imagenet else "ImageNet (timm weights from the Hugging Face Hub)",
        "init_note": (
            "timm.create_model patched to pretrained=False: DeepLabCut's training otherwise downloads ImageNet "
            "weights from the Hugging Face Hub, which fails offline; timm's own init of "
            f"{model_cfg['model']['backbone']['model_name']}"
            if not args.imagenet
            else "DeepLabCut's default: ImageNet weights"
        ),
        "net_type": "resnet_50",
        "backbone": model_cfg["model"]["backbone"]["model_name"],
        "epochs": args.epochs,
        "batch_size": model_cfg["train_settings"]["batch_size"],
        "seed": model_cfg["train_settings"]["seed"],
        "optimizer": model_cfg["runner"]["optimizer"],
        "scheduler": model_cfg["runner"]["scheduler"],
        "train_augmentation": model_cfg["data"]["train"],
        "eval_during_training": "off (runner.eval_interval > epochs): the test frames are read once, here",
        "snapshot": last,
        "threads": args.threads,
        "device": "cpu",
        "load_average": {"start": [round(v, 2) for v in load_start], "end": [round(v, 2) for v in os.getloadavg()]},
        "minutes": round((time.time() - started) / 60, 2),
        "train_minutes": round(train_minutes, 2),
        "minutes_per_epoch": round(train_minutes / args.epochs, 2),
        "predict_minutes": round(predict_minutes, 2),
        "test": {"mean_px": mean, "median_px": median, "mean_pose": mean_pose},  # the keys of finetune_test.py
        "test_mean_px": mean,
        "test_median_px": median,
        "mean_pose_px": mean_pose,
        "scorer": f"{os.path.relpath(SCORER_SCRIPT, REPO)} LABELS PREDICTIONS --frames TEST_FRAMES",
        "cross_check": lines,
        "command": " ".join(
            [os.path.relpath(sys.executable, REPO), os.path.relpath(Path(__file__).resolve(), REPO)]
            + (argv if argv is not None else sys.argv[1:])
        ),
        "deeplabcut": deeplabcut.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "machine": machine(),
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(
        f"wrote {out}: test mean {mean:.2f} px (median {median:.2f}), mean pose {mean_pose:.2f} px, "
        f"{record['minutes']} min ({record['minutes_per_epoch']} min/epoch)"
    )


if __name__ == "__main__":
    main()
