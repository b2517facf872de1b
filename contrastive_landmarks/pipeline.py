"""A pretrained bundle: backbone + hypercolumn, optionally a spatial projector and a landmark regressor.

This is what the built-in models and the ``torch.hub`` entry points return. On disk it is one model
directory (see :mod:`contrastive_landmarks.hub`)::

    config.json               architecture, stages, mean/std, hypercolumn size, head configs
    model.safetensors         the backbone, timm key names (``load_backbone(dir)`` reads it alone)
    projector.safetensors     optional
    regressor.safetensors     optional
    README.md                 model card
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from .backbone import Backbone, load_backbone
from .coords import normalized_to_pixels
from .hub import CONFIG_NAME, resolve_weights, save_pretrained
from .hypercolumn import Hypercolumn

__all__ = ["LandmarkModel"]

_PROJECTOR_FILE = "projector.safetensors"
_REGRESSOR_FILE = "regressor.safetensors"


class LandmarkModel(nn.Module):
    """Hypercolumn features, optional projected descriptors, optional landmark predictions.

    Args:
        hypercolumn: the frozen feature extractor.
        projector: a :class:`~contrastive_landmarks.SpatialProjector` on the hypercolumn, or ``None``.
        regressor: a :class:`~contrastive_landmarks.LandmarkRegressor`, or ``None``.
        regressor_input: ``"projector"`` or ``"hypercolumn"``: the features the regressor was fitted on.
        landmark_names: names of the regressor's landmarks, in order.

    Shape:
        - :meth:`descriptors`: ``(B, 3, H, W)`` images in ``[0, 1]`` -> ``(B, d, S, S)``.
        - :meth:`forward` / :meth:`detect`: ``(B, 3, H, W)`` images in ``[0, 1]`` -> ``(B, N, 2)`` pixels.
    """

    def __init__(
        self,
        hypercolumn: Hypercolumn,
        projector: nn.Module | None = None,
        regressor: nn.Module | None = None,
        *,
        regressor_input: str = "projector",
        landmark_names: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if regressor_input not in ("projector", "hypercolumn"):
            raise ValueError(f"regressor_input must be 'projector' or 'hypercolumn', got {regressor_input!r}")
        if regressor is not None and regressor_input == "projector" and projector is None:
            raise ValueError("regressor_input='projector' needs a projector")
        self.hypercolumn = hypercolumn
        self.projector = projector
        self.regressor = regressor
        self.regressor_input = regressor_input
        self.landmark_names = tuple(landmark_names)

    @property
    def backbone(self) -> Backbone:
        return self.hypercolumn.backbone

    def _size(self, images: Tensor) -> tuple[int, int]:
        return self.hypercolumn.output_size(images)

    def descriptors(self, images: Tensor) -> Tensor:
        """Dense descriptors of ``[0, 1]`` images: projected if a projector is present, else the hypercolumn."""
        maps = self.hypercolumn.stage_maps(self.backbone.normalize(images))
        if self.projector is None:
            from .hypercolumn import hypercolumn

            return hypercolumn(maps, self._size(images), normalize=self.hypercolumn.normalize)
        return self.projector(maps, size=self._size(images))

    def forward(self, images: Tensor) -> Tensor:
        """Landmarks of ``[0, 1]`` images, ``(B, N, 2)`` ``(x, y)`` pixels."""
        if self.regressor is None:
            raise RuntimeError("this model has no landmark regressor; use .descriptors() or fit one")
        maps = self.hypercolumn.stage_maps(self.backbone.normalize(images))
        size = self._size(images)
        features = self.projector(maps, size=size) if self.regressor_input == "projector" else maps
        normalized = self.regressor(features, size=size) if isinstance(features, list) else self.regressor(features)
        return normalized_to_pixels(normalized, (images.shape[-2], images.shape[-1]))

    @torch.no_grad()
    def detect(self, images: Tensor) -> Tensor:
        """:meth:`forward` in eval mode without gradients."""
        return self.eval()(images)

    # -- persistence -----------------------------------------------------------------------
    @property
    def config(self) -> dict:
        config = dict(self.backbone.config)
        config["hypercolumn"] = {"size": list(self.hypercolumn.size) if self.hypercolumn.size else None,
                                 "normalize": self.hypercolumn.normalize}
        if self.projector is not None:
            config["projector"] = self.projector.config
        if self.regressor is not None:
            config["regressor"] = {**self.regressor.config, "input": self.regressor_input,
                                   "landmark_names": list(self.landmark_names)}
        return config

    def save_pretrained(self, directory: str | os.PathLike, *, card: str | None = None,
                        dtype: torch.dtype | None = None) -> Path:
        """Write the model directory (see the module docstring)."""
        from safetensors.torch import save_file

        directory = save_pretrained(directory, self.backbone.body.state_dict(), self.config, card=card, dtype=dtype)
        for module, name in ((self.projector, _PROJECTOR_FILE), (self.regressor, _REGRESSOR_FILE)):
            if module is not None:
                tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
                           for k, v in module.state_dict().items()}
                save_file(tensors, str(directory / name))
        return directory

    @classmethod
    def from_config(cls, config: dict) -> LandmarkModel:
        """The model a ``config.json`` describes, randomly initialised (no weights are read)."""
        from .projector import SpatialProjector
        from .regressor import LandmarkRegressor

        backbone = load_backbone(config["architecture"], stages=config.get("stages"))
        return cls._assemble(backbone, config, SpatialProjector, LandmarkRegressor)

    @classmethod
    def _assemble(cls, backbone: Backbone, config: dict, projector_cls, regressor_cls) -> LandmarkModel:
        backbone.mean, backbone.std = tuple(config["mean"]), tuple(config["std"])
        if config.get("input_size"):
            backbone.input_size = tuple(config["input_size"])
        hc_config = config.get("hypercolumn", {})
        hypercolumn = Hypercolumn(backbone, size=hc_config.get("size", 48), normalize=hc_config.get("normalize", False))
        projector = projector_cls(**config["projector"]) if "projector" in config else None
        regressor, regressor_input, names = None, "projector", ()
        if "regressor" in config:
            head = dict(config["regressor"])
            regressor_input = head.pop("input", "projector")
            names = head.pop("landmark_names", ())
            regressor = regressor_cls(**head)
        model = cls(hypercolumn, projector, regressor, regressor_input=regressor_input, landmark_names=names)
        return model.float().eval()

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **hub_kwargs) -> LandmarkModel:
        """Load a bundle from a registry name, a local directory or a Hub repo id (strictly)."""
        from .projector import SpatialProjector
        from .regressor import LandmarkRegressor

        files = resolve_weights(name_or_path, **hub_kwargs)
        directory = files.weights.parent
        config = files.config or json.loads((directory / CONFIG_NAME).read_text())
        backbone = load_backbone(config["architecture"], files.weights, stages=config.get("stages"))
        model = cls._assemble(backbone, config, SpatialProjector, LandmarkRegressor)
        for module, name in ((model.projector, _PROJECTOR_FILE), (model.regressor, _REGRESSOR_FILE)):
            if module is not None:
                module.load_state_dict(_read_heads(directory / name, hub_kwargs, name_or_path), strict=True)
        return model.float().eval()


def _read_heads(path: Path, hub_kwargs: dict, source: str | os.PathLike) -> dict[str, Tensor]:
    """A head file next to ``model.safetensors``; fetched from the Hub repo when the bundle came from one."""
    from safetensors.torch import load_file

    from . import hub

    if not path.is_file():
        source = str(source)
        repo_id = hub.get_model_info(source).repo_id if hub.is_registered(source) else source
        if Path(source).exists() or "/" not in repo_id:
            raise FileNotFoundError(f"{source}: {path.name} is missing from the model directory {path.parent}")
        kwargs = {k: v for k, v in hub_kwargs.items() if k in ("revision", "cache_dir")}
        path = hub._download(repo_id, path.name, local_files_only=hub._offline(hub_kwargs.get("local_files_only")),
                             **kwargs)
    return load_file(str(path))
