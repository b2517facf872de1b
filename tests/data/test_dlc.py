"""DeepLabCut projects: the real reaching project in ``shared/data/dlc-reaching``, and small projects written here."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from contrastive_landmarks.data import DLCProject, Letterbox, by_name, dlc_split, read_dlc_config

PIL = pytest.importorskip("PIL.Image")

PARTS = ["Hand", "Finger1", "Tongue", "Joystick1", "Joystick2"]
#: the 11 test frames of dlc_split(seed=0) on dlc-reaching, pinned: a change of the split shows up here
TEST_FRAMES = [
    "img042.png",
    "img052.png",
    "img077.png",
    "img100.png",
    "img141.png",
    "img142.png",
    "img152.png",
    "img167.png",
    "img227.png",
    "img231.png",
    "img245.png",
]


@pytest.fixture
def reaching(shared_data):
    return shared_data / "dlc-reaching"


def naive_csv(path):
    """Independent parse of a 3-row-header CollectedData CSV: {frame: {part: (x, y) or None}}."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    parts, coords = rows[1], rows[2]
    table = {}
    for row in rows[3:]:
        entry = {}
        for column in range(1, len(row), 2):
            assert coords[column] == "x" and coords[column + 1] == "y"
            entry[parts[column]] = None if row[column] == "" else (float(row[column]), float(row[column + 1]))
        table[row[0]] = entry
    return table


# -- the real project ---------------------------------------------------------------------------------------------
def test_reaching_project_frames_parts_and_missing_points(reaching):
    project = DLCProject(reaching)
    assert len(project) == 55 and project.num_keypoints == 5
    assert project.names == PARTS and project.scorer == "Mackenzie"
    assert project.skeleton == [(0, 1), (3, 4)]  # [['Hand', 'Finger1'], ['Joystick1', 'Joystick2']]
    assert project.flip_pairs is None and project.eye_indices is None  # no left/right parts, no eyes
    assert project.videos == ["reachingvideo1"] * 55
    assert int(project.visible[:, PARTS.index("Tongue")].sum()) == 15
    # every missing point is NaN, every visible one finite
    assert bool(torch.isfinite(project.keypoints).all(-1).eq(project.visible).all())
    expected = naive_csv(reaching / "labeled-data" / "reachingvideo1" / "CollectedData_Mackenzie.csv")
    assert sorted(project.images) == sorted(expected)
    for index, image in enumerate(project.images):
        for part_index, part in enumerate(PARTS):
            value = expected[image][part]
            if value is None:
                assert not project.visible[index, part_index]
            else:
                torch.testing.assert_close(project.keypoints[index, part_index], torch.tensor(value))


def test_reaching_frames_come_in_two_sizes_with_points_inside(reaching):
    project = DLCProject(reaching)
    sizes = set()
    for index in range(len(project)):
        with PIL.open(project.image_path(index)) as image:
            width, height = image.size
        sizes.add((width, height))
        points = project.keypoints[index][project.visible[index]]
        assert bool((points >= -0.5).all()) and bool((points[:, 0] <= width - 0.5).all())
        assert bool((points[:, 1] <= height - 0.5).all())
    assert sizes == {(640, 470), (832, 747)}
    sample = project[0]
    assert sample["image"].shape[0] == 3 and (sample["image"].shape[2], sample["image"].shape[1]) in sizes
    assert sample["keypoints"].shape == (5, 2) and sample["visible"].dtype == torch.bool


def test_config_parser_reads_what_yaml_reads(reaching):
    config = read_dlc_config(reaching / "config.yaml")
    assert config["bodyparts"] == PARTS and config["scorer"] == "Mackenzie"
    assert config["skeleton"] == [["Hand", "Finger1"], ["Joystick1", "Joystick2"]]
    yaml = pytest.importorskip("yaml")  # only to cross-check; the reader never needs it
    reference = yaml.safe_load((reaching / "config.yaml").read_text())
    assert config["video_sets"] == list(reference["video_sets"])  # the mapping's keys: the videos' paths
    assert {k: v for k, v in config.items() if k != "video_sets"} == {
        key: reference[key] for key in config if key != "video_sets"
    }


def test_split_is_fixed_80_20_by_frame(reaching):
    project = DLCProject(reaching)
    train, test = dlc_split(project, "train"), dlc_split(project, "test")
    assert len(train) == 44 and len(test) == 11
    assert sorted(train + test) == list(range(55))
    assert [project.images[i].rsplit("/", 1)[-1] for i in test] == TEST_FRAMES
    assert dlc_split(project, "test", seed=1) != test
    with pytest.raises(ValueError, match="split"):
        dlc_split(project, "val")


def test_letterbox_round_trip_on_the_real_frames(reaching):
    plain = DLCProject(reaching)
    boxed = DLCProject(reaching, transform=Letterbox(96))
    for index in (0, 1, 2, 10, 30, 54):  # both frame sizes
        source, sample = plain[index], boxed[index]
        assert sample["image"].shape == (3, 96, 96)
        scale, pad_x, pad_y = sample["letterbox"]
        height, width = source["image"].shape[-2:]
        assert scale == pytest.approx(96 / max(height, width))
        assert (pad_x > 0) == (width < height) and (pad_y > 0) == (height < width)
        visible = sample["visible"]
        assert visible.tolist() == source["visible"].tolist()
        inside = sample["keypoints"][visible]
        assert bool(((inside > -0.5) & (inside < 95.5)).all())
        back = Letterbox.to_source(sample["keypoints"], sample["letterbox"])
        assert float((back[visible] - source["keypoints"][visible]).abs().max()) < 0.5
        assert bool(torch.isnan(back[~visible]).all())


def test_registry_dlc_letterboxes_the_split(reaching):
    train = by_name("dlc", str(reaching), "train", image_size=64)
    test = by_name("dlc", str(reaching), "test", image_size=64)
    assert len(train) == 44 and len(test) == 11 and train.names == PARTS
    sample = test[0]
    assert sample["image"].shape == (3, 64, 64) and "letterbox" in sample
    batch = torch.utils.data.default_collate([test[0], test[1]])
    back = Letterbox.to_source(batch["keypoints"], batch["letterbox"])
    source = DLCProject(reaching)
    original = torch.stack([source.keypoints[test.indices[0]], source.keypoints[test.indices[1]]])
    mask = batch["visible"]
    assert float((back[mask] - original[mask]).abs().max()) < 0.5


# -- written here ------------------------------------------------------------------------------------------------
def write_image(path, width, height):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.fromarray(np.zeros((height, width, 3), dtype=np.uint8)).save(path)


CONFIG = """\
# Project definitions (do not edit)
Task: mouse
scorer: Alex   # who labelled
date: Jan1
video_sets:
  C:\\videos\\a.avi:
    crop: 0, 640, 0, 480
bodyparts:
- snout
- leftear
- rightear
- 'tail base'
skeleton:
- - snout
  - leftear
- - snout
  - rightear
- - leftear
  - objectA
"""
#: the same without the skeleton edge to a body part that is not in bodyparts
CLEAN_CONFIG = CONFIG.replace("- - leftear\n  - objectA\n", "")


def make_project(tmp_path, rows, header=None, config=CONFIG, folder="v1", three_index_columns=False):
    project = tmp_path / "proj"
    project.mkdir(exist_ok=True)
    (project / "config.yaml").write_text(config)
    header = header or [
        ["scorer"] + ["Alex"] * 8,
        ["bodyparts", "snout", "snout", "rightear", "rightear", "leftear", "leftear", "tail base", "tail base"],
        ["coords"] + ["x", "y"] * 4,
    ]
    if three_index_columns:
        header = [[row[0], "", "", *row[1:]] for row in header]
    lines = [",".join(row) for row in header]
    for name, values in rows:
        write_image(project / "labeled-data" / folder / name, 40, 30)
        index = f"labeled-data,{folder},{name}" if three_index_columns else f"labeled-data\\{folder}\\{name}"
        lines.append(index + "," + ",".join(values))
    (project / "labeled-data" / folder / "CollectedData_Alex.csv").write_text("\n".join(lines) + "\n")
    return project


def test_small_project_reorders_to_config_and_pairs_left_right(tmp_path):
    rows = [("img1.png", ["1", "2", "3", "4", "5", "6", "7", "8"]), ("img2.png", ["", "", "3", "4", "", "", "7", "8"])]
    with pytest.warns(UserWarning, match="objectA"):
        project = DLCProject(make_project(tmp_path, rows))
    assert project.names == ["snout", "leftear", "rightear", "tail base"]
    assert project.images == ["labeled-data/v1/img1.png", "labeled-data/v1/img2.png"]  # Windows separators
    torch.testing.assert_close(project.keypoints[0], torch.tensor([[1.0, 2], [5, 6], [3, 4], [7, 8]]))
    assert project.visible.tolist() == [[True] * 4, [False, False, True, True]]
    assert math.isnan(float(project.keypoints[1, 0, 0]))
    assert project.flip_pairs == ((1, 2),) and project.skeleton == [(0, 1), (0, 2)]
    assert project[1]["image"].shape == (3, 30, 40)


def test_newer_three_column_index_and_an_unlabelled_folder(tmp_path):
    rows = [("img1.png", ["1", "2", "3", "4", "5", "6", "7", "8"])]
    project_dir = make_project(tmp_path, rows, config=CLEAN_CONFIG, three_index_columns=True)
    write_image(project_dir / "labeled-data" / "v2" / "img9.png", 40, 30)  # extracted, not labelled yet
    project = DLCProject(project_dir)
    assert project.images == ["labeled-data/v1/img1.png"] and project.videos == ["v1"]
    assert project.skeleton == [(0, 1), (0, 2)]
    with pytest.raises(FileNotFoundError, match=r"CollectedData_Alex\.csv"):
        DLCProject(project_dir, video="v2")
    with pytest.raises(FileNotFoundError, match=r"labeled-data folder \['v3'\]"):
        DLCProject(project_dir, video="v3")
    with pytest.raises(FileNotFoundError, match="CollectedData_Bob"):
        DLCProject(project_dir, scorer="Bob")


def test_malformed_labels_name_the_file(tmp_path):
    config = CONFIG.split("skeleton:")[0]
    bad = make_project(tmp_path, [("img1.png", ["1", "2", "3", "x", "5", "6", "7", "8"])], config=config)
    with pytest.raises(ValueError, match=r"CollectedData_Alex\.csv:4: rightear y: not a number"):
        DLCProject(bad)
    half = make_project(tmp_path, [("img1.png", ["1", "", "3", "4", "5", "6", "7", "8"])], config=config)
    with pytest.raises(ValueError, match=r"CollectedData_Alex\.csv:4: snout has an x or a y but not both"):
        DLCProject(half)
    header = [
        ["scorer"] + ["Alex"] * 4,
        ["bodyparts", "snout", "snout", "nose", "nose"],
        ["coords", "x", "y", "x", "y"],
    ]
    other = make_project(tmp_path, [("img1.png", ["1", "2", "3", "4"])], header=header, config=config)
    with pytest.raises(ValueError, match=r"CollectedData_Alex\.csv: body parts .* do not match config\.yaml"):
        DLCProject(other)
    multi = [
        ["scorer"] + ["Alex"] * 4,
        ["individuals"] + ["mouse1"] * 4,
        ["bodyparts", "snout", "snout", "a", "a"],
        ["coords", "x", "y", "x", "y"],
    ]
    animals = make_project(tmp_path, [("img1.png", ["1", "2", "3", "4"])], header=multi, config=config)
    with pytest.raises(NotImplementedError, match=r"CollectedData_Alex\.csv: a multi-animal"):
        DLCProject(animals)
    (animals / "config.yaml").write_text(config + "multianimalproject: true\n")
    with pytest.raises(NotImplementedError, match=r"config\.yaml: multi-animal"):
        DLCProject(animals)
    (animals / "config.yaml").write_text("scorer: Alex\nbodyparts: MULTI!\n")
    with pytest.raises(ValueError, match=r"config\.yaml: bodyparts must be a list"):
        DLCProject(animals)
    with pytest.raises(FileNotFoundError, match=r"config\.yaml"):
        DLCProject(tmp_path)


def test_config_parser_flow_and_block_forms(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "scorer: 'O''Brien'\nbodyparts: [a, 'b c', \"d#e\"]  # comment\nmultianimalproject: false\n"
        "skeleton:\n  - [a, 'b c']\n  -   - a\n      - d#e\nnumframes2pick: 20\n"
    )
    config = read_dlc_config(path)
    assert config == {
        "scorer": "O'Brien",
        "bodyparts": ["a", "b c", "d#e"],
        "multianimalproject": False,
        "skeleton": [["a", "b c"], ["a", "d#e"]],
    }
    yaml = pytest.importorskip("yaml")
    reference = yaml.safe_load(path.read_text())
    assert config.get("video_sets") == (list(reference["video_sets"]) if "video_sets" in reference else None)
    assert {k: v for k, v in config.items() if k != "video_sets"} == {
        key: reference[key] for key in config if key != "video_sets"
    }
