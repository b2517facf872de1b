"""Landmark-regression numbers of docs/notes/2026-12-benchmarks.md: random init vs MoCo vs MoCo + projector, every
error beside the training set's mean shape, with the library's one fitting recipe (``train.fit_regressor`` defaults).

Protocols (64-px faces, ``../shared/data/mtfl``):

- ``transfer``: train on MTFL's training faces (cut at the AFLW framing with jitter spanning it, both measured on
  the in-domain protocol's 1,800 training faces: ``data.mtfl.face_framing``), choose on 500 clean training faces
  held out with seed 0, test once on the in-domain protocol's 995 test faces (faces no constant came from).
- ``in_domain``: the AFLW faces split once (seed 0) into 1,800 / 200 / 995 (``data.mtfl.aflw_split``), the
  nearest this data has to the paper's AFLW_M.

Each (protocol, model, labels) result is a JSON file under ``--out``; rerunning skips the ones already there, so
an interrupted run resumes. ``--table`` prints the markdown table of what is there.

    python scripts/regression_benchmarks.py --out runs/regression            # everything (about an hour, 2 cores)
    python scripts/regression_benchmarks.py --out runs/regression --table
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contrastive_landmarks import Hypercolumn, LandmarkModel, load_backbone  # noqa: E402
from contrastive_landmarks.data import MTFL, KeypointSubset, by_name  # noqa: E402
from contrastive_landmarks.data.mtfl import AFLW_FRAMING_JITTER, aflw_split  # noqa: E402
from contrastive_landmarks.data.transforms import aflw_transform  # noqa: E402
from contrastive_landmarks.evaluation import evaluate_regression, save_results, split_indices  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from finetune_sweep import _commit  # noqa: E402

MODELS = ("random", "moco", "moco+proj")


def model(name: str, size: int):
    if name == "random":
        torch.manual_seed(0)
        return Hypercolumn(load_backbone("resnet18"), size=size // 2), None
    bundle = LandmarkModel.from_pretrained("resnet18-faces")
    return bundle.hypercolumn, (bundle.projector if name == "moco+proj" else None)


def data(protocol: str, root: Path, size: int):
    if protocol == "transfer":
        jittered = MTFL(
            root,
            "train",
            face_crop=size,
            face_crop_jitter=AFLW_FRAMING_JITTER,
            generator=torch.Generator().manual_seed(0),
        )
        clean = MTFL(root, "train", face_crop=size)
        train_idx, val_idx = split_indices(len(clean), 0.1, 0, max_val=500)
        test = KeypointSubset(MTFL(root, "test", transform=aflw_transform(size)), aflw_split("test"))
        return KeypointSubset(jittered, train_idx), KeypointSubset(clean, val_idx), test
    return tuple(by_name("aflw_in", str(root), split, image_size=size) for split in ("train", "val", "test"))


def table(out: Path) -> str:
    rows = [
        "| protocol | model | labelled | test IOD % (mean ± std) | mean shape | val IOD % | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for path in sorted(out.glob("*.json")):
        if path.name.endswith(".regressor.json"):
            continue
        r = json.loads(path.read_text())
        c = r["config"]
        labelled = c["num_labelled"] if c["num_labelled"] is not None else f"all ({c['train_images']})"
        rows.append(
            f"| {c['bench']['protocol']} | {c['bench']['model']} | {labelled} | "
            f"{r['test']['mean']:.2f} ± {r['test']['std']:.2f} | {r['test_baseline']['mean']:.2f} | "
            f"{r['val']['mean']:.2f} | {len(c['seeds'])} |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "mtfl"))
    parser.add_argument("--out", default="runs/regression")
    parser.add_argument("--protocols", nargs="+", default=["transfer", "in_domain"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--labels", nargs="+", default=["all", "10", "100", "1000"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--table", action="store_true", help="print the table of the results in --out and stop")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.table:
        print(table(out))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    out.mkdir(parents=True, exist_ok=True)
    for protocol in args.protocols:
        train, val, test = data(protocol, Path(args.root), args.image_size)
        for name in args.models:
            features, projector = model(name, args.image_size)
            for labels in args.labels:
                if protocol == "in_domain" and labels == "1000":
                    continue
                path = out / f"{protocol}-{name.replace('+', '_')}-{labels}.json"
                if path.exists():
                    continue
                started = time.time()
                fits = []
                result = evaluate_regression(
                    features,
                    train,
                    test,
                    val_set=val,
                    projector=projector,
                    num_labelled=None if labels == "all" else int(labels),
                    seeds=[0] if labels == "all" else args.seeds,
                    fits=fits,
                    progress=lambda message: print(message, flush=True),
                )
                if labels == "all":  # the all-labels regressor (seed 0): the built-in bundle's is transfer-moco's
                    from safetensors.torch import save_file

                    save_file(
                        {k: v.contiguous() for k, v in fits[0].regressor.state_dict().items()},
                        str(path.with_suffix(".regressor.safetensors")),
                    )
                    (path.with_suffix(".regressor.json")).write_text(json.dumps(fits[0].regressor.config) + "\n")
                result["config"]["bench"] = {
                    "command": " ".join(["python", *sys.argv]),
                    "commit": _commit(),
                    "protocol": protocol,
                    "model": name,
                    "image_size": args.image_size,
                    "seconds": round(time.time() - started, 1),
                }
                save_results(result, path)
                print(
                    f"{path.name}: test {result['test']['mean']:.2f} ± {result['test']['std']:.2f} "
                    f"(mean shape {result['test_baseline']['mean']:.2f}) in {time.time() - started:.0f} s",
                    flush=True,
                )
    print(table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
