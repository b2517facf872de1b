"""Reading state dicts of every checkpoint layout in use, and converting them to timm's ResNet key names.

(Training checkpoints, with optimiser and RNG state, are :mod:`contrastive_landmarks.train.checkpoint`.)

Checkpoints are read from: this library's own directories (``config.json`` + ``model.safetensors``),
a :class:`~contrastive_landmarks.Backbone`'s own ``state_dict()`` (``body.`` keys), plain timm /
torchvision ResNet state dicts, MoCo checkpoints (``module.encoder_q.`` keys; the query encoder is used),
and the paper authors' checkpoints (``{'model': ..., 'opt': argparse.Namespace}`` with
``encoder.module.`` keys). Pickles are read with ``torch.load(weights_only=True)`` and an allow-list of
exactly one extra class, ``argparse.Namespace``. :func:`check_compatible` makes loading strict: a
mismatch raises :class:`CheckpointMismatchError` naming every key.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "CheckpointMismatchError",
    "LoadReport",
    "check_compatible",
    "convert_state_dict",
    "guess_arch",
    "read_safetensors",
    "read_state_dict",
]

# Prefixes of known checkpoint layouts, most specific first. Stripped with str.removeprefix.
_KNOWN_PREFIXES = (
    "module.encoder_q.backbone.body.",  # this library's MoCo (train.moco), DDP
    "encoder_q.backbone.body.",  # this library's MoCo
    "hypercolumn.backbone.body.",  # a LandmarkModel's state_dict()
    "module.backbone.body.",
    "backbone.body.",  # a Hypercolumn's state_dict()
    "module.body.",
    "body.",  # a Backbone's own state_dict()
    "module.encoder_q.",  # MoCo (official, DDP)
    "encoder_q.",  # MoCo saved without DDP
    "encoder.module.",  # the paper authors' InsResNet wrapped in DataParallel
    "module.encoder.",
    "encoder.",
    "module.backbone.",
    "backbone.",  # lightly / solo-learn
    "module.",  # DDP / DataParallel
    "_orig_mod.",  # torch.compile
    "model.",
)
# Heads a stage extractor does not need: classifier / MoCo projection (linear or MLP).
_HEAD_PATTERN = re.compile(r"^(fc|head|classifier)(\.|$)")
_RESNET_DEPTHS = {
    (2, 2, 2, 2, False): "resnet18",
    (3, 4, 6, 3, False): "resnet34",
    (3, 4, 6, 3, True): "resnet50",
    (3, 4, 23, 3, True): "resnet101",
    (3, 8, 36, 3, True): "resnet152",
}


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the architecture it is loaded into (names the keys and the arch)."""


@dataclass
class LoadReport:
    """What :func:`load_backbone` did with a checkpoint."""

    source: str
    prefix: str = ""
    dropped_heads: list[str] = field(default_factory=list)
    dropped_other: list[str] = field(default_factory=list)


def _looks_like_torch_pickle(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def read_safetensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file; a damaged or mislabelled file raises a ValueError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        if _looks_like_torch_pickle(path):
            raise ValueError(
                f"{path} is not a safetensors file: it is a torch.save pickle with a .safetensors name; "
                f"rename it to .pth (it is then read with torch.load(weights_only=True)), or convert it with "
                f"safetensors.torch.save_file"
            ) from error
        raise ValueError(
            f"{path} is not a readable safetensors file (truncated or corrupt? {error}); download or write it again"
        ) from error


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read the tensors of a checkpoint file without executing arbitrary pickled code.

    ``.safetensors`` files are read directly. Anything else goes through
    ``torch.load(weights_only=True)`` with ``argparse.Namespace`` allow-listed (the authors' files
    pickle their command line under ``'opt'``). Wrapper dicts (``state_dict``, ``model``) are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # the unpickler's message names the class it refused
            raise ValueError(f"cannot read {path} safely with torch.load(weights_only=True): {error}") from error
    return _unwrap(obj, str(path))


def _unwrap(obj: object, source: str) -> dict[str, Tensor]:
    for key in ("state_dict", "model", "model_state", "state_dict_ema"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(
            f"{source}: no state dict found (expected a dict of tensors, or one under 'state_dict' or 'model')"
        )
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise ValueError(f"{source}: the checkpoint holds no tensors")
    return tensors


def convert_state_dict(
    state_dict: Mapping[str, Tensor], source: str = "<state dict>"
) -> tuple[dict[str, Tensor], LoadReport]:
    """Bring a ResNet state dict from any known layout to timm's key names.

    Finds the prefix of the encoder (``module.encoder_q.``, ``encoder.module.``, ``backbone.``, ...),
    keeps only the keys under it, strips it with ``str.removeprefix`` and drops classifier /
    projection heads (``fc.*``), which a stage extractor does not use.

    Returns:
        The converted dict and a :class:`LoadReport` listing what was dropped.
    """
    keys = list(state_dict)
    prefix = ""
    for candidate in _KNOWN_PREFIXES:
        if any(k == candidate + "conv1.weight" or k.startswith(candidate + "conv1.") for k in keys):
            prefix = candidate
            break
    report = LoadReport(source=source, prefix=prefix)
    clean: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            report.dropped_other.append(key)
            continue
        name = key.removeprefix(prefix)
        if _HEAD_PATTERN.match(name):
            report.dropped_heads.append(name)
            continue
        clean[name] = value
    return clean, report


def guess_arch(state_dict: Mapping[str, Tensor]) -> str | None:
    """Name the ResNet depth a converted state dict belongs to, if it is a standard one."""
    blocks = []
    for layer in range(1, 5):
        indices = {int(m.group(1)) for k in state_dict if (m := re.match(rf"layer{layer}\.(\d+)\.", k))}
        blocks.append(max(indices) + 1 if indices else 0)
    bottleneck = any(k.endswith("conv3.weight") for k in state_dict)
    return _RESNET_DEPTHS.get((*blocks, bottleneck))


def check_compatible(model: nn.Module, state_dict: Mapping[str, Tensor], arch: str, source: str) -> None:
    """Raise :class:`CheckpointMismatchError` (every missing, unexpected and mis-shaped key, and the
    architecture the checkpoint looks like) unless ``state_dict`` loads strictly into ``model``."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if state_dict[k].shape != expected[k].shape
    )
    if not (missing or unexpected or mismatched):
        return
    guess = guess_arch(state_dict)
    lines = [f"checkpoint {source} does not fit architecture {arch!r}"]
    if guess and guess != arch:
        lines[0] += f" (it looks like a {guess})"
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if items:
            shown = ", ".join(items[:12]) + (f", ... ({len(items) - 12} more)" if len(items) > 12 else "")
            lines.append(f"  {len(items)} {title}: {shown}")
    raise CheckpointMismatchError("\n".join(lines))
