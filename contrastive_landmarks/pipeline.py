"""A pretrained bundle: backbone + hypercolumn, optionally a spatial projector and a landmark regressor.

This is what the built-in models and the ``torch.hub`` entry points return. On disk it is one model
directory (``config.json``, ``model.safetensors`` with the backbone, a file per head, ``README.md``), which
:mod:`contrastive_landmarks.model_directory` writes and reads (:meth:`LandmarkModel.save_pretrained`,
:meth:`LandmarkModel.from_pretrained`).

Inputs: :meth:`LandmarkModel.detect` and :meth:`LandmarkModel.descriptors` take images of any size,
a ``(B, 3, H, W)`` tensor or a list of ``(3, H_i, W_i)`` tensors, float in ``[0, 1]`` (any float
dtype) or ``uint8`` (see :mod:`contrastive_landmarks.check`). Each image is resized (bilinear, with
antialiasing) to the model's recorded input size (``config["input_size"]``, e.g. 64x64 for
``resnet18-faces``), and landmarks come back in each input's own pixel frame (pixel centres at
integers, :mod:`contrastive_landmarks.coords`): ``x_in = (x_model + 0.5) W / w_model - 0.5``. Images
smaller than the input size are upscaled; below half of it a warning says accuracy will suffer.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import Backbone
from .calibration import LikelihoodCalibration
from .check import as_image_list, content_problem, to_float_images
from .coords import normalized_to_pixels
from .framing import Framing
from .hypercolumn import Hypercolumn, head_maps, hypercolumn
from .pose_relations import PoseRelations
from .regression import Regression, landmark_scores, regress

#: Inputs with a side below this fraction of the model's input size trigger a warning (they are upscaled).
SMALL_INPUT_FRACTION = 0.5

__all__ = ["LandmarkModel", "Regression", "landmark_scores", "regress"]


class LandmarkModel(nn.Module):
    """Hypercolumn features, optional projected descriptors, optional landmark predictions.

    Args:
        hypercolumn: the frozen feature extractor.
        projector: a :class:`~contrastive_landmarks.SpatialProjector` on the hypercolumn, or ``None``.
        regressor: a :class:`~contrastive_landmarks.LandmarkRegressor`, or ``None``.
        regressor_input: ``"projector"`` or ``"hypercolumn"``: the features the regressor was fitted on.
        landmark_names: names of the regressor's landmarks, in order.
        framing: how :meth:`detect` frames each image (:class:`~contrastive_landmarks.framing.Framing`, what
            :func:`~contrastive_landmarks.train.finetune` trains): the letterboxed whole frame, then (two stages)
            a square crop around the first pass's points; ``None``: each image resized to :attr:`input_size`.
        calibration: a :class:`~contrastive_landmarks.calibration.LikelihoodCalibration` that
            ``detect(..., return_scores=True)`` applies to the raw scores (:func:`landmark_scores`), making them
            ``P(error <= radius)``; ``None``: the raw scores (models saved before calibrations existed).
        relations: :class:`~contrastive_landmarks.pose_relations.PoseRelations` that refine each pass's landmarks
            (learned in the normalised frame of a model's one pass, so only for models without a second stage);
            ``None``: the regressor's landmarks as they are (models saved before relations existed).

    Shape:
        - :meth:`descriptors`: ``(B, 3, H, W)`` images in ``[0, 1]`` (or a list of ``(3, H_i, W_i)``)
          -> ``(B, d, S, S)`` on the model's grid.
        - :meth:`forward` / :meth:`detect`: ``(B, 3, H, W)`` images in ``[0, 1]`` (or a list of
          ``(3, H_i, W_i)``) -> ``(B, N, 2)`` ``(x, y)`` pixels, each in its own image's frame.

    Images of any size are resized to :attr:`input_size` first (see the module docs).
    """

    def __init__(
        self,
        hypercolumn: Hypercolumn,
        projector: nn.Module | None = None,
        regressor: nn.Module | None = None,
        *,
        regressor_input: str = "projector",
        landmark_names: Sequence[str] = (),
        framing: Framing | None = None,
        calibration: LikelihoodCalibration | None = None,
        relations: PoseRelations | None = None,
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
        if framing is not None and (self.input_size is None or self.input_size[0] != self.input_size[1]):
            raise ValueError(f"a framed model needs a square input_size, got {self.input_size}")
        self.framing = framing
        self.calibration = calibration
        if relations is not None:
            if regressor is None or relations.num_landmarks != getattr(regressor, "num_landmarks", None):
                raise ValueError("relations need a landmark regressor with as many landmarks as they relate")
            if framing is not None and framing.stages == 2:
                raise ValueError("relations are learned in the frame of a one-pass model; this one has two stages")
        self.relations = relations

    @property
    def calibration(self) -> LikelihoodCalibration | None:
        """The likelihood calibration ``detect(..., return_scores=True)`` applies (``None``: raw scores)."""
        return self._calibration

    @calibration.setter
    def calibration(self, calibration: LikelihoodCalibration | None) -> None:
        if calibration is not None:
            if not isinstance(calibration, LikelihoodCalibration):
                raise TypeError(
                    f"calibration must be a LikelihoodCalibration or None, got {type(calibration).__name__}"
                )
            if self.regressor is None or calibration.num_landmarks != self.regressor.num_landmarks:
                have = "no regressor" if self.regressor is None else f"{self.regressor.num_landmarks} landmarks"
                raise ValueError(
                    f"a calibration of {calibration.num_landmarks} landmarks does not fit a model with {have}"
                )
        self._calibration = calibration

    @property
    def backbone(self) -> Backbone:
        return self.hypercolumn.backbone

    @property
    def input_size(self) -> tuple[int, int] | None:
        """``(H, W)`` every input is resized to (the backbone's recorded training size; ``None``: no resizing)."""
        return self.backbone.input_size

    def _size(self, images: Tensor) -> tuple[int, int]:
        return self.hypercolumn.output_size(images)

    def _prepare(self, checked: Tensor | list[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Images resized to the model's input and each input's ``(H, W)``.

        Args:
            checked: ``(B, 3, H, W)`` or a list of ``(3, H_i, W_i)`` images, float in ``[0, 1]`` (any
                float dtype) or ``uint8``, as :func:`~contrastive_landmarks.check.as_image_list` returns them (the
                public entries check their input once; the values are checked here, as they are converted).

        Returns:
            ``(B, 3, h, w)`` ``[0, 1]`` images (for :meth:`Hypercolumn.image_stage_maps`) in the backbone's
            dtype at :attr:`input_size`
            (or at the inputs' common size when the model records none), and the ``B`` input sizes.
        """
        dtype, target = self.backbone.dtype, self.input_size
        if isinstance(checked, Tensor):
            size = (int(checked.shape[-2]), int(checked.shape[-1]))
            sizes = [size] * checked.shape[0]  # [] for an empty batch, which gives (0, N, 2) points
            parts = [(to_float_images(checked, dtype, "images"), size, "images")]
        else:
            sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in checked]
            parts = [
                (to_float_images(image, dtype, f"images[{i}]")[None], sizes[i], f"images[{i}]")
                for i, image in enumerate(checked)
            ]
            if target is None and len(set(sizes)) > 1:
                raise ValueError(
                    f"images have different sizes {sorted(set(sizes))} and the model records no "
                    "input_size to resize them to; resize them to one size first"
                )
        batch = []
        for part, size, name in parts:
            if target is not None and size != tuple(target):
                if min(size[0] / target[0], size[1] / target[1]) < SMALL_INPUT_FRACTION:
                    warnings.warn(
                        f"{name} is {size[1]}x{size[0]} pixels, less than half the model's input size "
                        f"{target[1]}x{target[0]}: it is upscaled, and the landmarks will be less accurate",
                        UserWarning,
                        stacklevel=2,
                    )
                part = F.interpolate(part, size=tuple(target), mode="bilinear", align_corners=False, antialias=True)
            batch.append(part)
        merged = batch[0] if len(batch) == 1 else torch.cat(batch)
        return merged, sizes

    def _features(self, images: Tensor | Sequence[Tensor]) -> tuple[list[Tensor], tuple[int, int], list]:
        batch, sizes = self._prepare(as_image_list(images, "images"))
        return self.hypercolumn.image_stage_maps(batch), self._size(batch), sizes

    def descriptors(self, images: Tensor | Sequence[Tensor]) -> Tensor:
        """Dense descriptors: projected if a projector is present, else the hypercolumn.

        Args:
            images: ``(B, 3, H, W)`` or a list of ``(3, H_i, W_i)`` images in ``[0, 1]`` (or ``uint8``),
                any size (resized to :attr:`input_size`).

        Returns:
            ``(B, d, S_h, S_w)`` on the model's grid, which covers each input image whole (cell
            ``(i, j)`` is centred at ``((j + 0.5) W / S_w - 0.5, (i + 0.5) H / S_h - 0.5)`` of an ``H x W`` input).
        """
        maps, size, _ = self._features(images)
        if self.projector is None:
            return hypercolumn(maps, size, normalize=self.hypercolumn.normalize)
        return self.projector(head_maps(maps, size, normalize=self.hypercolumn.normalize), size=size)

    def forward(self, images: Tensor | Sequence[Tensor]) -> Tensor:
        """Landmarks, ``(B, N, 2)`` ``(x, y)`` pixels of each input image (any size; see the module docs)."""
        return self.regression(images).points

    def _to_pixels(self, normalized: Tensor, sizes: list[tuple[int, int]]) -> Tensor:
        if not sizes:  # an empty batch
            return normalized.clone()
        if len(set(sizes)) == 1:
            return normalized_to_pixels(normalized, sizes[0])
        return torch.stack([normalized_to_pixels(points, hw) for points, hw in zip(normalized, sizes)])

    def regression(self, images: Tensor | Sequence[Tensor]) -> Regression:
        """What the regressor computes on the way to the landmarks: probabilities, intermediate points, landmarks.

        The same computation as :meth:`forward` (``points`` are identical), kept apart so that
        confidences (:func:`landmark_scores`) can be read off the heatmaps. Needs a
        :class:`~contrastive_landmarks.LandmarkRegressor`.

        Returns:
            a :class:`Regression`.
        """
        return self._regression(as_image_list(images, "images"))

    def _regression(self, checked: Tensor | list[Tensor]) -> Regression:
        """:meth:`regression` of checked images (:func:`~contrastive_landmarks.check.as_image_list`)."""
        if self.regressor is None:
            raise RuntimeError("this model has no landmark regressor; use .descriptors() or fit one")
        empty = isinstance(checked, Tensor) and checked.shape[0] == 0
        if self.framing is not None and not empty:  # an empty batch has no frames to crop
            return self._framed_regression(checked)
        batch, sizes = self._prepare(checked)
        return self._regress(batch, lambda normalized: self._to_pixels(normalized, sizes))

    def _regress(self, batch: Tensor, to_pixels: Callable[[Tensor], Tensor]) -> Regression:
        """:func:`regress` with this model's heads on a ``[0, 1]`` batch at the input size."""
        projector = self.projector if self.regressor_input == "projector" else None
        result = regress(self.hypercolumn, self.regressor, batch, projector=projector, to_pixels=to_pixels)
        return self._related(result, to_pixels)

    def _related(self, result: Regression, to_pixels: Callable[[Tensor], Tensor]) -> Regression:
        """``result`` with its landmarks through :attr:`relations` (unchanged without), in pixels by ``to_pixels``."""
        if self.relations is None or not len(self.relations):
            return result
        scores = landmark_scores(result)
        normalized = self.relations(result.normalized, scores)
        return result._replace(normalized=normalized, points=to_pixels(normalized), scores=scores)

    def _frames(self, checked: Tensor | list[Tensor]) -> tuple[list[Tensor], list[tuple[int, int]]]:
        """Float32 frames ``[(3, H_i, W_i)]`` of checked images (values checked here) and their ``(H, W)``."""
        frames = [to_float_images(image, torch.float32, f"images[{i}]") for i, image in enumerate(checked)]
        return frames, [(int(f.shape[-2]), int(f.shape[-1])) for f in frames]

    def _crop_side(self) -> int:
        size = self.input_size
        if size is None or size[0] != size[1]:
            raise ValueError(f"crops need a model with a square input_size, this one has {size}")
        return int(size[0])

    def _look(self, frames: list[Tensor], boxes: Tensor) -> Regression:
        """One pass: the ``(B, 4)`` boxes of the frames cropped to the input size, regressed, mapped back to frames."""
        from .framing import crop_images, uncrop_points

        side = self._crop_side()
        batch = crop_images(frames, boxes, side).to(self.backbone.dtype)
        return self._regress(batch, lambda xy: uncrop_points(normalized_to_pixels(xy, (side, side)), boxes, side))

    def _framed_regression(self, checked: Tensor | list[Tensor]) -> Regression:
        """Crops of each frame (letterboxed whole, then around the points found) through :meth:`_regress`."""
        from .framing import frame_boxes

        frames, sizes = self._frames(checked)
        result = self._look(frames, frame_boxes(sizes, device=frames[0].device))
        if self.framing.stages == 2:
            result = self._look(frames, self.boxes_around(result.points, sizes))
        return result

    def boxes_around(self, points: Tensor, sizes: Sequence[tuple[int, int]], visible: Tensor | None = None) -> Tensor:
        """The second pass's crop boxes around ``points``, by this model's framing rule (margin, smallest and largest
        side).

        What :meth:`detect` does between its two passes; a video tracker calls it on the previous frame's points
        and gives the boxes to :meth:`detect_in_boxes`.

        Args:
            points: ``(B, N, 2)`` pixels of each frame.
            sizes: each frame's ``(H, W)``.
            visible: ``(B, N)`` bool, the points to frame (``None``: all finite ones); a frame with none gets the
                whole frame, letterboxed.

        Returns:
            ``(B, 4)`` ``(cx, cy, side, angle)`` frame pixels (:func:`~contrastive_landmarks.framing.keypoint_boxes`).
        """
        return (self.framing or Framing()).boxes_around(points, visible, sizes)

    @overload
    def detect_in_boxes(
        self, images: Tensor | Sequence[Tensor], boxes: Tensor, *, return_scores: Literal[False] = ...
    ) -> Tensor: ...

    @overload
    def detect_in_boxes(
        self, images: Tensor | Sequence[Tensor], boxes: Tensor, *, return_scores: Literal[True]
    ) -> tuple[Tensor, Tensor]: ...

    @torch.no_grad()
    def detect_in_boxes(
        self, images: Tensor | Sequence[Tensor], boxes: Tensor, *, return_scores: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """One pass on given crops: each frame's box cropped to :attr:`input_size`, landmarks back in frame pixels.

        :meth:`detect` is this on the letterboxed whole frame (:func:`~contrastive_landmarks.framing.frame_boxes`)
        and, for a two-stage model, again on :meth:`boxes_around` its points; a caller that knows where the animal
        is (the previous video frame's points through :meth:`boxes_around`) skips the first pass. The same code runs
        in both, so ``detect_in_boxes(images, boxes)`` with the boxes :meth:`detect` would use gives its output
        exactly.

        Args:
            images: ``(B, 3, H, W)`` or a list of ``(3, H_i, W_i)`` frames in ``[0, 1]`` (or ``uint8``).
            boxes: ``(B, 4)`` ``(cx, cy, side, angle)`` in each frame's pixels (angle in degrees; see
                :mod:`contrastive_landmarks.framing`); outside the frame reads as zeros.
            return_scores: also return the likelihood ``(B, N)``, as :meth:`detect` does.

        Returns:
            ``points`` ``(B, N, 2)`` frame pixels, or ``(points, scores)``.
        """
        if self.regressor is None:
            raise RuntimeError("this model has no landmark regressor; use .descriptors() or fit one")
        self.eval()
        frames, _ = self._frames(as_image_list(images, "images"))
        if not isinstance(boxes, Tensor) or boxes.ndim != 2 or tuple(boxes.shape) != (len(frames), 4):
            shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
            raise ValueError(f"boxes must be a ({len(frames)}, 4) tensor of (cx, cy, side, angle), got {shape}")
        if not bool(torch.isfinite(boxes).all()) or not bool((boxes[:, 2] > 0).all()):
            raise ValueError("boxes must be finite with a positive side")
        if not frames:
            result = self._regression(torch.zeros(0, 3, *(self.input_size or (1, 1))))
        else:
            result = self._look(frames, boxes.to(device=frames[0].device, dtype=torch.float32))
        if not return_scores:
            return result.points
        return result.points, self._likelihood(result)

    def _likelihood(self, result: Regression) -> Tensor:
        """The scores :meth:`detect` returns: :func:`landmark_scores`, through :attr:`calibration` when there is one."""
        scores = landmark_scores(result)
        return scores if self.calibration is None else self.calibration(scores)

    @overload
    def detect(
        self, images: Tensor | Sequence[Tensor], *, return_scores: Literal[False] = ..., check_content: bool = ...
    ) -> Tensor: ...

    @overload
    def detect(
        self, images: Tensor | Sequence[Tensor], *, return_scores: Literal[True], check_content: bool = ...
    ) -> tuple[Tensor, Tensor]: ...

    @torch.no_grad()
    def detect(
        self, images: Tensor | Sequence[Tensor], *, return_scores: bool = False, check_content: bool = True
    ) -> Tensor | tuple[Tensor, Tensor]:
        """:meth:`forward` in eval mode without gradients: ``(B, N, 2)`` pixels of each input image.

        Args:
            images: see :meth:`forward`.
            return_scores: also return each landmark's confidence, ``(B, N)`` in ``[0, 1]``: with a
                :attr:`calibration`, the likelihood ``P(error <= radius)`` it was fitted for
                (:mod:`contrastive_landmarks.calibration`); without one, the raw :func:`landmark_scores` (high on
                faces, low on noise, blank or scrambled images; a relative scale).
            check_content: warn about inputs that cannot show an object (below); ``False`` for a caller that
                checks them itself (the ``predict`` command does, to name files rather than batch indices).

        Returns:
            ``points`` or ``(points, scores)``.

        Warns:
            UserWarning: naming the inputs that cannot show an object (blank, noise; see
                :func:`~contrastive_landmarks.check.content_problem`): their points are guesses.
        """
        self.eval()
        checked = as_image_list(images, "images")  # the one check of the input; the steps below take it as it is
        if check_content:
            _warn_unusable(checked)
        result = self._regression(checked)
        if not return_scores:
            return result.points
        return result.points, self._likelihood(result)

    # -- persistence (contrastive_landmarks.model_directory) --------------------------------------
    @property
    def config(self) -> dict:
        """JSON-serialisable description (``config.json``); the heads' ``size`` is the hypercolumn's grid."""
        from .model_directory import model_config

        return model_config(self)

    def save_pretrained(
        self, directory: str | os.PathLike, *, card: str | None = None, dtype: torch.dtype | None = None
    ) -> Path:
        """Write the model directory (:func:`~contrastive_landmarks.model_directory.save_model`)."""
        from .model_directory import save_model

        return save_model(self, directory, card=card, dtype=dtype)

    @classmethod
    def from_config(cls, config: dict) -> LandmarkModel:
        """The model a ``config.json`` describes, randomly initialised (no weights are read)."""
        from .model_directory import model_from_config

        return model_from_config(config, cls)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **hub_kwargs) -> LandmarkModel:
        """Load a bundle from a registry name, a local directory or a Hub repo id (strictly).

        The directory's ``config.json`` is read once and gives everything: architecture, stages,
        preprocessing (mean, std, input size), the hypercolumn grid and the heads
        (:func:`~contrastive_landmarks.model_directory.load_model`).
        """
        from .model_directory import load_model

        return load_model(name_or_path, cls, **hub_kwargs)


def _warn_unusable(images: Tensor | Sequence[Tensor]) -> None:
    """One warning naming every image :func:`content_problem` rejects (checked, ``(B, 3, H, W)`` or a list)."""
    problems = [(i, content_problem(image)) for i, image in enumerate(images)]
    problems = [(i, why) for i, why in problems if why]
    if problems:
        listed = ", ".join(f"images[{i}] is {why}" for i, why in problems[:5])
        more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
        warnings.warn(f"{listed}{more}: their points are guesses, not landmarks", UserWarning, stacklevel=4)
