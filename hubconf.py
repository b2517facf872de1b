"""torch.hub entry points for contrastive_landmarks.

    import torch
    model = torch.hub.load("/path/to/checkout", "resnet18_faces", source="local")   # built in, no network
    points = model.detect(images)                                      # (B, 5, 2) pixels of 64x64 faces
    hc = torch.hub.load("OWNER/contrastive_landmarks", "resnet50_celeba", pretrained=False, trust_repo=True)

``resnet18_faces`` returns a :class:`contrastive_landmarks.LandmarkModel` (backbone, hypercolumn,
projector, 5-point regressor) whose weights ship inside the package. The ``*_celeba`` entry points
return a :class:`contrastive_landmarks.Hypercolumn` (backbone + 48x48 hypercolumn). All are in eval
mode. Nothing is downloaded unless a ``pretrained=True`` model is not built in; with
``HF_HUB_OFFLINE=1`` only the local cache (or the weights shipped inside the package) is used.
"""

import os
import sys

dependencies = ["torch", "timm", "huggingface_hub", "safetensors", "einops", "numpy"]

# torch.hub puts the repository root on sys.path; make sure *this* checkout's package is imported
# rather than another installed copy.
_ROOT = os.path.dirname(os.path.abspath(__file__))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


def _hypercolumn(name, pretrained, size, **kwargs):
    from contrastive_landmarks import Hypercolumn, load_backbone
    from contrastive_landmarks.hub import get_model_info

    info = get_model_info(name)
    backbone = load_backbone(name if pretrained else info.arch, **kwargs)
    if not pretrained:  # random init: record the statistics and size the registered model is trained with
        backbone.with_preprocessing(mean=info.mean, std=info.std, input_size=info.input_size)
    return Hypercolumn(backbone, size=size).eval()


def resnet18_faces(*, pretrained=True, **kwargs):
    """The built-in face model: MoCo ResNet-18 hypercolumn (960 channels at 32x32), a 256-d spatial
    projector and a 5-point landmark regressor, for 64x64 face crops (CelebA statistics).

    Returns a ``LandmarkModel``: ``.detect(images)`` gives ``(B, 5, 2)`` pixel landmarks (eyes, nose,
    mouth corners) of ``[0, 1]`` images, ``.descriptors(images)`` the projected ``(B, 256, S, S)`` map
    for matching. The weights ship inside the package (no network); ``pretrained=False`` gives the same
    structure randomly initialised. Measured numbers: the model card (``README.md`` beside the weights).
    """
    from contrastive_landmarks import LandmarkModel
    from contrastive_landmarks.hub import builtin_dir, read_config

    if pretrained or builtin_dir("resnet18-faces") is None:  # not built in: from_pretrained says what to do
        return LandmarkModel.from_pretrained("resnet18-faces", **kwargs)
    return LandmarkModel.from_config(read_config(builtin_dir("resnet18-faces")))


def resnet50_celeba(*, pretrained=True, size=48, **kwargs):
    """ResNet-50 MoCo hypercolumn (3840 channels at 48x48) for 96x96 face crops, CelebA statistics.

    The paper's main face model (AFLW_M 6.99 %IOD in the paper). Weights not published yet:
    ``pretrained=True`` raises PretrainedNotAvailableError; ``pretrained=False`` gives random init.
    """
    return _hypercolumn("resnet50-celeba", pretrained, size, **kwargs)


def resnet18_celeba(*, pretrained=True, size=48, **kwargs):
    """ResNet-18 MoCo hypercolumn (960 channels at 48x48) for 96x96 face crops, CelebA statistics.

    The paper reports AFLW_M 8.59 %IOD for this model. Weights not published yet:
    ``pretrained=True`` raises PretrainedNotAvailableError; ``pretrained=False`` gives random init.
    """
    return _hypercolumn("resnet18-celeba", pretrained, size, **kwargs)
