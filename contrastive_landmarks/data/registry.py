"""Datasets by name, with the paper's preprocessing: what the command line's ``--dataset`` options build."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DATASETS", "FRAME_DATASETS", "by_name", "frames_by_name"]

#: Formats :func:`frames_by_name` reads (a user's own keypoints).
FRAME_DATASETS = ("dlc", "csv", "coco")

DATASETS = ("mtfl", "aflw_in", "mafl", "aflw_m", "aflw_r", "300w", "cub", "csv", "coco", "dlc")


def by_name(
    name: str,
    root: str | None,
    split: str,
    *,
    image_size: int = 96,
    resize: int | None = None,
    face_crop: bool = False,
    jitter: bool = False,
    path: str | None = None,
    limit: int | None = None,
):
    """A dataset by name, with the paper's preprocessing to ``image_size`` (``resize``: stop at that square
    size instead, e.g. 136 for matching, which crops after warping).

    ``mtfl``: ``face_crop`` cuts the training faces to the test framing (from the source pixels, one resize),
    ``jitter`` adds the crop jitter that spans the test framing (a new draw at every read). ``aflw_in``: the
    in-domain AFLW protocol (:func:`~contrastive_landmarks.data.mtfl.aflw_split`; splits train / val / test
    of MTFL's AFLW faces, ``root`` the MTFL folder). ``dlc``: a DeepLabCut project (``root`` or ``path`` the
    project folder), split train / test by frame with :func:`~contrastive_landmarks.data.dlc.dlc_split` (seed 0,
    80/20) and letterboxed to ``image_size`` (aspect kept, ``sample["letterbox"]`` maps points back). ``csv`` and
    ``coco``: ``path`` (or ``root``) the annotation file; given both, ``root`` is the folder its image paths
    are relative to. They carry their point names and the left/right flip pairs found from them.
    """
    from . import transforms as T
    from .aflw import AFLWM, AFLWR
    from .base import KeypointSubset
    from .celeba import MAFL
    from .coco import COCOKeypoints
    from .csv_table import KeypointCSV
    from .cub import CUB
    from .dlc import DLCProject, dlc_split
    from .mtfl import AFLW_FRAMING_JITTER, MTFL, aflw_split
    from .threehundredw import ThreeHundredW

    def face(_unused=None):
        # square face crops: the paper's resize and border crop (136 -> 96; the border scales with the size)
        return T.Resize(resize) if resize is not None else T.aflw_transform(image_size)

    if name == "mtfl" and face_crop and split == "train" and resize is None:
        dataset = MTFL(root, split, face_crop=image_size, face_crop_jitter=AFLW_FRAMING_JITTER if jitter else (0, 0))
    elif name == "mtfl":
        dataset = MTFL(root, split, transform=face(None), face_crop=face_crop and split == "train")
    elif name == "aflw_in":
        dataset = KeypointSubset(MTFL(root, "test", transform=face(None)), aflw_split(split))
    elif name == "mafl":
        transform = T.Compose([T.Crop(30, 0, 178, 178), T.Resize(resize)]) if resize else T.celeba_transform(image_size)
        dataset = MAFL(root, split, transform=transform)
    elif name == "aflw_m":
        dataset = AFLWM(root, split, transform=face(None))
    elif name == "aflw_r":
        dataset = AFLWR(root, split, transform=face(None))
    elif name == "300w":
        dataset = ThreeHundredW(root, split, transform=T.threehundredw_transform(image_size))
    elif name == "cub":
        split_file = Path(root) / "splits" / f"{split}.txt" if path is None else Path(path)
        dataset = CUB(root, split_file, transform=T.squash_transform(resize or image_size))
    elif name == "csv":
        # with both, root is the folder the CSV's image paths are relative to (default: the CSV's folder)
        dataset = KeypointCSV(path or root, root if path else None, transform=T.Resize(resize or image_size))
    elif name == "coco":
        transform = T.BoxCrop(resize or image_size, scale=1.25)
        dataset = COCOKeypoints(path or root, root if path else None, transform=transform)
    elif name == "dlc":
        if root and path and Path(root).resolve() != Path(path).resolve():
            raise ValueError(f"dlc takes one project, as root or path; got root {root} and path {path}: pass only one")
        project = DLCProject(root or path, transform=T.Letterbox(resize or image_size))
        dataset = KeypointSubset(project, dlc_split(project, split))
    else:
        raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")
    if limit is not None and limit < len(dataset):
        return KeypointSubset(dataset, range(limit))
    return dataset


def frames_by_name(name: str, root: str | None, split: str = "all", *, path: str | None = None):
    """A user's labelled frames at their stored sizes (no resizing): what ``finetune`` and ``evaluate
    keypoints`` read.

    ``dlc``: a DeepLabCut project folder, or a labels file in its layout without a project (Lightning Pose's
    ``CollectedData.csv``), given as ``root`` or ``path``; ``split`` ``"train"`` / ``"test"`` is
    :func:`~contrastive_landmarks.data.dlc.dlc_split` (seed 0, 20 % test frames), ``"all"`` every frame.
    ``csv`` / ``coco``: the file is the split (``split`` must be ``"all"``; name the test file to evaluate on).
    """
    from .base import KeypointSubset
    from .coco import COCOKeypoints
    from .csv_table import KeypointCSV
    from .dlc import DLCProject, dlc_split

    source = path or root
    if source is None:
        raise ValueError("give the labelled frames: a DeepLabCut project, a CollectedData CSV, a CSV or a COCO file")
    image_root = root if path else None  # csv / coco: with both, root is the folder the image paths are relative to
    if name == "dlc":
        if root and path and Path(root).resolve() != Path(path).resolve():
            raise ValueError(f"dlc takes one project, as root or path; got root {root} and path {path}: pass only one")
        project = DLCProject(source)
        return project if split == "all" else KeypointSubset(project, dlc_split(project, split))
    if split != "all":
        raise ValueError(f"{name}: the file is the split (got split {split!r}); pass the test file itself to evaluate")
    if name == "csv":
        return KeypointCSV(source, image_root)
    if name == "coco":
        return COCOKeypoints(source, image_root)
    raise ValueError(f"unknown keypoint format {name!r}; choose from {FRAME_DATASETS}")
