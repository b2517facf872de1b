"""timm ResNets as stage extractors, and strict loading of every checkpoint layout in use.

A :class:`Backbone` runs a timm ResNet up to the deepest stage asked for and returns the stage
maps. Stages are named as in the paper (He et al.'s table): ``conv1`` (the stem, stride 2),
``conv2_x`` (``layer1``, stride 4), ``conv3_x``, ``conv4_x`` and ``conv5_x`` (``layer4``, stride 32).

Checkpoints are read from: this library's own directories (``config.json`` + ``model.safetensors``),
plain timm / torchvision ResNet state dicts, MoCo checkpoints (``module.encoder_q.`` keys; the query
encoder is used), and the paper authors' checkpoints (``{'model': ..., 'opt': argparse.Namespace}``
with ``encoder.module.`` keys). Pickles are read with ``torch.load(weights_only=True)`` and an
allow-list of exactly one extra class, ``argparse.Namespace``. Loading is strict.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from torch import Tensor, nn

__all__ = [
    "DEFAULT_STAGES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "STAGE_NAMES",
    "Backbone",
    "CheckpointMismatchError",
    "convert_state_dict",
    "load_backbone",
    "read_state_dict",
]

logger = logging.getLogger(__name__)

STAGE_NAMES: tuple[str, ...] = ("conv1", "conv2_x", "conv3_x", "conv4_x", "conv5_x")
#: The paper's hypercolumn, in the authors' concatenation order (deepest first). The order fixes the
#: channel layout that projector and regressor weights are trained against.
DEFAULT_STAGES: tuple[str, ...] = ("conv5_x", "conv4_x", "conv3_x", "conv2_x")
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_STAGE_MODULES = ("act1", "layer1", "layer2", "layer3", "layer4")
# Prefixes of known checkpoint layouts, most specific first. Stripped with str.removeprefix.
_KNOWN_PREFIXES = (
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


def stage_index(stage: int | str) -> int:
    """``'conv2_x'`` or ``1`` -> ``1``; raises for anything else."""
    if isinstance(stage, str):
        if stage not in STAGE_NAMES:
            raise ValueError(f"unknown stage {stage!r}; choose from {STAGE_NAMES}")
        return STAGE_NAMES.index(stage)
    if isinstance(stage, int) and 0 <= stage < len(STAGE_NAMES):
        return stage
    raise ValueError(f"unknown stage {stage!r}; choose from {STAGE_NAMES} or 0..4")


def _supported_archs() -> list[str]:
    return sorted(n for n in [*timm.list_models("resnet*"), "test_resnet"] if "." not in n)


class Backbone(nn.Module):
    """A timm ResNet that returns the maps of selected stages.

    Args:
        arch: timm ResNet name (``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``, ...; the
            tiny ``test_resnet`` for tests).
        stages: stage names (``conv1``, ``conv2_x`` .. ``conv5_x``) or indices 0..4, in the order
            the maps are returned (and concatenated by :class:`~contrastive_landmarks.Hypercolumn`).
        mean, std: per-channel input normalisation the weights were trained with.
        input_size: ``(H, W)`` the weights were trained at (advisory; any size works).

    The constructor never downloads anything: weights are a separate step (:func:`load_backbone`).
    The network keeps the standard (torchvision) initialisation, i.e. timm's zero-init of each
    residual block's last BatchNorm is switched off, as in the paper's random-init baseline.

    Shape:
        - Input: ``(B, 3, H, W)`` float images, normalised with ``mean``/``std``
          (see :meth:`normalize`).
        - Output: list of ``(B, C_s, ceil(H / r_s), ceil(W / r_s))``, one per stage, channels-last.
    """

    def __init__(
        self,
        arch: str = "resnet50",
        stages: Sequence[int | str] = DEFAULT_STAGES,
        *,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if arch not in _supported_archs():
            raise ValueError(
                f"unknown backbone {arch!r}: expected a timm ResNet such as resnet18, resnet34, "
                f"resnet50, resnet101 (or test_resnet)"
            )
        indices = [stage_index(s) for s in stages]
        if not indices or len(set(indices)) != len(indices):
            raise ValueError(f"stages must be a non-empty list without repeats, got {list(stages)}")
        self.arch = arch
        self.stage_indices: tuple[int, ...] = tuple(indices)
        self.body = timm.create_model(arch, pretrained=False, num_classes=0, zero_init_last=False)
        info = self.body.feature_info
        self.channels: tuple[int, ...] = tuple(info[i]["num_chs"] for i in indices)
        self.reductions: tuple[int, ...] = tuple(info[i]["reduction"] for i in indices)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.input_size = tuple(input_size) if input_size is not None else None
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        self.load_report: LoadReport | None = None
        self.to(memory_format=torch.channels_last)
        self.eval()

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(STAGE_NAMES[i] for i in self.stage_indices)

    @property
    def config(self) -> dict:
        """JSON-serialisable description, written to ``config.json`` by the hub helpers."""
        return {
            "architecture": self.arch,
            "stages": list(self.stages),
            "mean": list(self.mean),
            "std": list(self.std),
            "input_size": list(self.input_size) if self.input_size else None,
            "num_classes": 0,
        }

    def normalize(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` images in ``[0, 1]`` -> network input, with this model's mean and std."""
        _check_images(images)
        return (images - self._mean.to(images.dtype)) / self._std.to(images.dtype)

    def forward(self, images: Tensor) -> list[Tensor]:
        _check_images(images)
        body = self.body
        x = images.contiguous(memory_format=torch.channels_last)
        wanted = set(self.stage_indices)
        last = max(wanted)
        outputs: dict[int, Tensor] = {}
        x = body.act1(body.bn1(body.conv1(x)))
        if 0 in wanted:
            outputs[0] = x
        if last > 0:
            x = body.maxpool(x)
            for index, layer in enumerate((body.layer1, body.layer2, body.layer3, body.layer4), start=1):
                x = layer(x)
                if index in wanted:
                    outputs[index] = x
                if index == last:
                    break
        return [outputs[i] for i in self.stage_indices]

    # -- weights ---------------------------------------------------------------------------
    def load_checkpoint_state(self, state_dict: Mapping[str, Tensor], source: str = "<state dict>") -> None:
        """Strictly load a (possibly foreign) ResNet state dict, converting known layouts first."""
        clean, report = convert_state_dict(state_dict, source=source)
        _check_compatible(self.body, clean, self.arch, source)
        self.body.load_state_dict(clean, strict=True)
        self.load_report = report
        if report.dropped_heads:
            logger.info(
                "%s: dropped %d head tensors a stage extractor does not use: %s",
                source,
                len(report.dropped_heads),
                ", ".join(report.dropped_heads),
            )


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)} ({images.ndim}-D)")
    if images.shape[1] != 3:
        raise ValueError(
            f"images must have 3 channels (RGB) in dim 1, got {images.shape[1]} in shape "
            f"{tuple(images.shape)}; convert grayscale with .expand(-1, 3, -1, -1) and drop alpha"
        )
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point (got {images.dtype}); scale uint8 images to [0, 1]")


# -- checkpoint reading and conversion ------------------------------------------------------
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
        from safetensors.torch import load_file

        return load_file(str(path))
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # the unpickler's message names the class it refused
            raise ValueError(
                f"cannot read {path} safely with torch.load(weights_only=True): {error}"
            ) from error
    return _unwrap(obj, str(path))


def _unwrap(obj: object, source: str) -> dict[str, Tensor]:
    for key in ("state_dict", "model", "model_state", "state_dict_ema"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{source}: no state dict found (expected a dict of tensors, or one under "
                         "'state_dict' or 'model')")
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


def _check_compatible(model: nn.Module, state_dict: Mapping[str, Tensor], arch: str, source: str) -> None:
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
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches", mismatched)):
        if items:
            shown = ", ".join(items[:12]) + (f", ... ({len(items) - 12} more)" if len(items) > 12 else "")
            lines.append(f"  {len(items)} {title}: {shown}")
    raise CheckpointMismatchError("\n".join(lines))


# -- the one entry point -------------------------------------------------------------------
def load_backbone(
    name: str = "resnet50",
    weights: str | os.PathLike | Mapping[str, Tensor] | None = None,
    *,
    stages: Sequence[int | str] | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
) -> Backbone:
    """Build a ResNet stage extractor, optionally with weights, in eval mode.

    Args:
        name: a timm ResNet (``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``, ...), a
            registry name (see :func:`contrastive_landmarks.hub.list_models`; implies its weights),
            or a local directory written by :func:`contrastive_landmarks.hub.save_pretrained`.
        weights: ``None`` for random init; a local checkpoint file (``.safetensors``, ``.pth``,
            ``.pth.tar``: timm, torchvision, MoCo or the authors' layout) or directory; a registry
            name; a Hugging Face Hub repo id (``org/name``); or an in-memory state dict.
        stages: stages to return (default :data:`DEFAULT_STAGES`, or the checkpoint's own).
        revision, cache_dir, local_files_only: forwarded to the Hugging Face Hub download.
            ``local_files_only`` defaults to ``True`` when ``HF_HUB_OFFLINE=1``.

    Returns:
        A :class:`Backbone` in eval mode.

    Raises:
        ValueError: unknown architecture or stage.
        FileNotFoundError: a path or Hub file that cannot be found (offline misses included).
        CheckpointMismatchError: weights that do not fit the architecture (names every key).

    Example:
        >>> backbone = load_backbone("test_resnet")
        >>> [tuple(m.shape) for m in backbone(torch.randn(1, 3, 96, 96))]
        [(1, 96, 3, 3), (1, 192, 6, 6), (1, 48, 12, 12), (1, 32, 24, 24)]
    """
    from . import hub

    config: dict = {}
    state_dict: Mapping[str, Tensor] | None = None
    source = "<state dict>"
    if hub.is_registered(name):
        if weights is None:
            weights = name
        name = hub.get_model_info(name).arch
    elif Path(name).is_dir():
        weights, name = name, hub.read_config(name)["architecture"]

    if isinstance(weights, Mapping):
        state_dict = weights
    elif weights is not None:
        files = hub.resolve_weights(
            weights, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
        )
        config, source = files.config, str(files.weights)
        state_dict = read_state_dict(files.weights)
        if config.get("architecture") and config["architecture"] != name:
            raise CheckpointMismatchError(
                f"{source} holds a {config['architecture']!r} backbone but {name!r} was asked for"
            )
    backbone = Backbone(
        name,
        stages if stages is not None else config.get("stages", DEFAULT_STAGES),
        mean=config.get("mean") or IMAGENET_MEAN,
        std=config.get("std") or IMAGENET_STD,
        input_size=config.get("input_size"),
    )
    if state_dict is not None:
        backbone.load_checkpoint_state(state_dict, source=source)
    return backbone.eval()
