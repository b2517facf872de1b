"""contrastive_landmarks: object-landmark representations learned without labels.

A PyTorch implementation of "On Equivariant and Invariant Learning of Object Landmark
Representations" (Cheng, Su & Maji, ICCV 2021): MoCo-trained ResNets whose stacked intermediate
stages (hypercolumns) predict landmarks, a spatial projector trained with the spatially
contrastive loss, and a small linear landmark regressor.

Coordinates everywhere are ``(x, y)`` pixels with pixel centres at integers
(see :mod:`contrastive_landmarks.coords`).
"""

from .backbone import DEFAULT_STAGES, STAGE_NAMES, Backbone, CheckpointMismatchError, load_backbone
from .hub import PretrainedNotAvailableError, list_models, save_pretrained
from .hypercolumn import Hypercolumn, hypercolumn, sample_stages
from .losses import spatial_contrastive_loss
from .matching import Matches, match, match_descriptors
from .pipeline import LandmarkModel
from .preprocessing import Preprocessing
from .projector import SpatialProjector
from .regressor import LandmarkRegressor

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
    "hypercolumn",
    "list_models",
    "load_backbone",
    "match",
    "match_descriptors",
    "sample_stages",
    "save_pretrained",
    "spatial_contrastive_loss",
]
