"""A :class:`~contrastive_landmarks.LandmarkModel` on disk: its ``config.json``, its directory written and read.

One model directory (the layout of :mod:`contrastive_landmarks.hub`, which the Hugging Face Hub serves as is)::

    config.json               architecture, stages, mean/std/input_size, hypercolumn size, head configs,
                              framing, likelihood calibration, pose relations
    model.safetensors         the backbone, timm key names (``load_backbone(dir)`` reads it alone)
    projector.safetensors     optional
    regressor.safetensors     optional
    README.md                 model card

Every file is written by :func:`~contrastive_landmarks.hub.save_pretrained`, the library's one writer of a model
directory (:meth:`Backbone.save_pretrained <contrastive_landmarks.Backbone.save_pretrained>` writes the same
directory without heads), and every file is read back strictly: weights that do not fit raise a
:class:`~contrastive_landmarks.CheckpointMismatchError` naming the missing, unexpected and mis-shaped keys
(:func:`~contrastive_landmarks.state_dicts.check_compatible`).

The hypercolumn grid ``S`` is ``config["hypercolumn"]["size"]``; the heads are built with the same grid (their own
``size`` entries are rewritten to it on saving), so the size the file names is the size the computation uses.

``LandmarkModel.config``, ``.save_pretrained``, ``.from_config`` and ``.from_pretrained`` call the functions here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from .backbone import Backbone
from .calibration import LikelihoodCalibration
from .framing import Framing
from .hub import CONFIG_NAME, read_config, resolve_weights, save_pretrained
from .hypercolumn import Hypercolumn
from .pipeline import LandmarkModel
from .pose_relations import PoseRelations
from .projector import SpatialProjector
from .regressor import LandmarkRegressor
from .state_dicts import check_compatible, read_safetensors, read_state_dict

__all__ = [
    "PROJECTOR_FILE",
    "REGRESSOR_FILE",
    "load_model",
    "load_strict",
    "model_config",
    "model_from_config",
    "save_model",
]

#: The heads' files beside ``model.safetensors``.
PROJECTOR_FILE = "projector.safetensors"
REGRESSOR_FILE = "regressor.safetensors"


def model_config(model: LandmarkModel) -> dict:
    """``model``'s ``config.json``: the backbone's, the hypercolumn's, and the heads', framing and calibration if any.

    JSON-serialisable; the heads' ``size`` is the hypercolumn's grid. :func:`model_from_config` is its inverse.
    """
    config = dict(model.backbone.config)
    config["hypercolumn"] = model.hypercolumn.config
    grid = config["hypercolumn"]["size"]
    same_grid = {"size": grid} if grid else {}
    if model.projector is not None:
        config["projector"] = {**model.projector.config, **same_grid}
    if model.regressor is not None:
        config["regressor"] = {
            **model.regressor.config,
            **same_grid,
            "input": model.regressor_input,
            "landmark_names": list(model.landmark_names),
        }
    if model.framing is not None:
        config["framing"] = model.framing.config
    if model.calibration is not None:
        config["likelihood"] = model.calibration.config
    if model.relations is not None:
        config["relations"] = model.relations.config
    return config


def _grid(config: Mapping) -> tuple[int, int] | None:
    """The hypercolumn grid a config names: its ``hypercolumn`` section (older files: a head's size, else 48)."""
    hc_config = config.get("hypercolumn") or {}
    if "size" in hc_config:
        size = hc_config["size"]
    else:
        size = next((config[k]["size"] for k in ("projector", "regressor") if "size" in config.get(k, {})), 48)
    if size is None:
        return None
    return (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)


def model_from_config(config: Mapping, cls: type[LandmarkModel] = LandmarkModel) -> LandmarkModel:
    """The model a ``config.json`` describes, randomly initialised (no weights are read), float32, in eval mode.

    Args:
        config: what :func:`model_config` wrote (or an older file: see :func:`_grid`).
        cls: the class to build (a subclass of :class:`~contrastive_landmarks.LandmarkModel`'s ``from_config``).
    """
    grid = _grid(config)
    same_grid = {"size": grid} if grid else {}
    hc_config = config.get("hypercolumn") or {}
    hypercolumn = Hypercolumn(Backbone.from_config(config), size=grid, normalize=hc_config.get("normalize", False))
    projector = SpatialProjector(**{**config["projector"], **same_grid}) if "projector" in config else None
    regressor, regressor_input, names = None, "projector", ()
    if "regressor" in config:
        head = {**config["regressor"], **same_grid}
        regressor_input = head.pop("input", "projector")
        names = head.pop("landmark_names", ())
        regressor = LandmarkRegressor(**head)
    framing = Framing.from_config(config["framing"]) if config.get("framing") else None
    likelihood = config.get("likelihood")
    calibration = LikelihoodCalibration.from_config(likelihood) if likelihood else None
    relations = PoseRelations.from_config(config["relations"]) if config.get("relations") else None
    model = cls(
        hypercolumn,
        projector,
        regressor,
        regressor_input=regressor_input,
        landmark_names=names,
        framing=framing,
        calibration=calibration,
        relations=relations,
    )
    return model.float().eval()


def _heads(model: LandmarkModel) -> list[tuple[str, nn.Module]]:
    """The model's heads with their file names, those it has."""
    pairs = ((PROJECTOR_FILE, model.projector), (REGRESSOR_FILE, model.regressor))
    return [(name, module) for name, module in pairs if module is not None]


def save_model(
    model: LandmarkModel, directory: str | os.PathLike, *, card: str | None = None, dtype: torch.dtype | None = None
) -> Path:
    """Write ``model``'s directory (see the module docs) with :func:`~contrastive_landmarks.hub.save_pretrained`.

    Args:
        model: the model to write.
        directory: created if missing.
        card: the model card (markdown); a minimal one when ``None``.
        dtype: e.g. ``torch.float16`` to halve the files (loading casts back).

    Returns:
        the directory.
    """
    heads = {name: module.state_dict() for name, module in _heads(model)}
    body = model.backbone.body.state_dict()
    return save_pretrained(directory, body, model_config(model), card=card, dtype=dtype, extra_files=heads)


def load_strict(module: nn.Module, state_dict: Mapping[str, Tensor], source: str) -> None:
    """Load ``state_dict`` into ``module`` strictly: a :class:`~contrastive_landmarks.CheckpointMismatchError`
    naming ``source`` and every missing, unexpected and mis-shaped key when it does not fit."""
    check_compatible(module, state_dict, type(module).__name__, source)
    module.load_state_dict(state_dict, strict=True)


def load_model(
    name_or_path: str | os.PathLike, cls: type[LandmarkModel] = LandmarkModel, **hub_kwargs
) -> LandmarkModel:
    """A model from a registry name, a local directory or a Hub repo id, strictly; float32, in eval mode.

    The directory's ``config.json`` is read once and gives everything: architecture, stages, preprocessing (mean,
    std, input size), the hypercolumn grid and the heads.

    Args:
        name_or_path: what :func:`~contrastive_landmarks.hub.resolve_weights` resolves.
        cls: the class to build (see :func:`model_from_config`).
        hub_kwargs: ``revision``, ``cache_dir``, ``local_files_only`` (the Hugging Face Hub download).
    """
    files = resolve_weights(name_or_path, **hub_kwargs)
    directory = files.weights.parent
    if not files.config and not (directory / CONFIG_NAME).is_file():
        raise FileNotFoundError(
            f"{name_or_path} is a bare weights file; LandmarkModel.from_pretrained needs a "
            f"model directory ({CONFIG_NAME} + weights), as written by save_pretrained"
        )
    model = model_from_config(files.config or read_config(directory), cls)
    model.backbone.load_checkpoint_state(read_state_dict(files.weights), source=str(files.weights))
    for name, module in _heads(model):
        path = _head_file(directory / name, hub_kwargs, name_or_path)
        load_strict(module, read_safetensors(path), str(path))
    return model.float().eval()


def _head_file(path: Path, hub_kwargs: dict, source: str | os.PathLike) -> Path:
    """A head file next to ``model.safetensors``; fetched from the Hub repo when the bundle came from one."""
    from . import hub

    if path.is_file():
        return path
    source = str(source)
    repo_id = hub.get_model_info(source).repo_id if hub.is_registered(source) else source
    if Path(source).exists() or "/" not in repo_id:
        raise FileNotFoundError(f"{source}: {path.name} is missing from the model directory {path.parent}")
    kwargs = {k: v for k, v in hub_kwargs.items() if k in ("revision", "cache_dir")}
    local = hub.local_only(hub_kwargs.get("local_files_only"))
    return hub.download_file(repo_id, path.name, local_files_only=local, **kwargs)
