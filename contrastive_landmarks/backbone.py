"""timm ResNets as stage extractors, and strict loading of every checkpoint layout in use.

A :class:`Backbone` runs a timm ResNet up to the deepest stage asked for and returns the stage
maps. Stages are named as in the paper (He et al.'s table): ``conv1`` (the stem, stride 2),
``conv2_x`` (``layer1``, stride 4), ``conv3_x``, ``conv4_x`` and ``conv5_x`` (``layer4``, stride 32).

Input preprocessing (mean, std, input size) lives in one read-only :class:`Preprocessing` held by the
backbone (:mod:`.preprocessing`); :meth:`Backbone.normalize` computes from it and it travels in ``config.json``.

:func:`load_backbone` builds a backbone and loads weights from every checkpoint layout in use
(read and converted by :mod:`.state_dicts`). Loading is strict.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from .check import check_images, looks_like_path, to_float_images
from .preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from .state_dicts import CheckpointMismatchError, LoadReport, check_compatible, convert_state_dict, read_state_dict

__all__ = [
    "DEFAULT_STAGES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "STAGE_NAMES",
    "Backbone",
    "CheckpointMismatchError",
    "Preprocessing",
    "convert_state_dict",
    "load_backbone",
    "read_state_dict",
]

logger = logging.getLogger(__name__)

STAGE_NAMES: tuple[str, ...] = ("conv1", "conv2_x", "conv3_x", "conv4_x", "conv5_x")
#: The paper's hypercolumn, in the authors' concatenation order (deepest first). The order fixes the
#: channel layout that projector and regressor weights are trained against.
DEFAULT_STAGES: tuple[str, ...] = ("conv5_x", "conv4_x", "conv3_x", "conv2_x")

_STAGE_MODULES = ("act1", "layer1", "layer2", "layer3", "layer4")


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
    import timm  # imported when first needed: it takes ~2 s, most of `import contrastive_landmarks`

    return sorted(n for n in [*timm.list_models("resnet*"), "test_resnet"] if "." not in n)


class Backbone(nn.Module):
    """A timm ResNet that returns the maps of selected stages.

    Args:
        arch: timm ResNet name (``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``, ...; the
            tiny ``test_resnet`` for tests).
        stages: stage names (``conv1``, ``conv2_x`` .. ``conv5_x``) or indices 0..4, in the order
            the maps are returned (and concatenated by :class:`~contrastive_landmarks.Hypercolumn`).
        mean, std: per-channel input normalisation the weights were trained with.
        input_size: ``(H, W)`` the weights were trained at (the backbone runs at any size;
            :class:`~contrastive_landmarks.LandmarkModel` resizes its inputs to it).
        preprocessing: all three at once (a :class:`Preprocessing`; then leave ``mean``, ``std``
            and ``input_size`` unset).

    ``mean``, ``std``, ``input_size`` and :attr:`preprocessing` are read-only: pass them here, or
    switch them with :meth:`with_preprocessing`.

    The constructor never downloads anything: weights are a separate step (:func:`load_backbone`).
    The network keeps the standard (torchvision) initialisation, i.e. timm's zero-init of each
    residual block's last BatchNorm is switched off, as in the paper's random-init baseline.

    Shape:
        - Input: ``(B, 3, H, W)`` float images, normalised with ``mean``/``std``
          (see :meth:`normalize`); other float dtypes are cast to the weights' (:attr:`dtype`).
        - Output: list of ``(B, C_s, ceil(H / r_s), ceil(W / r_s))``, one per stage, channels-last.
    """

    def __init__(
        self,
        arch: str = "resnet50",
        stages: Sequence[int | str] = DEFAULT_STAGES,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        input_size: tuple[int, int] | None = None,
        preprocessing: Preprocessing | None = None,
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
        import timm  # imported when first needed (see list_archs)

        self.body = timm.create_model(arch, pretrained=False, num_classes=0, zero_init_last=False)
        info = self.body.feature_info
        self.channels: tuple[int, ...] = tuple(info[i]["num_chs"] for i in indices)
        self.reductions: tuple[int, ...] = tuple(info[i]["reduction"] for i in indices)
        if preprocessing is None:
            preprocessing = Preprocessing(
                IMAGENET_MEAN if mean is None else mean, IMAGENET_STD if std is None else std, input_size
            )
        elif mean is not None or std is not None or input_size is not None:
            raise ValueError("pass either preprocessing= or mean/std/input_size, not both")
        self._set_preprocessing(preprocessing)
        self.load_report: LoadReport | None = None
        self.to(memory_format=torch.channels_last)
        self.eval()

    @classmethod
    def from_config(cls, config: Mapping, stages: Sequence[int | str] | None = None) -> Backbone:
        """The backbone a ``config.json`` describes (architecture, stages, preprocessing), randomly initialised."""
        if "architecture" not in config:
            raise ValueError(f"the config has no 'architecture' entry (keys: {sorted(config)})")
        return cls(
            config["architecture"],
            stages if stages is not None else config.get("stages") or DEFAULT_STAGES,
            preprocessing=Preprocessing.from_config(config),
        )

    def _set_preprocessing(self, preprocessing: Preprocessing) -> None:
        if not isinstance(preprocessing, Preprocessing):
            raise TypeError(f"preprocessing must be a Preprocessing, got {type(preprocessing).__name__}")
        object.__setattr__(self, "_preprocessing", preprocessing)

    @property
    def preprocessing(self) -> Preprocessing:
        """Mean, std and input size (read-only; see :meth:`with_preprocessing`)."""
        return self._preprocessing

    @property
    def mean(self) -> tuple[float, float, float]:
        return self._preprocessing.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self._preprocessing.std

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self._preprocessing.input_size

    def __setattr__(self, name: str, value: object) -> None:
        if name in ("mean", "std", "input_size", "preprocessing"):
            raise AttributeError(
                f"Backbone.{name} is read-only: pass it at construction (Backbone(..., {name}=...)) or use "
                f"backbone.with_preprocessing({name}=...), so that normalize() and config.json stay in step"
            )
        super().__setattr__(name, value)

    def with_preprocessing(
        self,
        preprocessing: Preprocessing | None = None,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        input_size: tuple[int, int] | None = None,
    ) -> Backbone:
        """Switch the input preprocessing, in place; returns ``self`` (like :meth:`torch.nn.Module.to`).

        Either a whole :class:`Preprocessing`, or the fields to change (the others are kept).
        """
        if preprocessing is None:
            changes = {k: v for k, v in (("mean", mean), ("std", std), ("input_size", input_size)) if v is not None}
            preprocessing = replace(self._preprocessing, **changes)
        elif mean is not None or std is not None or input_size is not None:
            raise ValueError("pass either a Preprocessing or mean/std/input_size, not both")
        self._set_preprocessing(preprocessing)
        return self

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(STAGE_NAMES[i] for i in self.stage_indices)

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the weights (inputs are cast to it)."""
        return (
            self.body.conv1.weight.dtype
            if isinstance(self.body.conv1, nn.Conv2d)
            else next(p.dtype for p in self.body.parameters() if p.is_floating_point())
        )

    @property
    def config(self) -> dict:
        """JSON-serialisable description, written to ``config.json`` by the hub helpers."""
        return {
            "architecture": self.arch,
            "stages": list(self.stages),
            **self._preprocessing.to_config(),
            "num_classes": 0,
        }

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, stages={self.stages}, preprocessing={self._preprocessing}"

    def normalize(self, images: Tensor) -> Tensor:
        """Images in ``[0, 1]`` -> network input, with this model's :attr:`preprocessing` mean and std.

        Args:
            images: ``(B, 3, H, W)`` float images in ``[0, 1]`` (any float dtype; cast to :attr:`dtype`)
                or ``uint8`` images in ``0..255`` (divided by 255). NaN / infinite values and float
                images far outside ``[0, 1]`` (e.g. 0..255 floats) raise a :class:`ValueError`
                (see :mod:`contrastive_landmarks.check`).

        Returns:
            ``(B, 3, H, W)`` in :attr:`dtype`.
        """
        check_images(images, "images")
        images = to_float_images(images, self.dtype, "images")
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std

    def forward(self, images: Tensor) -> list[Tensor]:
        check_images(images, "images", allow_uint8=False)
        body = self.body
        dtype = self.dtype
        if images.dtype != dtype and not _autocast_enabled(images.device.type):
            images = images.to(dtype)  # float16 / bfloat16 / float64 inputs run in the weights' dtype
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
        check_compatible(self.body, clean, self.arch, source)
        self.body.load_state_dict(clean, strict=True)
        self.load_report = report
        if report.dropped_heads:
            logger.info(
                "%s: dropped %d head tensors a stage extractor does not use: %s",
                source,
                len(report.dropped_heads),
                ", ".join(report.dropped_heads),
            )

    def save_pretrained(
        self, directory: str | os.PathLike, *, card: str | None = None, dtype: torch.dtype | None = None
    ) -> Path:
        """Write a model directory (``config.json`` with :attr:`config`, ``model.safetensors``, ``README.md``)
        that :func:`load_backbone` reads back, preprocessing included, with the library's one writer,
        :func:`~contrastive_landmarks.hub.save_pretrained` (a :class:`~contrastive_landmarks.LandmarkModel` writes the
        same directory and its heads)."""
        from .hub import save_pretrained

        return save_pretrained(directory, self.body.state_dict(), self.config, card=card, dtype=dtype)


def _autocast_enabled(device_type: str) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device_type))  # torch >= 2.4
    except TypeError:  # pragma: no cover - older torch
        return bool(torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled())


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
            name; a Hugging Face Hub repo id (``org/name``); or an in-memory state dict (any known
            layout, a :class:`Backbone`'s own ``state_dict()`` included). A model directory brings its
            preprocessing; a bare file or state dict gets ImageNet statistics (change them with
            :meth:`Backbone.with_preprocessing`).
        stages: stages to return (default :data:`DEFAULT_STAGES`, or the checkpoint's own).
        revision, cache_dir, local_files_only: forwarded to the Hugging Face Hub download.
            ``local_files_only`` defaults to ``True`` when ``HF_HUB_OFFLINE=1``.

    Returns:
        A :class:`Backbone` in eval mode.

    Raises:
        ValueError: unknown architecture or stage.
        FileNotFoundError: a path or Hub file that cannot be found (offline misses included).
        ValueError: a damaged weights file or ``config.json`` (the message names the file).
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
    files = None
    name = os.fspath(name) if isinstance(name, os.PathLike) else name
    if hub.is_registered(name):
        if weights is None:
            weights = name
        name = hub.get_model_info(name).arch
    elif Path(name).expanduser().is_dir():  # a model directory: its config.json is read once, here
        files = hub.resolve_weights(Path(name).expanduser())
        weights, name = files.weights, files.config["architecture"]
    elif looks_like_path(name) and name not in _supported_archs():
        path = Path(name).expanduser()
        if path.is_file():
            raise ValueError(
                f"{name} is a weights file, not a model directory or architecture: pass the "
                f"architecture and the file, e.g. load_backbone('resnet50', {name!r})"
            )
        raise FileNotFoundError(
            f"model directory {name} does not exist (looked for {path.absolute()}); "
            "load_backbone's first argument is a timm ResNet name, a registered model name "
            "or an existing model directory"
        )

    if isinstance(weights, Mapping):
        state_dict = weights
    elif weights is not None:
        if files is None:
            files = hub.resolve_weights(
                weights, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
            )
        config, source = files.config, str(files.weights)
        state_dict = read_state_dict(files.weights)
        if config.get("architecture") and config["architecture"] != name:
            raise CheckpointMismatchError(
                f"{source} holds a {config['architecture']!r} backbone but {name!r} was asked for"
            )
    backbone = Backbone.from_config({**config, "architecture": name}, stages)
    if state_dict is not None:
        backbone.load_checkpoint_state(state_dict, source=source)
    return backbone.eval()
