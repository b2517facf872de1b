"""contrastive_landmarks: object-landmark representations learned without labels.

A PyTorch implementation of "On Equivariant and Invariant Learning of Object Landmark
Representations" (Cheng, Su & Maji, ICCV 2021): MoCo-trained ResNets whose stacked intermediate
stages (hypercolumns) predict landmarks, a spatial projector trained with the spatially
contrastive loss, and a small linear landmark regressor.

Coordinates everywhere are ``(x, y)`` pixels with pixel centres at integers
(see :mod:`contrastive_landmarks.coords`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

if TYPE_CHECKING:  # what the names below are, for type checkers and IDEs; imported on first use otherwise
    from .backbone import DEFAULT_STAGES, STAGE_NAMES, Backbone, CheckpointMismatchError, load_backbone
    from .hub import PretrainedNotAvailableError, list_models, save_pretrained
    from .hypercolumn import Hypercolumn, sample_stages
    from .losses import spatial_contrastive_loss
    from .matching import Matches, match, match_descriptors
    from .pipeline import LandmarkModel
    from .preprocessing import Preprocessing
    from .projector import SpatialProjector
    from .regressor import LandmarkRegressor

#: public name -> the module that defines it. ``import contrastive_landmarks`` imports neither torch nor timm
#: (the command line's ``--help`` stays fast); the first use of a name imports its module. The function
#: ``hypercolumn`` is not exported: its module, ``contrastive_landmarks.hypercolumn``, would shadow it.
_EXPORTS = {
    **dict.fromkeys(
        ["DEFAULT_STAGES", "STAGE_NAMES", "Backbone", "CheckpointMismatchError", "load_backbone"], "backbone"
    ),
    **dict.fromkeys(["PretrainedNotAvailableError", "list_models", "save_pretrained"], "hub"),
    **dict.fromkeys(["Hypercolumn", "sample_stages"], "hypercolumn"),
    "spatial_contrastive_loss": "losses",
    **dict.fromkeys(["Matches", "match", "match_descriptors"], "matching"),
    "LandmarkModel": "pipeline",
    "Preprocessing": "preprocessing",
    "SpatialProjector": "projector",
    "LandmarkRegressor": "regressor",
}

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_STAGES",
    "STAGE_NAMES",
    "Backbone",
    "CheckpointMismatchError",
    "Hypercolumn",
    "LandmarkModel",
    "LandmarkRegressor",
    "Matches",
    "Preprocessing",
    "PretrainedNotAvailableError",
    "SpatialProjector",
    "__version__",
    "list_models",
    "load_backbone",
    "match",
    "match_descriptors",
    "sample_stages",
    "save_pretrained",
    "spatial_contrastive_loss",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
