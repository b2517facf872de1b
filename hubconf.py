"""torch.hub entry points for contrastive_landmarks.

    import torch
    hc = torch.hub.load("OWNER/contrastive_landmarks", "resnet50_celeba", pretrained=False, trust_repo=True)
    hc = torch.hub.load("/path/to/checkout", "resnet50_celeba", source="local", pretrained=False)

Each entry point returns a :class:`contrastive_landmarks.Hypercolumn` (backbone + 48x48 hypercolumn)
in eval mode. Nothing is downloaded unless ``pretrained=True``; with ``HF_HUB_OFFLINE=1`` only the
local cache (or the weights shipped inside the package) is used.
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
    if not pretrained:
        backbone.mean, backbone.std = info.mean, info.std
    return Hypercolumn(backbone, size=size).eval()


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
