"""Re-estimate BatchNorm statistics on clean images after self-supervised training.

During MoCo training every BatchNorm layer's running mean and variance are averaged over
*augmented* batches (random resized crops down to 20 % of the image, colour jitter, JPEG noise,
lighting noise). Frozen-feature protocols then run the network on clean images, whose activation
statistics differ, so each ReLU clips at the wrong place. Re-estimating the statistics on clean,
unlabelled images (an equal-weight average over the batches, not an exponential one) removes that
mismatch without touching a single weight. On our CPU-trained face ResNet-18 it lowered the
regression error of the hypercolumn on held-out training faces from 23.4 % to 19.9 % IOD (see
``docs/notes/2026-12-benchmarks.md``, "The built-in face model").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

__all__ = ["recalibrate_batchnorm"]


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, batches: Iterable[Tensor], *, forward: Callable[[Tensor], object] | None = None
) -> int:
    """Replace the running statistics of every BatchNorm layer of ``model`` by their average over ``batches``.

    Each layer's running mean becomes the average of its per-batch means (the mean over all images
    when the batches have equal sizes) and its running variance the average of the per-batch
    (unbiased) variances, PyTorch's ``momentum=None`` cumulative average.

    Weights and the affine BN parameters are unchanged; the model's train/eval modes are restored.

    Args:
        model: a module containing ``nn.BatchNorm*`` layers (e.g. a :class:`~contrastive_landmarks.Backbone`).
        batches: ``(B, 3, H, W)`` input batches, already normalised the way ``model`` expects them
            (for a backbone: ``backbone.normalize(images)``).
        forward: how to run a batch (default ``model(batch)``).

    Returns:
        The number of images seen.

    Raises:
        ValueError: ``model`` has no BatchNorm layer, or ``batches`` is empty.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError(f"{type(model).__name__} has no BatchNorm layer to recalibrate")
    modes = [(m, m.training) for m in model.modules()]
    momenta = [m.momentum for m in norms]
    run = forward or model
    seen = 0
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: every batch counts the same
            m.train()
        for batch in batches:
            if not isinstance(batch, Tensor) or batch.ndim != 4:
                raise ValueError(f"batches must be (B, C, H, W) tensors, got {getattr(batch, 'shape', type(batch))}")
            run(batch)
            seen += batch.shape[0]
        if seen == 0:
            raise ValueError("batches is empty: give at least one batch of images")
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        for m, training in modes:
            m.train(training)
    return seen
