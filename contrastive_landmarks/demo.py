"""The ``demo`` subcommand: detect face landmarks and match them into another view of a face, as pictures.

``contrastive-landmarks demo --out demo`` loads the built-in face model (``resnet18-faces``, shipped
inside the package, no network), detects its 5 landmarks on a few face images and carries the
landmarks of the first image into the second one by descriptor matching, then writes
``landmarks.png`` and ``matches.png``.

Without ``--images`` it uses the one public-domain portrait that ships with matplotlib (Grace
Hopper, ``grace_hopper.jpg``), in four views: the face crop, its mirror image and two TPS-warped
copies (for the warped copies the true position of every matched point is known exactly, so the
match picture colours each match by whether it landed within 5 % of the image width of the truth).
With ``--images a.jpg b.jpg ...`` (or a folder: its images, sorted by name) it uses your photos: each
is centre-cropped to a square and resized; the model expects a face framed as its training faces: the
eyes at about 27 % of the height, about 40 % of the width apart (as the AFLW test faces after the paper's border crop).

Each detected landmark is labelled with its confidence (``detect(..., return_scores=True)``, see
:func:`contrastive_landmarks.pipeline.landmark_scores`); fainter markers are less confident. The
output folder and the images are checked before the model is loaded, so a wrong path fails at once.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DEFAULT_MODEL",
    "add_demo_parser",
    "check_images",
    "check_out_dir",
    "example_faces",
    "load_image",
    "run_demo",
]

DEFAULT_MODEL = "resnet18-faces"
# Face box of grace_hopper.jpg (512 x 600), (left, top, side), framed as the model's inputs are: an
# MTFL test crop (box 124, 106, 278 here) after the paper's border crop (136 -> 96, the central 70.6 %).
_HOPPER_BOX = (165, 147, 196)
_DISPLAY = 256  # side of the pictures' panels, in pixels


def load_image(path: str | os.PathLike, box: tuple[int, int, int] | None = None) -> Tensor:
    """An RGB image as ``(3, S, S)`` floats in ``[0, 1]``: ``box = (left, top, side)`` or the centre square."""
    from .data.base import load_image as decode

    image = decode(path)
    height, width = image.shape[-2:]
    if box is None:
        side = min(width, height)
        box = ((width - side) // 2, (height - side) // 2, side)
    left, top, side = box
    return image[:, top : top + side, left : left + side]


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` (and its parents) and make sure a file can be written in it.

    Raises:
        NotADirectoryError: ``out_dir`` or one of its parents is a file.
        PermissionError: the folder cannot be created or written to.
    """
    out = Path(out_dir)
    blocker = next((parent for parent in (out, *out.parents) if parent.exists() and not parent.is_dir()), None)
    if blocker is not None:
        what = "is a file" if blocker == out else f"is below {blocker}, which is a file"
        raise NotADirectoryError(f"output folder {out} {what}, not a folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise PermissionError(
            f"cannot write to the output folder {out} ({error.strerror or error}); choose another --out"
        ) from error
    return out


def check_images(images: Sequence[str | os.PathLike]) -> list[Path]:
    """The image files ``images`` names, each checked to be a readable image; a folder gives its images, sorted.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: a file is not an image Pillow can read, or a folder holds no images.
    """
    from PIL import Image, UnidentifiedImageError

    from .data.folder import IMAGE_EXTENSIONS

    files: list[Path] = []
    for name in images:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ValueError(
                    f"folder {path} has no images in it ({', '.join(IMAGE_EXTENSIONS)}); pass image "
                    "files or a folder with images"
                )
            files.extend(found)
        elif not path.exists():
            raise FileNotFoundError(f"image not found: {path}")
        else:
            files.append(path)
    for path in files:
        try:
            with Image.open(path) as image:
                image.verify()
        except PermissionError as error:
            raise PermissionError(f"cannot read image {path}: {error.strerror or error}") from error
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise ValueError(f"{path} is not a readable image ({type(error).__name__}: {error})") from error
    return files


def _hopper_path() -> Path:
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - matplotlib is in the viz extra
        raise ImportError('the demo needs the [viz] extra: pip install "contrastive-landmarks[viz]"') from error
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():  # pragma: no cover
        raise FileNotFoundError(f"matplotlib's sample image is missing: {path}; pass --images instead")
    return path


def _resize(images: Tensor, side: int) -> Tensor:
    return F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def example_faces(side: int = _DISPLAY, seed: int = 0) -> tuple[Tensor, list[str]]:
    """The built-in example: four ``(3, side, side)`` views of the matplotlib portrait.

    Returns:
        ``(4, 3, side, side)`` images in ``[0, 1]`` and their titles.
    """
    from .tps import TPSParams, make_pair

    face = _resize(load_image(_hopper_path(), _HOPPER_BOX)[None], side)
    generator = torch.Generator().manual_seed(seed)
    warped = make_pair(
        face.expand(2, -1, -1, -1), params=TPSParams.matching(), generator=generator, padding_mode="border"
    ).image1
    views = torch.cat([face, face.flip(-1), warped.clamp(0, 1)])
    return views, ["portrait", "mirrored", "TPS-warped 1", "TPS-warped 2"]


class _Descriptors(torch.nn.Module):
    """``[0, 1]`` images -> the model's dense descriptors (what :func:`~contrastive_landmarks.match` needs)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model.descriptors(images)


@torch.no_grad()
def run_demo(
    out_dir: str | os.PathLike,
    *,
    model: str | os.PathLike = DEFAULT_MODEL,
    images: Sequence[str | os.PathLike] | None = None,
    seed: int = 0,
) -> dict:
    """Detect landmarks on a few faces, match the first face's landmarks into the second, save pictures.

    Args:
        out_dir: folder for ``landmarks.png`` and ``matches.png`` (created).
        model: a registry name, a model directory or a Hub repo id of a
            :class:`~contrastive_landmarks.LandmarkModel` with a regressor.
        images: face photos (at least two); default the built-in example (:func:`example_faces`).
        seed: seed of the example's warps.

    Returns:
        ``{"landmarks": Path, "matches": Path, "points": (B, N, 2) detected pixels in the
        displayed images, "scores": (B, N) their confidences, "matched": (N, 2) matches in image 2,
        "error": mean match error in pixels or None}``.

    Raises:
        FileNotFoundError, NotADirectoryError, PermissionError, ValueError: a missing or unreadable
            image, too few images, an output folder that cannot be written; all checked before the
            model is loaded.
    """
    from . import viz
    from .matching import match
    from .pipeline import LandmarkModel
    from .tps import TPSParams, make_pair

    files = None if images is None else check_images(images)
    if files is not None and len(files) < 2:
        raise ValueError(
            f"give at least two images to match between, got {len(files)}" + (f" ({files[0]})" if files else "")
        )
    out = check_out_dir(out_dir)
    bundle = LandmarkModel.from_pretrained(model)
    if bundle.regressor is None:
        raise ValueError(f"{model}: the demo needs a model with a landmark regressor")
    side = int((bundle.input_size or (96, 96))[0])
    truth = None
    if files is None:
        display, titles = example_faces(_DISPLAY, seed)
    else:
        display = torch.stack([_resize(load_image(p)[None], _DISPLAY)[0] for p in files])
        titles = [p.name for p in files]
    scale = _DISPLAY / side
    # (B, N, 2) in the displayed images' pixels (detect resizes to the model's), (B, N) confidences
    shown, scores = bundle.detect(display, return_scores=True)
    points = (shown + 0.5) / scale - 0.5  # the same points in model-input pixels
    landmarks_path, matches_path = out / "landmarks.png", out / "matches.png"
    titles = [f"{title} (confidence {float(s.mean()):.2f})" for title, s in zip(titles, scores)]
    figure = viz.plot_landmarks(display, pred=shown, titles=titles, ncols=len(display), panel=2.5)
    _label_scores(figure, shown, scores)
    figure.savefig(landmarks_path, dpi=figure.dpi, format="png")

    if files is None:
        # match into a warped copy whose true landmark positions are known exactly (the warp is drawn
        # in normalised coordinates, so it is applied at display resolution and the views downsized)
        pair = make_pair(
            display[:1],
            shown[:1],
            TPSParams.matching(),
            padding_mode="border",
            generator=torch.Generator().manual_seed(seed + 1),
        )
        shown_source, shown_target = pair.image2.clamp(0, 1)[0], pair.image1.clamp(0, 1)[0]
        source_points = (pair.keypoints2 + 0.5) / scale - 0.5
        truth = (pair.keypoints1 + 0.5) / scale - 0.5
    else:
        shown_source, shown_target = display[0], display[1]
        source_points = points[:1]
    source, target = _resize(shown_source[None], side), _resize(shown_target[None], side)
    found = match(_Descriptors(bundle), source, source_points.clamp(-0.5, side - 0.5), target, similarity="cosine")
    matched = found.points[0]
    error = None if truth is None else float((matched - truth[0]).norm(dim=-1).mean())
    viz.plot_matches(
        shown_source,
        (source_points[0] + 0.5) * scale - 0.5,
        shown_target,
        (matched + 0.5) * scale - 0.5,
        target_b=None if truth is None else (truth[0] + 0.5) * scale - 0.5,
        path=matches_path,
    )
    return {
        "landmarks": landmarks_path,
        "matches": matches_path,
        "points": shown,
        "scores": scores,
        "matched": matched,
        "error": error,
    }


def _label_scores(figure, points: Tensor, scores: Tensor) -> None:
    """Each landmark's confidence next to it; markers fade with the score (relative to the best landmark shown)."""
    best = float(scores.max()) or 1.0
    for ax, image_points, image_scores in zip(figure.axes, points, scores):
        for (x, y), score in zip(image_points.tolist(), image_scores.tolist()):
            strength = 0.25 + 0.75 * max(0.0, min(1.0, score / best))
            ax.scatter([x], [y], s=60, facecolors="none", edgecolors="#ff7f0e", linewidths=1.5, alpha=strength)
            ax.annotate(
                f"{score:.2f}",
                (x, y),
                xytext=(4, -4),
                textcoords="offset points",
                fontsize=6,
                color="white",
                alpha=strength,
                bbox={"boxstyle": "round,pad=0.15", "fc": "black", "ec": "none", "alpha": 0.5 * strength},
            )


def _run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_demo(args.out, model=args.model, images=args.images, seed=args.seed)
    print(f"wrote {result['landmarks']} and {result['matches']}")
    if result["error"] is not None:
        print(f"mean matching error on the warped copy: {result['error']:.2f} px (model input pixels)")
    return 0


def add_demo_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        description="Load the built-in face model, detect its landmarks on a few faces and match the first "
        "face's landmarks into the second; writes OUT/landmarks.png and OUT/matches.png. No network needed.",
    )
    parser.add_argument("--out", default="demo", help="output folder (default: demo)")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"registry name, model directory or Hub repo id (default: {DEFAULT_MODEL}, built in)",
    )
    parser.add_argument(
        "--images",
        nargs="+",
        default=None,
        metavar="IMAGE",
        help="your face photos, or folders of them (two or more images; each is centre-cropped to "
        "a square); default: the built-in example (matplotlib's public-domain portrait in four views)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the example's warps (default 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.set_defaults(func=_run)
    return parser
