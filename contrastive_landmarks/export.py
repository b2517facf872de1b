"""A :class:`~contrastive_landmarks.LandmarkModel` to ONNX: the network of one pass, and the framing written down.

:func:`export_onnx` writes three files (``docs/export.md`` shows how to run them):

- ``OUT.onnx``: one pass of the network. Input ``image`` ``(B, 3, S_h, S_w)``: RGB in ``[0, 1]`` at the model's
  :attr:`~contrastive_landmarks.LandmarkModel.input_size` (the graph applies the model's mean and std itself).
  Outputs ``points`` ``(B, N, 2)``, ``(x, y)`` pixels of that input (pixel centres at integers), and ``scores``
  ``(B, N)``, what ``detect(..., return_scores=True)`` returns: the calibrated likelihood when the model has one
  (:mod:`contrastive_landmarks.calibration`), else the raw score. The batch is dynamic.
- ``OUT.json``: the sidecar (:func:`sidecar`): input, outputs, and how :meth:`LandmarkModel.detect` frames a frame
  (letterboxed whole frame, then a crop around the first pass's points, or the frame resized) with every number that
  takes: margin, smallest side, the antialiasing step.
- ``OUT_framing.py`` (``reference=True``): :mod:`contrastive_landmarks.export_reference` copied, a numpy-only
  implementation of that sidecar around the graph (onnxruntime runs it), which the tests check against
  :meth:`LandmarkModel.detect`.

The graph is made with PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): it needs
``onnx`` only (not ``onnxscript``), works offline, and handles everything one pass computes. Install the ``onnx``
extra (``onnx``, ``onnxruntime``) to export and to run the result.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .coords import normalized_to_pixels
from .hypercolumn import head_maps
from .ops import upsample_sum_reference
from .pipeline import LandmarkModel, Regression

__all__ = [
    "ANTIALIAS",
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "SIDECAR_FORMAT",
    "OnePass",
    "compare_with_detect",
    "export_onnx",
    "sample_frames",
    "sidecar",
]

#: ONNX opset of the exported graph (onnxruntime >= 1.12 runs it).
DEFAULT_OPSET = 17
#: The oldest opset the graph exports to (its einsum needs 12).
MIN_OPSET = 12
#: The sidecar's format name and version.
SIDECAR_FORMAT = "contrastive_landmarks.onnx/1"
#: How :func:`~contrastive_landmarks.framing.crop_images` antialiases a crop whose pixels are much larger than the
#: frame's: at most ``max_step`` frame pixels per crop pixel, the frame resized first when that scale is below
#: ``below`` (the numbers it uses; ``tests/test_export.py`` checks the reference against it on large frames).
ANTIALIAS = {"max_step": 2.0, "below": 0.75}


def _project(maps: list[Tensor], weight: Tensor, bias: Tensor | None, size: tuple[int, int]) -> Tensor:
    """A 1x1 head on the hypercolumn of ``maps`` ``[(B, C_s, h_s, w_s)]`` -> ``(B, d, S_h, S_w)``, in ONNX-able ops.

    :func:`~contrastive_landmarks.ops.project_stages`' arithmetic (each stage projected at its own resolution, then
    upsampled bilinearly and summed) through :func:`~contrastive_landmarks.ops.upsample_sum_reference` rather than
    its custom op, which no exporter knows.
    """
    parts = torch.split(weight, [m.shape[1] for m in maps], dim=1)
    projected = [F.conv2d(m, w[:, :, None, None]) for m, w in zip(maps, parts)]
    return upsample_sum_reference(projected, size, bias)


class OnePass(nn.Module):
    """One pass of a :class:`~contrastive_landmarks.LandmarkModel` on a batch at its input size (what is exported).

    :meth:`LandmarkModel._regress` with the heads in plain ops (:func:`_project`), then the regressor's own decoding
    (:meth:`~contrastive_landmarks.LandmarkRegressor.decode_steps`, which traces with a dynamic batch) and its points
    in pixels of the input; the scores are the model's own (:func:`~contrastive_landmarks.pipeline.landmark_scores`,
    calibrated when the model has a calibration).

    Args:
        model: a model with a regressor, a recorded ``input_size`` and, if the regressor reads it, a linear projector.

    Shape:
        - Input: ``(B, 3, S_h, S_w)`` RGB in ``[0, 1]`` at the model's ``input_size``.
        - Output: ``points`` ``(B, N, 2)`` ``(x, y)`` pixels of the input; ``scores`` ``(B, N)``.
    """

    def __init__(self, model: LandmarkModel) -> None:
        super().__init__()
        if model.regressor is None:
            raise ValueError("only a model with a landmark regressor can be exported (this one has none)")
        if model.input_size is None:
            raise ValueError("only a model with a recorded input_size can be exported (config.json's input_size)")
        if model.regressor_input == "projector" and model.projector.mode != "linear":
            raise ValueError(f"a {model.projector.mode!r} projector cannot be exported; only 'linear' ones")
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        model, regressor = self.model, self.model.regressor
        size = model.hypercolumn.output_size(images)
        maps = head_maps(model.hypercolumn.image_stage_maps(images), size, normalize=model.hypercolumn.normalize)
        if model.regressor_input == "projector":
            projected = _project(maps, model.projector.weight, model.projector.bias, size)
            heatmaps = regressor.heatmaps(projected)  # (B, N*K, S_h, S_w)
        else:
            heatmaps = _project(maps, regressor.weight, None, size)
        normalized, intermediate, probs = regressor.decode_steps(heatmaps)  # the regressor's one decoding
        grid_shape = (-1, regressor.num_landmarks, regressor.heatmaps_per_landmark, *heatmaps.shape[-2:])
        size = (int(images.shape[-2]), int(images.shape[-1]))
        points = normalized_to_pixels(normalized, size)
        result = Regression(points, normalized, intermediate, heatmaps.reshape(grid_shape), probs.reshape(grid_shape))
        result = model._related(result, lambda xy: normalized_to_pixels(xy, size))  # the model's relations, if any
        return result.points, model._likelihood(result)


def sidecar(model: LandmarkModel, onnx_name: str = "model.onnx", opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """The JSON sidecar of an exported model: what the graph takes and gives, and how both passes frame a frame.

    The machine-readable fields (what :mod:`~contrastive_landmarks.export_reference` reads) are ``input.size``,
    ``framing.kind`` / ``stages`` / ``margin`` / ``min_fraction`` / ``max_fraction`` / ``antialias``; the ``rule``
    strings say the same in words, for a caller who writes their own.

    Args:
        model: the exported :class:`~contrastive_landmarks.LandmarkModel`.
        onnx_name: the graph's file name, recorded in the sidecar.
        opset: the graph's ONNX opset.
    """
    h, w = model.input_size
    framing = model.framing
    names = list(model.landmark_names) or [str(i) for i in range(model.regressor.num_landmarks)]
    calibration = model.calibration
    if framing is None:
        rules = {
            "pass": f"the frame resized to {w}x{h} (W x H) by antialiased bilinear interpolation (PyTorch "
            "F.interpolate(mode='bilinear', align_corners=False, antialias=True); skipped when the frame has that "
            f"size already); one pass; a point goes back to the frame as x = (x_in + 0.5) W / {w} - 0.5, "
            f"y = (y_in + 0.5) H / {h} - 0.5"
        }
    else:
        rules = {
            "box": "a crop is a box (cx, cy, side, angle) in frame pixels (float32): centre, side, angle in degrees "
            "(counter-clockwise on screen); passes use angle 0",
            "first_pass": "the whole frame letterboxed: cx = (W - 1) / 2, cy = (H - 1) / 2, side = max(H, W)",
            "second_pass": "over the first pass's N points (frame pixels, the finite ones): low = min, high = max "
            "per axis; cx, cy = (low + high) / 2; side = max(margin * max(high - low), min_fraction * max(H, W)), "
            "then, when max_fraction is not null, side = max(min(side, max_fraction * max(H, W)), max(high - low)). "
            "The second pass's points and scores are the result",
            "crop": f"crop pixel (u, v), u, v in 0..{w - 1}, reads the frame at R(l - side / 2) + (cx, cy) with "
            f"l = ((u + 0.5) side / {w}, (v + 0.5) side / {w}) and R = [[cos a, sin a], [-sin a, cos a]]: bilinear "
            "between the 4 nearest pixel centres, a neighbour outside the frame counting as 0 (PyTorch grid_sample, "
            "align_corners=False, padding_mode='zeros'), on [0, 1] RGB",
            "antialias": f"when s = min(1, max_step {w} / side) < below, the frame is first resized to "
            "(H', W') = (round(H s), round(W s)) (Python round, at least 1) by antialiased bilinear interpolation "
            "(PyTorch F.interpolate(..., antialias=True), PIL's triangle filter), and each position (x, y) the crop "
            "reads becomes ((x + 0.5) W' / W - 0.5, (y + 0.5) H' / H - 0.5) in the resized frame",
            "points_back": f"a point q of the crop goes back to the frame at R((q + 0.5) side / {w} - side / 2) + "
            "(cx, cy)",
        }
    return {
        "format": SIDECAR_FORMAT,
        "onnx": onnx_name,
        "opset": opset,
        "architecture": model.backbone.arch,
        "landmark_names": names,
        "input": {
            "name": "image",
            "shape": ["batch", 3, h, w],
            "dtype": "float32",
            "size": [h, w],
            "values": "RGB in [0, 1] (uint8 / 255), channels first; the graph normalises with mean and std itself",
            "mean": list(model.backbone.mean),
            "std": list(model.backbone.std),
        },
        "outputs": {
            "points": {"shape": ["batch", len(names), 2], "unit": "(x, y) pixels of the input image"},
            "scores": {
                "shape": ["batch", len(names)],
                "meaning": f"likelihood: P(error {calibration.describe()})"
                if calibration is not None
                else "raw confidence in [0, 1] (a relative scale, not a probability)",
            },
        },
        "coordinates": "(x, y) pixels with pixel centres at integers: the top-left pixel's centre is (0, 0) and a "
        "W-pixel-wide image spans [-0.5, W - 0.5]",
        "framing": {
            "kind": "resize" if framing is None else "crops",
            "stages": 1 if framing is None else framing.stages,
            "margin": None if framing is None else framing.margin,
            "min_fraction": None if framing is None else framing.min_fraction,
            "max_fraction": None if framing is None else framing.max_fraction,
            "antialias": None if framing is None else dict(ANTIALIAS),
            "rules": rules,
        },
        "likelihood": None if calibration is None else calibration.config,
    }


def export_onnx(
    model: LandmarkModel, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET, reference: bool = True
) -> Path:
    """Write ``model``'s one-pass network to ONNX, with its JSON sidecar (see the module docs).

    Args:
        model: a :class:`~contrastive_landmarks.LandmarkModel` with a regressor and an input size (a fine-tuned
            model, or a built-in one with a regressor such as ``resnet18-faces``); exported as a float32 CPU copy,
            the model itself is left as it is.
        path: the ``.onnx`` file to write; the sidecar goes beside it as ``.json`` (same stem).
        opset: the ONNX opset (:data:`DEFAULT_OPSET`; :data:`MIN_OPSET` or later).
        reference: also write ``<stem>_framing.py``, the numpy-only implementation of the sidecar
            (:mod:`contrastive_landmarks.export_reference`).

    Returns:
        the ``.onnx`` path.

    Raises:
        ValueError: a model without a regressor or input size, a path that is not ``.onnx``, an opset below
            :data:`MIN_OPSET`.
        FileNotFoundError: the folder of ``path`` does not exist.
        ImportError: ``onnx`` is not installed (the ``onnx`` extra).

    Example:
        >>> from contrastive_landmarks import LandmarkModel
        >>> from contrastive_landmarks.export import export_onnx
        >>> export_onnx(LandmarkModel.from_pretrained("resnet18-faces"), "faces.onnx")  # doctest: +SKIP
        PosixPath('faces.onnx')
    """
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"the ONNX file must end in .onnx, got {path}")
    if opset < MIN_OPSET:
        raise ValueError(f"the export needs ONNX opset {MIN_OPSET} or later, got {opset}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the folder {path.parent} for {path.name} does not exist")
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
    except ImportError as error:
        raise ImportError('ONNX export needs the [onnx] extra: pip install "contrastive-landmarks[onnx]"') from error
    one_pass = OnePass(copy.deepcopy(model).float().cpu().eval())
    example = torch.zeros(2, 3, *model.input_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the input checks' Python bools, shapes
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
        torch.onnx.export(
            one_pass,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["points", "scores"],
            opset_version=opset,
            dynamic_axes={"image": {0: "batch"}, "points": {0: "batch"}, "scores": {0: "batch"}},
            dynamo=False,
        )
    path.with_suffix(".json").write_text(json.dumps(sidecar(model, path.name, opset), indent=2) + "\n")
    if reference:
        from . import export_reference

        shutil.copyfile(export_reference.__file__, path.with_name(f"{path.stem}_framing.py"))
    return path


def sample_frames(sizes: Sequence[tuple[int, int]] = ((480, 640), (747, 832)), seed: int = 0) -> list[Tensor]:
    """Smooth random ``(3, H, W)`` frames in ``[0, 1]`` of the given ``(H, W)`` sizes, to check an export on.

    Coarse noise upsampled (bicubic), so that a crop resized to a model's input still holds structure.
    """
    generator = torch.Generator().manual_seed(seed)
    frames = []
    for h, w in sizes:
        coarse = torch.rand(1, 3, max(2, h // 16), max(2, w // 16), generator=generator)
        frames.append(F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0].clamp(0, 1))
    return frames


def compare_with_detect(
    model: LandmarkModel, path: str | os.PathLike, frames: Sequence[Tensor] | None = None
) -> dict[str, float]:
    """Run an export in onnxruntime with the numpy framing and compare with ``model.detect``.

    Args:
        model: the exported model.
        path: its ``.onnx`` file (the sidecar beside it).
        frames: ``(3, H_i, W_i)`` frames in ``[0, 1]`` or ``uint8`` (default: :func:`sample_frames`).

    Returns:
        ``{"max_px": ..., "mean_px": ..., "max_score": ...}``: the largest and mean distance between the points
        (per coordinate, pixels) and the largest score difference.
    """
    from .export_reference import ExportedModel

    frames = sample_frames() if frames is None else list(frames)
    points, scores = model.detect(frames, return_scores=True)
    exported_points, exported_scores = ExportedModel(path).detect([f.permute(1, 2, 0).cpu().numpy() for f in frames])
    gap = (torch.from_numpy(exported_points) - points.cpu()).abs()
    return {
        "max_px": float(gap.max()),
        "mean_px": float(gap.mean()),
        "max_score": float((torch.from_numpy(exported_scores) - scores.cpu()).abs().max()),
    }
