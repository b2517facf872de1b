"""Thin-plate-spline (TPS) warps with exact keypoints: the names of both modules, importable from here.

- :mod:`.warp`: one TPS map (:class:`TPSWarp`): evaluating it, resampling images with it
  (:func:`warp_images`, :func:`sampling_grid`) and moving keypoints exactly (:func:`warp_keypoints`).
- :mod:`.random_warps`: DVE's random warps (:class:`TPSParams`, :func:`random_tps`) and what is drawn
  from them: image pairs with their dense correspondence (:func:`make_pair` -> :class:`TPSPair`) and
  single-warp augmentation (:func:`tps_augment`).
"""

from .random_warps import TPSPair, TPSParams, inside_image, make_pair, random_tps, tps_augment
from .warp import (
    TPSWarp,
    control_grid,
    grid_kernel,
    sampling_grid,
    source_points,
    tps_kernel,
    warp_images,
    warp_keypoints,
)

__all__ = [
    "TPSPair",
    "TPSParams",
    "TPSWarp",
    "control_grid",
    "grid_kernel",
    "inside_image",
    "make_pair",
    "random_tps",
    "sampling_grid",
    "source_points",
    "tps_augment",
    "tps_kernel",
    "warp_images",
    "warp_keypoints",
]
