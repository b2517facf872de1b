"""Reports of the evaluation protocols: the environment every result records, markdown tables, JSON files."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

__all__ = ["environment", "results_table", "save_results"]


def environment() -> dict:
    """Versions and machine, recorded with every result."""
    from .. import __version__

    return {
        "contrastive_landmarks": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def results_table(rows: Mapping[str, Mapping] | Sequence[tuple[str, Mapping]]) -> str:
    """A markdown table of ``{label: result}`` (from :func:`evaluate_regression` or :func:`evaluate_matching`)."""
    items = list(rows.items()) if isinstance(rows, Mapping) else list(rows)
    lines = []
    if items and items[0][1].get("config", {}).get("protocol") == "matching":
        lines += ["| model | same identity (px @70) | different identity (px @70) | pairs |", "|---|---|---|---|"]
        for label, r in items:
            lines.append(
                f"| {label} | {r['same']['error']:.2f} | {r['different']['error']:.2f} | {r['config']['pairs']} |"
            )
    else:
        lines += [
            "| model | labelled | test metric | mean ± std | mean shape | seeds | selected (lr, step) |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, r in items:
            cfg = r["config"]
            labelled = cfg["num_labelled"] if cfg["num_labelled"] is not None else cfg["train_images"]
            chosen = ", ".join(f"({s['lr']:g}, {s['step']})" for s in r["selected"])
            lines.append(
                f"| {label} | {labelled} | {r['metric']} | {r['test']['mean']:.2f} ± {r['test']['std']:.2f}"
                f" | {r['test_baseline']['mean']:.2f} | {len(cfg['seeds'])} | {chosen} |"
            )
    return "\n".join(lines)


def save_results(results: Mapping, path: str | os.PathLike) -> Path:
    """Write results (with their configuration and environment) as indented JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in results.items() if k != "examples"}
    path.write_text(json.dumps(clean, indent=2, default=str) + "\n")
    return path
