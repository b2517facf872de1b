"""Readers: real fixtures where a format has them, small files in the authors' layouts where it has not."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from contrastive_landmarks.data import (
    AFLWM,
    AFLWR,
    CUB,
    MAFL,
    MTFL,
    CelebA,
    COCOKeypoints,
    ImageFolder,
    KeypointCSV,
    PtsFolder,
    ThreeHundredW,
    read_pts,
)
from contrastive_landmarks.data.mtfl import AFLW_FRAMING_JITTER, AFLW_FRAMING_SCALE, aflw_split, face_framing

PIL = pytest.importorskip("PIL.Image")


def write_image(path, width, height, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    PIL.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)


def check_sample(sample, num_points, size=None):
    assert set(sample) >= {"image", "keypoints", "visible", "index"}
    image = sample["image"]
    assert image.ndim == 3 and image.shape[0] == 3 and image.dtype == torch.float32
    assert float(image.min()) >= 0 and float(image.max()) <= 1
    assert sample["keypoints"].shape == (num_points, 2) and sample["visible"].shape == (num_points,)
    assert sample["visible"].dtype == torch.bool
    if size is not None:
        assert tuple(image.shape[-2:]) == size


# -- real data ------------------------------------------------------------------------------------------
def test_mtfl_reads_the_shared_csvs(shared_data):
    root = shared_data / "mtfl"
    test = MTFL(root, "test")
    assert len(test) == 2995 and test.eye_indices == (0, 1)
    sample = test[5]
    check_sample(sample, 5, (80, 80))
    # independent parse of the same row
    row = (root / "test.csv").read_text().splitlines()[6].split(",")
    values = np.asarray(row[1:], dtype=np.float32)
    torch.testing.assert_close(sample["keypoints"], torch.tensor(np.stack([values[:5], values[5:]], -1)))
    # 7,650 rows since 2026-12-02: the 2,350 misaligned net_7876/_*.jpg rows were removed upstream
    train = MTFL(root, "train")
    assert len(train) == 7650 and not any("/_" in name for name in train.images)
    assert train.flip_pairs == ((0, 1), (3, 4)) and train.names is None


def test_mtfl_face_crop_gives_training_faces_the_test_framing(shared_data):
    root = shared_data / "mtfl"

    def median_iod(dataset, n=150):
        kp = torch.stack([dataset[i]["keypoints"] for i in range(0, len(dataset), len(dataset) // n)])
        return float((kp[:, 0] - kp[:, 1]).norm(dim=-1).median())

    test, raw = median_iod(MTFL(root, "test")), median_iod(MTFL(root, "train"))
    cropped = median_iod(MTFL(root, "train", face_crop=True))
    assert raw < 0.75 * test  # the gap the crop is for
    assert abs(cropped - test) < 0.12 * test


def test_face_framing_recovers_a_known_framing():
    # faces drawn at a known side (3.0 eye-to-mouth distances) with known log-scale and shift spreads
    g = torch.Generator().manual_seed(0)
    n, size = 4000, 80
    span = size / 3.0 * torch.exp((torch.rand(n, generator=g) * 2 - 1) * 0.2)  # log side uniform ±0.2
    centre = (size - 1) / 2 - (torch.rand(n, 2, generator=g) * 2 - 1) * 0.3 * span[:, None]  # ±0.3 spans
    layout = torch.tensor([[-0.4, -0.5], [0.4, -0.5], [0.0, 0.0], [-0.3, 0.5], [0.3, 0.5]])  # eyes to mouth: 1
    layout = layout - layout.mean(0)
    keypoints = centre[:, None] + layout * span[:, None, None]
    scale, (jitter_scale, jitter_shift) = face_framing(keypoints, size)
    assert abs(scale - 3.0) < 0.02 and abs(jitter_scale - 0.2) < 0.01 and abs(jitter_shift - 0.3) < 0.01
    with pytest.raises(ValueError, match=r"\(N, 5, 2\)"):
        face_framing(keypoints[:, :4])


def test_mtfl_framing_constants_come_from_the_aflw_training_faces(shared_data):
    # measured on the in-domain protocol's 1,800 training faces, never on the faces a protocol tests on
    test = MTFL(shared_data / "mtfl", "test")
    keypoints = torch.stack([test[i]["keypoints"] for i in aflw_split("train")])
    scale, jitter = face_framing(keypoints)
    assert round(scale, 2) == AFLW_FRAMING_SCALE
    assert tuple(round(value, 2) for value in jitter) == AFLW_FRAMING_JITTER


MMPOSE = [
    "300w",
    "300wlp",
    "aflw",
    "animalpose",
    "ap10k",
    "atrw",
    "cofw",
    "fld",
    "fly",
    "horse10",
    "lapa",
    "locust",
    "macaque",
    "wflw",
    "zebra",
]


@pytest.mark.parametrize("name", MMPOSE)
def test_coco_reader_on_mmpose_fixtures(shared_data, name):
    folder = shared_data / "fixtures" / "mmpose" / name
    path = next(folder.glob("*.json"))
    raw = json.loads(path.read_text())
    usable = [a for a in raw["annotations"] if any(v > 0 for v in a["keypoints"][2::3])]
    dataset = COCOKeypoints(path)
    assert len(dataset) == len(usable)
    first = usable[0]
    kp = np.asarray(first["keypoints"], dtype=np.float32).reshape(-1, 3)
    sample = dataset[0]
    check_sample(sample, len(kp))
    labelled = kp[:, 2] > 0
    torch.testing.assert_close(sample["keypoints"][labelled], torch.tensor(kp[labelled, :2]))
    assert bool(torch.isnan(sample["keypoints"][~labelled]).all())  # v = 0: no position, not COCO's (0, 0)
    assert sample["visible"].tolist() == labelled.tolist()
    assert dataset.visibility[0].tolist() == kp[:, 2].astype(int).tolist()
    x, y, w, h = first["bbox"]
    torch.testing.assert_close(sample["box"], torch.tensor([x, y, x + w, y + h], dtype=torch.float32))
    category = next(c for c in raw["categories"] if c["id"] == first["category_id"])
    assert dataset.names == (category["keypoints"] or None)
    assert dataset.eye_indices is None  # never assumed: it would switch the metric to inter-ocular error
    if category.get("skeleton"):
        flat = [i for edge in category["skeleton"] for i in edge]
        offset = 0 if min(flat) == 0 else 1
        assert dataset.skeleton == [(a - offset, b - offset) for a, b in category["skeleton"]]
        assert all(0 <= i < len(kp) for edge in dataset.skeleton for i in edge)
    else:
        assert dataset.skeleton is None


def test_coco_names_give_flip_pairs_and_visibility_levels(shared_data):
    fixtures = shared_data / "fixtures" / "mmpose"
    ap10k = COCOKeypoints(next((fixtures / "ap10k").glob("*.json")))
    names = ap10k.names
    assert ap10k.flip_pairs[0] == (names.index("left_eye"), names.index("right_eye"))
    assert len(ap10k.flip_pairs) == 7
    assert all(names[a].replace("left", "right") == names[b] for a, b in ap10k.flip_pairs)
    assert ap10k.skeleton[0] == (0, 1)  # COCO's 1-based [1, 2]: left_eye - right_eye
    atrw = COCOKeypoints(next((fixtures / "atrw").glob("*.json")))
    assert atrw.skeleton[0] == (0, 2)  # this file is 0-based ([0, 2]: left_ear - nose)
    fly = COCOKeypoints(next((fixtures / "fly").glob("*.json")))
    assert (fly.names.index("eyeL"), fly.names.index("eyeR")) in fly.flip_pairs
    horse = COCOKeypoints(next((fixtures / "horse10").glob("*.json")))
    assert (horse.names.index("Nearknee"), horse.names.index("Offknee")) in horse.flip_pairs  # near = left side
    assert COCOKeypoints(next((fixtures / "wflw").glob("*.json"))).flip_pairs is None  # no names: no guess
    assert COCOKeypoints(next((fixtures / "ap10k").glob("*.json")), flip_pairs=()).flip_pairs is None
    # v = 1 (labelled, occluded) is visible by default and not with min_visibility=2; FLD has all three levels
    fld_path = next((fixtures / "fld").glob("*.json"))
    every, seen = COCOKeypoints(fld_path), COCOKeypoints(fld_path, min_visibility=2)
    flags = torch.as_tensor(every.visibility)
    assert (flags == 1).any() and every.visible.tolist() == (flags >= 1).tolist()
    assert seen.visible.tolist() == (flags == 2).tolist()
    assert bool(torch.isfinite(seen.keypoints[flags == 1]).all())  # occluded points keep their position


def test_coco_categories_with_different_layouts_need_a_category_id(tmp_path):
    write_image(tmp_path / "a.png", 20, 10)
    categories = [
        {"id": 1, "keypoints": ["left_eye", "right_eye"], "skeleton": [[1, 2]]},
        {"id": 2, "keypoints": ["head", "tail"], "skeleton": []},
    ]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "keypoints": [1, 2, 2, 3, 4, 2], "bbox": [0, 0, 5, 5]},
        {"id": 2, "image_id": 1, "category_id": 2, "keypoints": [5, 6, 2, 0, 0, 0], "bbox": [0, 0, 5, 5]},
    ]
    (tmp_path / "c.json").write_text(
        json.dumps({"images": [{"id": 1, "file_name": "a.png"}], "annotations": annotations, "categories": categories})
    )
    with pytest.raises(ValueError, match="category_id"):
        COCOKeypoints(tmp_path / "c.json")
    eyes = COCOKeypoints(tmp_path / "c.json", category_id=1)
    assert eyes.names == ["left_eye", "right_eye"] and eyes.flip_pairs == ((0, 1),) and eyes.skeleton == [(0, 1)]
    tails = COCOKeypoints(tmp_path / "c.json", category_id=2)
    assert tails.names == ["head", "tail"] and tails.flip_pairs is None and tails.skeleton is None
    assert tails.visible.tolist() == [[True, False]]


def test_menpo_pts_folder(shared_data):
    folder = shared_data / "fixtures" / "menpo"
    dataset = PtsFolder(folder)
    assert sorted(dataset.images) == ["breakingbad.jpg", "einstein.jpg", "takeo.ppm"]
    assert dataset.num_keypoints == 68 and dataset.eye_indices == (36, 45)
    index = dataset.images.index("einstein.jpg")
    lines = (folder / "einstein.pts").read_text().split("{")[1].split("}")[0].split()
    naive = np.asarray(lines, dtype=np.float32).reshape(-1, 2) - 1
    sample = dataset[index]
    check_sample(sample, 68)
    torch.testing.assert_close(sample["keypoints"], torch.tensor(naive))
    assert read_pts(folder / "einstein.pts").shape == (68, 2)


def test_image_folder_on_celeba_and_list_file(shared_data, tmp_path):
    images = shared_data / "celeba-6k" / "images"
    names = sorted(p.name for p in images.iterdir())[:3]
    listing = tmp_path / "list.txt"
    listing.write_text("# three faces\n" + "\n".join(names) + "\n\n")
    dataset = ImageFolder(listing, root=images)
    assert len(dataset) == 3 and set(dataset[2]) == {"image", "index"}
    assert tuple(dataset[0]["image"].shape) == (3, 218, 178)


# -- authors' layouts, written here -------------------------------------------------------------------------
def test_keypoint_csv_with_visibility_and_errors(tmp_path):
    write_image(tmp_path / "a.png", 20, 10)
    (tmp_path / "k.csv").write_text("image,y1,x1,x2,y2,v1,v2\na.png,2,3,4.5,5,1,0\n")
    dataset = KeypointCSV(tmp_path / "k.csv")
    sample = dataset[0]
    check_sample(sample, 2, (10, 20))
    torch.testing.assert_close(sample["keypoints"], torch.tensor([[3.0, 2.0], [4.5, 5.0]]))
    assert sample["visible"].tolist() == [True, False]
    assert dataset.eye_indices is None and dataset.names is None and dataset.flip_pairs is None
    (tmp_path / "bad.csv").write_text("image,x1,y2\na.png,1,2\n")
    with pytest.raises(ValueError, match=r"x1\.\.xN"):
        KeypointCSV(tmp_path / "bad.csv")
    with pytest.raises(FileNotFoundError, match=r"missing\.csv.*image,x1"):
        KeypointCSV(tmp_path / "missing.csv")


def test_keypoint_csv_interleaved_named_columns_keep_names_and_pair_sides(tmp_path):
    write_image(tmp_path / "a.png", 20, 10)
    (tmp_path / "n.csv").write_text(
        "image,left_eye_x,left_eye_y,right_eye_x,right_eye_y,nose_x,nose_y,nose_v\n"
        "a.png,1,2,3,4,5,6,1\n"
        "a.png,1,2,,,5,6,0\n"
    )
    dataset = KeypointCSV(tmp_path / "n.csv")
    assert dataset.names == ["left_eye", "right_eye", "nose"]
    assert dataset.flip_pairs == ((0, 1),)
    assert dataset.eye_indices is None  # named eyes, but the metric stays the caller's choice
    torch.testing.assert_close(dataset[0]["keypoints"], torch.tensor([[1.0, 2], [3, 4], [5, 6]]))
    second = dataset[1]
    assert second["visible"].tolist() == [True, False, False]  # empty cells missing; v = 0 not visible
    assert bool(torch.isnan(second["keypoints"][1]).all()) and second["keypoints"][2].tolist() == [5.0, 6.0]
    assert KeypointCSV(tmp_path / "n.csv", flip_pairs=()).flip_pairs is None
    assert KeypointCSV(tmp_path / "n.csv", eye_indices=(0, 1)).eye_indices == (0, 1)
    (tmp_path / "half.csv").write_text("image,nose_x,nose_y,tail_x\na.png,1,2,3\n")
    with pytest.raises(ValueError, match=r"half\.csv: every <name>_x column needs a <name>_y"):
        KeypointCSV(tmp_path / "half.csv")
    (tmp_path / "one.csv").write_text("image,nose_x,nose_y\na.png,1,\n")
    with pytest.raises(ValueError, match=r"one\.csv:2: .*empty but not both"):
        KeypointCSV(tmp_path / "one.csv")


def test_keypoint_csv_zero_based_interleaved_numbers(tmp_path):
    write_image(tmp_path / "a.png", 20, 10)
    (tmp_path / "z.csv").write_text("image,x0,y0,x1,y1,x2,y2\na.png,1,2,3,4,,\n")
    dataset = KeypointCSV(tmp_path / "z.csv")
    assert dataset.num_keypoints == 3 and dataset.names is None
    sample = dataset[0]
    torch.testing.assert_close(sample["keypoints"][:2], torch.tensor([[1.0, 2], [3, 4]]))
    assert sample["visible"].tolist() == [True, True, False]
    (tmp_path / "gap.csv").write_text("image,x0,y0,x2,y2\na.png,1,2,3,4\n")
    with pytest.raises(ValueError, match=r"gap\.csv: need columns x1\.\.xN"):
        KeypointCSV(tmp_path / "gap.csv")
    (tmp_path / "mix.csv").write_text("image,x1,y1,nose_x,nose_y\na.png,1,2,3,4\n")
    with pytest.raises(ValueError, match="mixes numbered"):
        KeypointCSV(tmp_path / "mix.csv")


def test_registry_csv_and_coco_carry_names_and_flip_pairs(tmp_path, shared_data):
    from contrastive_landmarks.data import by_name

    write_image(tmp_path / "a.png", 20, 10)
    (tmp_path / "n.csv").write_text("image,eye_l_x,eye_l_y,eye_r_x,eye_r_y\na.png,1,2,3,4\n")
    table = by_name("csv", None, "train", image_size=32, path=str(tmp_path / "n.csv"))
    assert table.names == ["eye_l", "eye_r"] and table.flip_pairs == ((0, 1),) and table.eye_indices is None
    assert table[0]["image"].shape == (3, 32, 32)
    ap10k = next((shared_data / "fixtures" / "mmpose" / "ap10k").glob("*.json"))
    coco = by_name("coco", None, "train", image_size=32, path=str(ap10k))
    assert coco.names[:2] == ["left_eye", "right_eye"] and (0, 1) in coco.flip_pairs
    assert coco[0]["image"].shape == (3, 32, 32)


def test_registry_root_with_path_is_the_image_folder_and_dlc_refuses_two_projects(tmp_path):
    from contrastive_landmarks.data import by_name

    write_image(tmp_path / "images" / "a.png", 20, 10)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "n.csv").write_text("image,x1,y1\na.png,1,2\n")
    csv_path = str(tmp_path / "labels" / "n.csv")
    # without --root the images are looked up beside the CSV, and the error says where it looked
    with pytest.raises(FileNotFoundError, match=r"labels"):
        by_name("csv", None, "train", image_size=32, path=csv_path)[0]
    table = by_name("csv", str(tmp_path / "images"), "train", image_size=32, path=csv_path)
    assert table[0]["image"].shape == (3, 32, 32)  # --root was used, not ignored
    with pytest.raises(ValueError, match=r"dlc takes one project.*pass only one"):
        by_name("dlc", str(tmp_path / "a"), "train", path=str(tmp_path / "b"))
    # the same for the labelled frames finetune and evaluate keypoints read
    from contrastive_landmarks.data.registry import frames_by_name

    with pytest.raises(FileNotFoundError, match=r"labels"):
        frames_by_name("csv", None, path=csv_path)[0]
    assert frames_by_name("csv", str(tmp_path / "images"), path=csv_path)[0]["image"].shape == (3, 10, 20)
    with pytest.raises(ValueError, match=r"dlc takes one project.*pass only one"):
        frames_by_name("dlc", str(tmp_path / "a"), "train", path=str(tmp_path / "b"))


def test_aflw_m_layout(tmp_path):
    root = tmp_path / "aflw-mtfl"
    write_image(root / "aflw_cropped" / "crops" / "0.jpg", 150, 150)
    write_image(root / "MTFL" / "AFLW" / "0001-image1.jpg", 150, 150)
    (root / "aflw_cropped" / "facedata_cropped.csv").write_text(
        "image_file,set,crop_file,face_id,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5\n"
        "image9.jpg,1,crops/0.jpg,7,51,61,101,61,76,86,56,111,96,111\n"
        "image1.jpg,0,crops/1.jpg,8,1,1,1,1,1,1,1,1,1,1\n"
    )
    (root / "MTFL" / "testing.txt").write_text("AFLW\\0001-image1.jpg 51 101 76 56 96 61 61 86 111 111 1 2 1 3\n")
    train, test = AFLWM(root, "train", transform=None), AFLWM(root, "test", transform=None)
    assert len(train) == 1 and len(test) == 1
    expected = torch.tensor([[50.0, 60], [100, 60], [75, 85], [55, 110], [95, 110]])
    torch.testing.assert_close(train[0]["keypoints"], expected)
    torch.testing.assert_close(test[0]["keypoints"], expected)
    sample = AFLWM(root, "test")[0]  # default: 150 -> 136 -> border 20 -> 96
    check_sample(sample, 5, (96, 96))
    torch.testing.assert_close(sample["keypoints"], (expected + 0.5) * 136 / 150 - 0.5 - 20)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(FileNotFoundError, match=r"testing\.txt"):
        AFLWM(tmp_path / "elsewhere", "test")


def test_aflw_r_layout_swaps_yx_and_rescales(tmp_path):
    savemat = pytest.importorskip("scipy.io").savemat
    root = tmp_path / "aflw_release-2"
    write_image(root / "output" / "a.jpg", 60, 40)
    write_image(root / "output" / "b.jpg", 30, 30)
    (root / "aflw_test_images.txt").write_text("a.jpg\nb.jpg\n")
    yx = np.arange(20, dtype=np.float64).reshape(2, 5, 2) + 3
    savemat(root / "aflw_test_keypoints.mat", {"gt": yx, "hw": np.array([[40, 60], [60, 60]])})
    dataset = AFLWR(root, "test", transform=None)
    torch.testing.assert_close(dataset[0]["keypoints"], torch.tensor(yx[0][:, ::-1].copy(), dtype=torch.float32))
    # b.jpg is stored at 30x30 but annotated at 60x60
    expected = (torch.tensor(yx[1][:, ::-1].copy(), dtype=torch.float32) + 0.5) * 0.5 - 0.5
    torch.testing.assert_close(dataset[1]["keypoints"], expected)
    check_sample(AFLWR(root, "test")[0], 5, (96, 96))
    with pytest.raises(FileNotFoundError, match=r"aflw_train_images\.txt"):
        AFLWR(root, "train")


def test_300w_layout_split_ibug_filter_and_boxes(tmp_path):
    savemat = pytest.importorskip("scipy.io").savemat
    root = tmp_path / "300w"
    points = np.stack([np.linspace(30, 70, 68), np.linspace(40, 80, 68)], -1)

    def pts_text(p):
        return "version: 1\nn_points:  68\n{\n" + "\n".join(f"{x} {y}" for x, y in p) + "\n}\n"

    layout = {
        "afw": ["1.jpg"],
        "helen/trainset": ["2.jpg", "3.jpg"],
        "lfpw/trainset": ["4.png"],
        "helen/testset": ["5.jpg"],
        "lfpw/testset": ["6.jpg"],
        "ibug": ["image_7.jpg", "other.jpg"],
    }
    mats = {
        "afw": "afw",
        "helen/trainset": "helen_trainset",
        "lfpw/trainset": "lfpw_trainset",
        "helen/testset": "helen_testset",
        "lfpw/testset": "lfpw_testset",
        "ibug": "ibug",
    }
    (root / "Bounding Boxes").mkdir(parents=True)
    for number, (folder, names) in enumerate(layout.items()):
        entries = []
        for name in names:
            write_image(root / folder / name, 120, 100, seed=number)
            (root / folder / name).with_suffix(".pts").write_text(pts_text(points + number))
            entries.append(
                {
                    "imgName": name,
                    "bb_detector": np.array([1.0, 2, 3, 4]),
                    "bb_ground_truth": np.array([31.0, 41, 71, 81]) + number,
                }
            )
        cell = np.empty(len(entries), dtype=object)
        cell[:] = entries
        savemat(root / "Bounding Boxes" / f"bounding_boxes_{mats[folder]}.mat", {"bounding_boxes": cell})
    train, test = ThreeHundredW(root, "train", transform=None), ThreeHundredW(root, "test", transform=None)
    assert len(train) == 4 and len(test) == 3
    assert not any("other" in name for name in test.images) and train.eye_indices == (36, 45)
    sample = train[0]
    check_sample(sample, 68, (100, 120))
    torch.testing.assert_close(sample["keypoints"], torch.tensor(points - 1, dtype=torch.float32))
    torch.testing.assert_close(sample["box"], torch.tensor([30.0, 40, 70, 80]))
    check_sample(ThreeHundredW(root, "test")[2], 68, (96, 96))


def test_cub_layout_relative_split_paths(tmp_path):
    root = tmp_path / "CUB_200_2011"
    write_image(root / "images" / "014.Indigo_Bunting" / "a.jpg", 50, 40)
    write_image(root / "images" / "015.Lazuli_Bunting" / "b.jpg", 30, 20)
    (root / "images.txt").write_text("1 014.Indigo_Bunting/a.jpg\n2 015.Lazuli_Bunting/b.jpg\n")
    (root / "parts").mkdir()
    rows = [f"{i} {p} {10 + p}.0 {5 + i}.0 {int(p != 3)}" for i in (1, 2) for p in range(1, 16)]
    (root / "parts" / "part_locs.txt").write_text("\n".join(rows) + "\n")
    (root / "parts" / "parts.txt").write_text("\n".join(f"{p} part {p}" for p in range(1, 16)) + "\n")
    split = tmp_path / "train_1.txt"
    split.write_text("/mnt/nfs/scratch1/someone/datasets/CUB_200_2011/images/015.Lazuli_Bunting/b.jpg\n")
    dataset = CUB(root, split, transform=None)
    assert len(dataset) == 1 and dataset.images == ["015.Lazuli_Bunting/b.jpg"]
    sample = dataset[0]
    check_sample(sample, 15, (20, 30))
    torch.testing.assert_close(sample["keypoints"][:, 0], torch.arange(11, 26, dtype=torch.float32))
    assert sample["visible"].tolist() == [p != 3 for p in range(1, 16)]
    assert dataset.names[0] == "part 1"
    check_sample(CUB(root)[1], 15, (96, 96))


def test_mafl_and_celeba_layout(tmp_path):
    root = tmp_path / "celeba"
    names = [f"{i:06d}.jpg" for i in range(1, 6)]
    for i, name in enumerate(names):
        write_image(root / "Img" / "img_align_celeba" / name, 178, 218, seed=i)
    lines = [
        "5",
        "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y",
    ]
    lines += [f"{n} 69 111 108 111 89 135 72 152 106 152" for n in names]
    (root / "Anno").mkdir()
    (root / "Anno" / "list_landmarks_align_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "Eval").mkdir()
    (root / "Eval" / "list_eval_partition.txt").write_text(
        "\n".join(f"{n} {int(i == 4) * 2}" for i, n in enumerate(names)) + "\n"
    )
    (root / "MAFL").mkdir()
    (root / "MAFL" / "training.txt").write_text(f"{names[0]}\n{names[1]}\n")
    (root / "MAFL" / "testing.txt").write_text(f"{names[2]}\n")
    train = MAFL(root, "train")
    assert len(train) == 2 and len(MAFL(root, "test")) == 1
    sample = train[1]
    check_sample(sample, 5, (96, 96))
    raw = torch.tensor([[69.0, 111], [108, 111], [89, 135], [72, 152], [106, 152]])
    torch.testing.assert_close(sample["keypoints"], (raw - torch.tensor([0.0, 30]) + 0.5) * 136 / 178 - 0.5 - 20)
    pretrain = CelebA(root)  # partition 0 minus MAFL
    assert pretrain.images == [names[3]] and set(pretrain[0]) == {"image", "index"}
    assert CelebA(root, "test").images == [names[4]]
    with pytest.raises(FileNotFoundError, match="list_landmarks_align_celeba"):
        (root / "Anno" / "list_landmarks_align_celeba.txt").unlink()
        MAFL(root)


def test_load_image_scales_a_16_bit_grey_png(tmp_path):
    """A 16-bit grey PNG keeps its grey levels (convert("RGB") used to clip it to all white)."""
    from PIL import Image

    from contrastive_landmarks.data.base import load_image

    levels = np.array([[0, 16384], [32768, 65535]], dtype=np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(levels).save(path)  # uint16 -> mode "I;16"
    with Image.open(path) as written:
        assert written.mode in ("I;16", "I"), written.mode
    image = load_image(path)
    assert image.shape == (3, 2, 2)
    expected = torch.from_numpy(levels.astype(np.float32) / 65535.0)
    for channel in image:
        torch.testing.assert_close(channel, expected, atol=1e-6, rtol=0)


def test_load_image_refuses_a_32_bit_integer_image_with_no_known_scale(tmp_path):
    from PIL import Image

    from contrastive_landmarks.data.base import load_image

    path = tmp_path / "wide.tif"
    Image.fromarray(np.array([[0, 1 << 20]], dtype=np.int32)).save(path)
    with pytest.raises(ValueError, match=r"wide\.tif.*wider than 16 bits"):
        load_image(path)


def test_a_visible_keypoint_far_outside_its_image_is_refused_naming_file_point_and_coordinates(tmp_path):
    """A label at (-500, 9999) in an 80x80 image used to train silently; slightly outside (DLC) still loads."""
    write_image(tmp_path / "img" / "a.png", 80, 80)
    write_image(tmp_path / "img" / "b.png", 80, 80, seed=1)
    (tmp_path / "k.csv").write_text(
        "image,nose_x,nose_y,tail_x,tail_y,tail_v\n"
        "img/a.png,-5,83,40,40,1\n"  # nose 5 px outside the image: within the 10% tolerance
        "img/b.png,10,10,-500,9999,1\n"
    )
    dataset = KeypointCSV(tmp_path / "k.csv")
    torch.testing.assert_close(dataset[0]["keypoints"], torch.tensor([[-5.0, 83.0], [40.0, 40.0]]))
    with pytest.raises(ValueError, match=r"b\.png: keypoint 1 \(tail\) at \(x=-500, y=9999\).*80x80"):
        dataset[1]
    # the same point marked not visible is not checked
    (tmp_path / "hidden.csv").write_text("image,nose_x,nose_y,tail_x,tail_y,tail_v\nimg/b.png,10,10,-500,9999,0\n")
    assert KeypointCSV(tmp_path / "hidden.csv")[0]["visible"].tolist() == [True, False]


def test_a_missing_image_names_the_path_tried_and_the_folder_it_is_relative_to(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "k.csv").write_text("image,x1,y1\nframes/gone.png,1,2\n")
    dataset = KeypointCSV(tmp_path / "labels" / "k.csv")
    folder = str(tmp_path / "labels")
    with pytest.raises(FileNotFoundError) as error:
        dataset[0]
    message = str(error.value)
    assert str(tmp_path / "labels" / "frames" / "gone.png") in message
    assert f"'frames/gone.png' relative to {folder}" in message


# -- issue 31: a DeepLabCut labels file given as a plain keypoint CSV ------------------------------------------
@pytest.mark.parametrize("multi_animal", [False, True])
def test_a_deeplabcut_csv_read_as_a_keypoint_table_suggests_dataset_dlc(tmp_path, multi_animal):
    from contrastive_landmarks.data.csv_table import read_keypoint_csv

    header = [
        "scorer,,,Alex,Alex,Alex,Alex",
        *(["individuals,,,mouse1,mouse1,mouse1,mouse1"] if multi_animal else []),
        "bodyparts,,,nose,nose,tail,tail",
        "coords,,,x,y,x,y",
    ]
    path = tmp_path / "CollectedData_Alex.csv"
    path.write_text("\n".join([*header, "labeled-data,video1,img000.png,10,12,30,31"]) + "\n")
    with pytest.raises(ValueError, match=r"CollectedData_Alex\.csv is a DeepLabCut labels file.*--dataset dlc"):
        read_keypoint_csv(path)
    with pytest.raises(ValueError, match="--dataset dlc"):
        KeypointCSV(path)
