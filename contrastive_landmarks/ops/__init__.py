"""Hot paths of the library, each with a plain PyTorch reference and a dispatch to fast paths.

- :func:`upsample_sum` / :func:`project_stages`: linear heads on a hypercolumn without building it,
  ``W · concat(up(F_s)) + b == Σ_s up(W_s · F_s) + b`` (bilinear weights sum to one).
- :func:`stage_similarity`: similarities of query descriptors with every location of a (per-stage
  normalised) hypercolumn, without writing the hypercolumn.
- :func:`softmax_expected_distance`: ``Σ_v softmax_v(s·<q_u, k_v>) ||src_u - v||^γ`` (the Eq. 3 loss per
  query) without materialising the ``N × M`` matrices (streaming PyTorch; Triton kernels on CUDA), and
  :func:`softmax_expected_coordinates` (soft-argmax, through SDPA).

Every op keeps its reference implementation (``*_reference``) as the definition it is tested against.
Fused Triton kernels (``_triton_upsample``, imported lazily) run for CUDA tensors when triton is
installed; :func:`select_backend` says which implementation a call uses.
"""

from .similarity import stage_similarity, stage_similarity_reference
from .softmax_matching import (
    softmax_expected_coordinates,
    softmax_expected_distance,
    softmax_expected_distance_reference,
)
from .upsampling import project_stages, project_stages_reference, select_backend, upsample_sum, upsample_sum_reference

__all__ = [
    "project_stages",
    "project_stages_reference",
    "select_backend",
    "softmax_expected_coordinates",
    "softmax_expected_distance",
    "softmax_expected_distance_reference",
    "stage_similarity",
    "stage_similarity_reference",
    "upsample_sum",
    "upsample_sum_reference",
]
