"""Named pretrained models, and one directory layout for the Hugging Face Hub and local disks.

A model directory holds ``config.json`` (architecture, stages, input normalisation, ...),
``model.safetensors`` and a ``README.md`` model card (a :class:`~contrastive_landmarks.LandmarkModel` adds its heads'
files: :mod:`contrastive_landmarks.model_directory`); :func:`save_pretrained` writes it and
:func:`resolve_weights` finds it again -- in a local directory, inside this package (built-in
weights), or on the Hugging Face Hub (``HF_HUB_OFFLINE=1`` is respected: an offline miss fails at
once with a message saying what to download).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "ModelInfo",
    "PretrainedNotAvailableError",
    "builtin_dir",
    "get_model_info",
    "is_registered",
    "list_models",
    "read_config",
    "resolve_weights",
    "save_pretrained",
    "training_state_files",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
# Training state a command leaves beside a model (finetune_checkpoint.pt, fit_projector_checkpoint.pt,
# checkpoint.pt): optimiser moments, queues, step counters, hundreds of MiB that no reader of the model needs.
# A model directory's weights are always safetensors, so nothing a loader reads matches these.
TRAINING_STATE_PATTERNS = ("*.pt", "*.pth", "*.ckpt", "footage/*")  # footage/: finetune's footage step
_BUILTIN_DIR = Path(__file__).parent / "weights"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

CELEBA_MEAN = (0.5084, 0.4224, 0.3769)
CELEBA_STD = (0.2599, 0.2371, 0.2323)


class PretrainedNotAvailableError(RuntimeError):
    """A registered model whose weights are not published (yet)."""


@dataclass(frozen=True)
class ModelInfo:
    """One entry of the registry of named pretrained models.

    Attributes:
        name: registry name (``load_backbone(name)``).
        arch: timm architecture.
        repo_id: Hugging Face Hub repository holding the model directory.
        filename: weights file inside the directory.
        sha256: checksum of the weights file (checked after every resolution).
        mean, std: input normalisation the weights expect (images in ``[0, 1]``).
        input_size: ``(H, W)`` the model was trained at.
        training_data: what it was trained on, in words.
        builtin: sub-directory of ``contrastive_landmarks/weights`` when shipped inside the package.
        published: ``False`` until the weights exist anywhere.
    """

    name: str
    arch: str
    repo_id: str
    filename: str = WEIGHTS_NAME
    sha256: str | None = None
    mean: tuple[float, float, float] = CELEBA_MEAN
    std: tuple[float, float, float] = CELEBA_STD
    input_size: tuple[int, int] = (96, 96)
    training_data: str = ""
    builtin: str | None = None
    published: bool = False
    extras: dict = field(default_factory=dict)


_REGISTRY: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        ModelInfo(
            name="resnet18-faces",
            arch="resnet18",
            repo_id="contrastive-landmarks/resnet18-faces",
            input_size=(64, 64),
            training_data="MoCo on 16,000 unlabelled faces (CelebA-6k + MTFL train), 20 epochs at 64 px on a "
            "2-core CPU; 256-d projector (Eq. 3) and 5-point regressor on MTFL train. Built in (inside the package)",
            builtin="resnet18-faces",
            sha256="6bde62badd00148ae2354b0cda6f515984b1098e4bcbb60f49166ef2d173db16",
        ),
        ModelInfo(
            name="resnet50-celeba",
            arch="resnet50",
            repo_id="contrastive-landmarks/resnet50-celeba",
            training_data="CelebA aligned, MAFL images excluded; MoCo, 800 epochs, 96x96 (the paper's recipe)",
        ),
        ModelInfo(
            name="resnet18-celeba",
            arch="resnet18",
            repo_id="contrastive-landmarks/resnet18-celeba",
            training_data="CelebA aligned, MAFL images excluded; MoCo, 800 epochs, 96x96 (the paper's recipe)",
        ),
    )
}


def list_models() -> list[str]:
    """Names of the registered pretrained models."""
    return sorted(_REGISTRY)


def is_registered(name: object) -> bool:
    return isinstance(name, str) and name in _REGISTRY


def builtin_dir(name: str) -> Path | None:
    """The directory of a registered model's weights shipped inside the package (``None`` if not built in)."""
    info = get_model_info(name)
    directory = _BUILTIN_DIR / info.builtin if info.builtin else None
    return directory if directory is not None and directory.is_dir() else None


def get_model_info(name: str) -> ModelInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no registered model {name!r}; known: {list_models()}") from None


@dataclass(frozen=True)
class ResolvedWeights:
    weights: Path
    config: dict


def _read_json(path: Path) -> dict:
    """A ``config.json`` as a dict; a damaged file raises a ValueError that names it."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not a JSON text file ({error}); the model directory is damaged") from error
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}); the model directory is damaged: "
            f"write it again with save_pretrained or download it again"
        ) from error
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object (the model's config), got a {type(config).__name__}")
    if "architecture" not in config:
        raise ValueError(f"{path} has no 'architecture' entry; it is not a contrastive_landmarks model config")
    return config


def read_config(directory: str | os.PathLike) -> dict:
    """The ``config.json`` of a model directory.

    Raises:
        FileNotFoundError: no ``config.json`` there.
        ValueError: a ``config.json`` that is not valid JSON or has no ``architecture`` (names the file).
    """
    path = Path(directory).expanduser() / CONFIG_NAME
    if not path.is_file():
        if not Path(directory).expanduser().exists():
            raise FileNotFoundError(f"model directory {directory} does not exist")
        raise FileNotFoundError(
            f"{directory} is not a model directory: {CONFIG_NAME} is missing (expected "
            f"{CONFIG_NAME} + {WEIGHTS_NAME}, as written by save_pretrained)"
        )
    return _read_json(path)


def _from_directory(directory: Path) -> ResolvedWeights:
    config = read_config(directory)
    weights = directory / config.get("weights_file", WEIGHTS_NAME)
    if not weights.is_file():
        raise FileNotFoundError(f"{directory}: {weights.name} is missing next to {CONFIG_NAME}")
    return ResolvedWeights(weights, config)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(repo_id: str, filename: str, **kwargs) -> Path:
    """``hf_hub_download`` of one file; an offline cache miss is a FileNotFoundError saying how to get it."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        return Path(hf_hub_download(repo_id, filename, **kwargs))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as error:
        raise FileNotFoundError(
            f"{filename} of Hugging Face Hub repo {repo_id!r} is not in the local cache and the Hub "
            f"cannot be reached (offline: HF_HUB_OFFLINE or local_files_only). Download it once with "
            f"`huggingface-cli download {repo_id} --local-dir DIR` and pass DIR instead."
        ) from error


def local_only(local_files_only: bool | None) -> bool:
    """``local_files_only`` if given, else whether the Hub is switched off (``HF_HUB_OFFLINE``)."""
    if local_files_only is not None:
        return local_files_only
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def resolve_weights(
    weights: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
) -> ResolvedWeights:
    """Find the weights file (and config, if any) that ``weights`` names.

    Order: an existing file or directory; a registry name (built-in copy, then the Hub); a Hub
    repo id. Nothing is looked up on the network when a local answer exists. A name that can only
    be a local path (``./x``, ``/x``, ``~/x``, ``a/b/c``, ``x.safetensors``, or ``org/name`` where
    ``org`` is a local directory) and does not exist is reported as a missing path, not as a Hub miss.
    """
    from .check import looks_like_path

    path = Path(weights).expanduser()
    if path.is_dir():
        return _from_directory(path)
    if path.is_file():
        return ResolvedWeights(path, {})
    name = os.fspath(weights)
    hub_kwargs = {"revision": revision, "cache_dir": cache_dir, "local_files_only": local_only(local_files_only)}
    if is_registered(name):
        info = get_model_info(name)
        if info.builtin and (_BUILTIN_DIR / info.builtin).is_dir():
            resolved = _from_directory(_BUILTIN_DIR / info.builtin)
        elif not info.published:
            raise PretrainedNotAvailableError(
                f"pretrained weights for {name!r} ({info.training_data}) are not published yet; "
                f"use pretrained=False / weights=None for a randomly initialised {info.arch}, or "
                f"train one with `contrastive-landmarks pretrain`"
            )
        else:
            config_path = download_file(info.repo_id, CONFIG_NAME, **hub_kwargs)
            resolved = ResolvedWeights(
                download_file(info.repo_id, info.filename, **hub_kwargs), _read_json(config_path)
            )
        if info.sha256 and _sha256(resolved.weights) != info.sha256:
            raise ValueError(f"checksum mismatch for {resolved.weights}: expected sha256 {info.sha256}")
        return resolved
    if looks_like_path(weights, repo_ids=True):
        raise FileNotFoundError(f"weights {name!r} not found: no such local file or directory ({path.absolute()})")
    if _REPO_ID.match(name):
        try:
            config_path = download_file(name, CONFIG_NAME, **hub_kwargs)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{error} (Nor is there a local directory {name!r} under {Path.cwd()}.)") from error
        return ResolvedWeights(download_file(name, WEIGHTS_NAME, **hub_kwargs), _read_json(config_path))
    raise FileNotFoundError(
        f"weights {name!r} not found: not a local file or directory, not a registered name "
        f"({list_models()}), and not a Hugging Face Hub repo id ('org/name')"
    )


def save_pretrained(
    directory: str | os.PathLike,
    state_dict: Mapping[str, Tensor],
    config: Mapping,
    *,
    card: str | None = None,
    dtype: torch.dtype | None = None,
    extra_files: Mapping[str, Mapping[str, Tensor]] | None = None,
) -> Path:
    """Write a model directory: ``config.json``, ``model.safetensors`` and ``README.md`` (the library's one writer).

    The layout is the one the Hugging Face Hub serves, so the directory can be uploaded as is
    (``huggingface-cli upload org/name DIR``) and read back by :func:`resolve_weights`.
    :meth:`Backbone.save_pretrained <contrastive_landmarks.Backbone.save_pretrained>` and
    :meth:`LandmarkModel.save_pretrained <contrastive_landmarks.LandmarkModel.save_pretrained>` (which adds its
    heads' files, :mod:`contrastive_landmarks.model_directory`) call it.

    Args:
        directory: created if missing.
        state_dict: tensors to store in ``model.safetensors`` (made contiguous, optionally cast to ``dtype``).
        config: JSON-serialisable description; for a backbone, :attr:`Backbone.config`.
        card: model card text (markdown); a minimal card is written when ``None``.
        dtype: e.g. ``torch.float16`` to halve the files (loading casts back).
        extra_files: further safetensors files beside ``model.safetensors``, ``{file name: tensors}``, written the
            same way (a :class:`~contrastive_landmarks.LandmarkModel`'s heads).
    """
    from safetensors.torch import save_file

    extra_files = dict(extra_files or {})
    for name in extra_files:
        if not name.endswith(".safetensors") or name == WEIGHTS_NAME or Path(name).name != name:
            raise ValueError(f"extra_files are .safetensors file names other than {WEIGHTS_NAME}, got {name!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {**dict(config), "library": "contrastive_landmarks", "weights_file": WEIGHTS_NAME}
    for name, tensors in {WEIGHTS_NAME: state_dict, **extra_files}.items():
        save_file(_storable(tensors, dtype), str(directory / name), metadata={"format": "pt"})
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if card is None:
        card = (
            f"---\nlibrary_name: contrastive_landmarks\ntags: [landmarks, keypoints]\n---\n\n"
            f"# {config.get('architecture', 'model')}\n\n```json\n{json.dumps(config, indent=2)}\n```\n"
        )
    (directory / CARD_NAME).write_text(card)
    return directory


def _storable(state_dict: Mapping[str, Tensor], dtype: torch.dtype | None) -> dict[str, Tensor]:
    """Detached, contiguous CPU copies of ``state_dict``'s tensors, floating ones cast to ``dtype`` if given."""
    tensors = {}
    for key, value in state_dict.items():
        value = value.detach().cpu()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous()
    return tensors


def training_state_files(directory: str | os.PathLike) -> list[Path]:
    """The files under ``directory`` that are training state (:data:`TRAINING_STATE_PATTERNS`), not the model:
    what ``push`` leaves out of an upload, sorted."""
    root = Path(directory)
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file()
        and any(
            fnmatch.fnmatch(path.name, pattern) or fnmatch.fnmatch(path.relative_to(root).as_posix(), pattern)
            for pattern in TRAINING_STATE_PATTERNS
        )
    )


def registry_as_dicts() -> list[dict]:
    """The registry as plain dicts (for docs and the CLI)."""
    return [asdict(info) for info in _REGISTRY.values()]
