"""Write ``docs/results.md`` from the recorded runs under ``benchmarks/results/`` (never by hand).

Two kinds of record, each a JSON file with its command, commit, machine and minutes:

- ``test/*.json`` (:mod:`finetune_test`): the default path as a user runs it, scored once on the test frames, with
  the independent ``dlc_test_error.py`` check; one table row per project and command, mean ± std over seeds;
- ``sweep/*.json`` (:mod:`finetune_sweep`): validation-only fits that chose the defaults; one row per configuration;
- ``faces/*.json`` (``scripts/regression_benchmarks.py``): the built-in face model's landmark regression, MTFL -> AFLW;
- ``peers/*.json`` (``benchmarks/peers/deeplabcut/run.py``): DeepLabCut 3 on the same split and test frames.

Every number stands beside the training frames' mean pose on the same frames. Run::

    python benchmarks/make_results.py            # rewrites docs/results.md
    python benchmarks/make_results.py --check    # exits 1 when docs/results.md is out of date (a test runs this)
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "results.md"
PROJECTS = {
    "lp": "`lp-mirror-mouse` (Lightning Pose example: side + mirror view, 17 parts, 396x406)",
    "dlc": "`dlc-reaching` (DeepLabCut example: reaching mouse, 5 parts, 640x470 / 832x747)",
}


def _spread(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _records(kind: str) -> list[dict]:
    return [json.loads(p.read_text()) | {"file": p.name} for p in sorted((RESULTS / kind).glob("*.json"))]


def _frames(r: dict) -> str:
    """The frames a run fitted on + held out, e.g. ``"37 + 7"``."""
    return f"{r['train_frames']} + {r['val_frames']}"


def _framing(r: dict) -> str:
    """How a run framed its crops and read its heatmaps, e.g. ``2 stages, uncapped, all cells``: the model's framing
    (``framing``, recorded since the cap), else the options' (sweeps), else the framing before both (two stages,
    crops uncapped); its decode window (recorded since it existed; before, every cell); its pose relations (recorded
    since they existed; before, none)."""
    framing = r.get("framing") or r.get("options", {}).get("framing") or {"stages": 2}
    stages = framing.get("stages")
    cap = framing.get("max_fraction")  # absent: recorded before the cap existed
    window = r.get("decode_window", r.get("options", {}).get("decode_window"))
    relations = r.get("relations")  # recorded since pose relations existed
    return (
        f"{stages or 'auto'} stage{'s' if stages != 1 else ''}, "
        + ("uncapped" if cap is None else f"≤ {cap:g} frame")
        + (", all cells" if window is None else f", {window}-cell peak")
        + ("" if relations is None else ", no relations" if relations.startswith("none") else ", pose relations")
    )


def _threads(r: dict) -> str:
    """The torch threads a test run had: its harness's ``--threads``, else every core of its machine."""
    found = re.search(r"--threads (\d+)", r.get("harness", ""))
    return found.group(1) if found else f"{r['machine'].get('cpus', '?')}"


def _minutes_by_threads(runs: list[dict]) -> str:
    """Minutes of a group's runs, averaged only over runs with the same thread count (one- and two-thread fits of
    the same recipe are different measurements): ``27.8 (1 thread); 15.5 (2 threads)``."""
    by: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        by[_threads(r)].append(r["minutes"])
    return "; ".join(f"{_spread(m, 1)} ({t} thread{'s' if t != '1' else ''})" for t, m in sorted(by.items()))


def _test_table(records: list[dict]) -> list[str]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        options = r["command"].split(" --no-progress", 1)[1] if " --no-progress" in r["command"] else ""
        options = re.sub(r"\s*--threads \d+", "", options).strip()  # how it ran, not what it ran
        # the frames it fitted on and held out: the same options ran another recipe before the few-label rule
        groups[(r["project"], options or "(defaults)", _framing(r), _frames(r))].append(r)
    lines = [
        "| project | options | framing, decoding | frames fit + val | seeds | test error px | mean pose px | median px "
        "| likelihood AUC, error > 10 px | minutes | footage min | check |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (project, options, framing, frames), runs in sorted(groups.items()):
        checks = [next((x for x in r["cross_check"] if x.startswith("mean ")), "?").split(",")[0] for r in runs]
        footage = [r["footage"]["minutes"] for r in runs if r.get("footage")]
        lines.append(
            f"| {project} | `{options}` | {framing} | {frames} | {len(runs)} "
            f"| {_spread([r['test']['mean_px'] for r in runs])} "
            f"| {_spread([r['test']['mean_pose']['mean_px'] for r in runs])} "
            f"| {_spread([r['test']['median_px'] for r in runs])} "
            f"| {_spread([a for r in runs if (a := r['test'].get('likelihood_auc_error_above_10px')) is not None])} "
            f"| {_minutes_by_threads(runs)} "
            f"| {_spread(footage, 1)} | {'; '.join(sorted(set(checks)))} |"
        )
    return lines


def _sweep_groups(records: list[dict]) -> list[tuple[tuple, list[dict]]]:
    """Sweep records grouped by configuration (project, start, footage steps, labelled frames, other options, and the
    frames fitted + held out: the same options ran another recipe before the few-label rule)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        extra = " ".join(r["set"])
        if r.get("pseudo_labels"):
            steps = r["pseudo_curve"][-1]["step"] if r.get("pseudo_curve") else "?"
            extra = f"{extra} pseudo-labels {r['pseudo_labels']} ({steps} more steps)".strip()
        labelled = r["options"].get("num_labelled")
        key = (r["project"], r["backbone"], r["footage"]["steps"], labelled, extra, _framing(r), _frames(r))
        groups[key].append(r)
    return sorted(groups.items(), key=lambda kv: str(kv[0]))


def _sweep_table(records: list[dict]) -> list[str]:
    lines = [
        "| project | start | footage steps | labelled | other options | framing, decoding | seeds | val error px "
        "| mean pose px | minutes (load) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (project, backbone, steps, labelled, extra, framing, _), runs in _sweep_groups(records):
        lines.append(
            f"| {project} | {backbone} | {steps} | {labelled or 'all'} | {extra or '-'} | {framing} | {len(runs)} "
            f"| {_spread([r['val_error_px'] for r in runs])} | {_spread([r['mean_pose_px'] for r in runs])} "
            f"| {_spread([r['minutes'] for r in runs], 1)} ({_loads(runs)}) |"
        )
    return lines


def _holdout_table(records: list[dict]) -> list[str]:
    lines = [
        "| project | start | footage steps | labelled | other options | framing, decoding | seeds | set-aside error px "
        "| mean pose px | median px | own val error px (frames) | minutes (load) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (project, backbone, steps, labelled, extra, framing, _), runs in _sweep_groups(records):
        own = _spread([r["val_error_px"] for r in runs if r["val_frames"]])
        lines.append(
            f"| {project} | {backbone} | {steps} | {labelled or 'all'} | {extra or '-'} | {framing} | {len(runs)} "
            f"| {_spread([r['holdout_error_px'] for r in runs])} "
            f"| {_spread([r['holdout_mean_pose_px'] for r in runs])} "
            f"| {_spread([r['holdout_median_px'] for r in runs])} | {own} ({runs[0]['val_frames']}) "
            f"| {_spread([r['minutes'] for r in runs], 1)} ({_loads(runs)}) |"
        )
    return lines


def _peers_table(records: list[dict]) -> list[str]:
    """One row per peer run: its init, epochs and minutes beside its test error and the mean pose."""
    lines = [
        "| project | peer | net | init | epochs | threads | test error px | median px | mean pose px | minutes "
        "(per epoch, load) | run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(records, key=lambda r: (r["project"], r["init"], r["epochs"], r["file"])):
        load = r["load_average"]["start"][0], r["load_average"]["end"][0]
        lines.append(
            f"| {r['project']} | {r['peer']} {r['deeplabcut']} | {r['net_type']} | {r['init']} | {r['epochs']} "
            f"| {r['threads']} | {r['test_mean_px']:.2f} | {r['test_median_px']:.2f} | {r['mean_pose_px']:.2f} "
            f"| {r['minutes']:.1f} ({r['minutes_per_epoch']:.2f}, load {min(load):.1f}-{max(load):.1f}) "
            f"| `{r['file']}` |"
        )
    return lines


def _faces_table(records: list[dict]) -> list[str]:
    """One row per (protocol, hypercolumn), one column per number of labelled faces: test IOD (mean shape)."""
    groups: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in records:
        labelled = r["config"]["num_labelled"]
        groups[(r["config"]["bench"]["protocol"], r["config"]["bench"]["model"])][labelled or "all"] = r
    columns = sorted({k for row in groups.values() for k in row}, key=lambda k: (k == "all", k if k != "all" else 0))
    lines = [
        "| protocol | hypercolumn | " + " | ".join(f"{c} labelled" for c in columns) + " | test faces | minutes |",
        "|---|---|" + "---|" * len(columns) + "---|---|",
    ]
    for (protocol, model), row in sorted(groups.items()):
        cells = [
            f"{_spread(r['test']['per_seed'])} ({_spread(r['test_baseline']['per_seed'])})"
            if (r := row.get(c))
            else "-"
            for c in columns
        ]
        runs = list(row.values())
        minutes = sum(r["config"]["bench"]["seconds"] for r in runs) / 60
        lines.append(
            f"| {protocol} | {model} | {' | '.join(cells)} | {runs[0]['config']['test_images']} | {minutes:.0f} |"
        )
    return lines


def _loads(runs: list[dict]) -> str:
    """The machine's load average over the runs (start and end), e.g. ``load 1.0-3.2``."""
    values = [r["machine"].get("load_at_start") for r in runs] + [r.get("load_at_end") for r in runs]
    values = [v for v in values if v is not None]
    return f"load {min(values):.1f}-{max(values):.1f}" if values else "load ?"


def render() -> str:
    tests, records, faces, peers = _records("test"), _records("sweep"), _records("faces"), _records("peers")
    sweeps = [r for r in records if not r.get("holdout")]
    held = [r for r in records if r.get("holdout")]
    machines = sorted({f"{r['machine']['processor']}, {r['machine']['cpus']} CPUs" for r in tests + records})
    commits = sorted({r["commit"] for r in tests + records})
    page = [
        "# Results",
        "",
        "Generated by `python benchmarks/make_results.py` from the JSON records in `benchmarks/results/` (each holds "
        "its command, commit, machine, seed, curve and minutes); do not edit by hand. Errors are in pixels of the "
        "original frames; the mean pose is the training frames' mean pose scored on the same frames, the trivial "
        "baseline every number must clearly beat. Splits: the library's seed-0 80/20 split by frame (`dlc_split`); "
        "validation frames are held out of the training frames, the test frames are read once per reported row.",
        "",
        f"Machines: {'; '.join(machines) or '-'}. Commits: {', '.join(commits) or '-'}. Minutes are wall time on "
        "that machine, often shared with other jobs: the load average (2 = both cores busy) stands beside them, and "
        "newer records also keep the CPU minutes.",
        "",
        "Projects: " + "; ".join(f"`{k}` = {v}" for k, v in PROJECTS.items()) + ".",
        "",
        "## Fine-tuning, test frames (`benchmarks/finetune_test.py`)",
        "",
        "`contrastive-landmarks finetune` as a user runs it (the options column lists what was added to the "
        "defaults), then `evaluate --split test`; *check* is `../shared/tools/dlc_test_error.py` on `predict "
        "--format dlc` of the same frames, which shares no code with the library.",
        "",
        *(_test_table(tests) if tests else ["No test runs recorded yet."]),
        "",
        "## DeepLabCut 3 on the same split (`benchmarks/peers/deeplabcut/run.py`)",
        "",
        "DeepLabCut 3.0 (PyTorch engine, its default `resnet_50`) trained on exactly the training frames above "
        "(fit and validation frames together: it keeps none apart) and scored once on the same test frames by the "
        "same `dlc_test_error.py`, on the same CPU. Offline its training cannot fetch ImageNet weights, so its "
        "backbone starts from timm's random init (`init`): a lower bound for DeepLabCut, not how it is meant to "
        "run (`--imagenet` runs it from ImageNet where the Hub is reachable; see the peer's README). Our budget is "
        "11 of its epochs; its default schedule is 200. *smoke* runs show the pipeline works, not a result.",
        "",
        *(_peers_table(peers) if peers else ["No peer runs recorded yet."]),
        "",
        "## Choosing the defaults, validation frames only (`benchmarks/finetune_sweep.py`)",
        "",
        "One option changed at a time on the training frames; the test frames are not read.",
        "",
        *(_sweep_table(sweeps) if sweeps else ["No sweeps recorded yet."]),
        "",
        "## Few labels, scored on set-aside training frames (`finetune_sweep.py --holdout`)",
        "",
        "A fixed quarter of the training frames (seed 0) is set aside before anything else; the fit draws its "
        "labelled frames from the rest and holds out its own validation frames from those, as a user's run did "
        "when these ran (3 of 10, which chose the step and fit the likelihood; `val_fraction=0` holds out none, "
        "what `finetune` does below 20 labelled frames since); the fitted model is then scored on the set-aside "
        "frames, beside the mean pose of the frames it was given. The test frames are not read.",
        "",
        *(_holdout_table(held) if held else ["No runs recorded yet."]),
        "",
        "## The built-in face model: landmark regression on faces (`scripts/regression_benchmarks.py`)",
        "",
        "Inter-ocular error in % (lower is better) of a 5-point regressor fitted with the library's recipe "
        "(`train.fit_regressor` defaults) on a hypercolumn at 64 px, beside the mean shape of the faces it was "
        "given (in brackets), scored on the same test faces; mean ± std over seeds 0-2 where labelled faces are "
        "drawn, seed 0 with all of them. *transfer*: fitted on MTFL's 7,150 training faces cut at the AFLW framing "
        "with jitter spanning it (both measured on the in-domain split's 1,800 training faces, "
        "`data.mtfl.face_framing`), chosen on 500 held-out training faces, tested on the in-domain split's 995 "
        "test faces (`data.mtfl.aflw_split`), which no constant came from. *random*: a randomly initialised "
        "ResNet-18 (seed 0); *moco*: the built-in `resnet18-faces` backbone; *moco+proj*: its 256-d projected "
        "descriptors. Minutes: the row's fits together, one thread of the shared machine.",
        "",
        *(_faces_table(faces) if faces else ["No runs recorded yet."]),
        "",
    ]
    return "\n".join(page)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/results.md is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text() != text:
            sys.exit(f"{PAGE} is out of date: run python benchmarks/make_results.py")
        return
    PAGE.write_text(text)
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
