"""Plots: landmarks on images, matches, PCA-to-RGB of descriptor maps, NMF parts, few-shot curves, trajectories.

Every plot is one function returning a :class:`matplotlib.figure.Figure` and, given ``path``,
saving it as a PNG (``dpi`` pixels per inch, so a figure of ``figsize = (w, h)`` inches is exactly
``(w·dpi) × (h·dpi)`` pixels). matplotlib is imported when a plot is made; it is in the ``viz``
extra (``pip install "contrastive-landmarks[viz]"``). Images are ``(B, 3, H, W)`` floats in
``[0, 1]``, points ``(x, y)`` pixels (pixel centres at integers).

:func:`pca_rgb` and :func:`nmf` (non-negative matrix factorisation by Lee & Seung's multiplicative
updates, in torch) are plain tensor functions, usable without matplotlib.

The names of every module, importable from here:

- :mod:`.keypoints`: points on images (:func:`plot_landmarks`, :func:`plot_keypoints`);
- :mod:`.matches`: matches between two images (:func:`plot_matches`);
- :mod:`.descriptors`: descriptor maps (:func:`pca_rgb`, :func:`plot_pca`, :func:`nmf`, :func:`nmf_parts`,
  :func:`plot_nmf_parts`);
- :mod:`.curves`: few-shot curves and trajectories over time (:func:`plot_fewshot`, :func:`plot_trajectories`);
- :mod:`._figure`: what they share (matplotlib on first use, the figure, the PNG, the palette).
"""

from .curves import plot_fewshot, plot_trajectories
from .descriptors import nmf, nmf_parts, pca_rgb, plot_nmf_parts, plot_pca
from .keypoints import plot_keypoints, plot_landmarks
from .matches import plot_matches

__all__ = [
    "nmf",
    "nmf_parts",
    "pca_rgb",
    "plot_fewshot",
    "plot_keypoints",
    "plot_landmarks",
    "plot_matches",
    "plot_nmf_parts",
    "plot_pca",
    "plot_trajectories",
]
