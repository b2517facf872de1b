"""The footage step: finding a project's videos, adapting a backbone to them, resuming and refusing."""

from __future__ import annotations

import pytest
import torch

from contrastive_landmarks import load_backbone
from contrastive_landmarks.data.dlc_config import read_dlc_config
from contrastive_landmarks.train.footage import FootageOptions, adapt_to_footage, project_videos
from tests.data.test_video import make_video

pytest.importorskip("av")

TINY = FootageOptions(steps=2, batch_size=4, queue_size=8, image_size=32, max_frames=50)


def test_video_sets_are_read_as_the_listed_paths(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "Task: t\nscorer: me\nvideo_sets:\n  /old/place/a.mp4:\n    crop: 0, 640, 0, 480\n"
        "  C:\\videos\\b.avi:\n    crop: 0, 10, 0, 10\nbodyparts:\n- nose\n"
    )
    assert read_dlc_config(config)["video_sets"] == ["/old/place/a.mp4", "C:\\videos\\b.avi"]


def test_project_videos_finds_listed_moved_and_folder_videos_but_not_labelled_copies(tmp_path):
    project = tmp_path / "project"
    (project / "videos").mkdir(parents=True)
    listed = f"  /moved/away/a.mp4:\n    crop: 0, 1, 0, 1\n  {tmp_path / 'elsewhere.avi'}:\n    crop: 0, 1, 0, 1\n"
    (project / "config.yaml").write_text(f"scorer: me\nvideo_sets:\n{listed}bodyparts:\n- nose\n")
    for name in ("a.mp4", "c.mov", "a_labeled.mp4", "notes.txt"):
        (project / "videos" / name).write_bytes(b"x")
    (tmp_path / "elsewhere.avi").write_bytes(b"x")
    found = [p.name for p in project_videos(project)]
    assert sorted(found) == ["a.mp4", "c.mov", "elsewhere.avi"]
    labels = tmp_path / "lp" / "CollectedData.csv"
    (labels.parent / "videos").mkdir(parents=True)
    labels.write_text("")
    (labels.parent / "videos" / "session1.mp4").write_bytes(b"x")
    assert [p.name for p in project_videos(labels)] == ["session1.mp4"]
    assert project_videos(tmp_path / "lp" / "videos" / "session1.mp4") == []  # a video is not a project


def _tiny_backbone():
    torch.manual_seed(0)
    return load_backbone("test_resnet", weights=None).with_preprocessing(mean=(0.3, 0.3, 0.3), std=(0.2, 0.2, 0.2))


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.body.state_dict().values(), b.body.state_dict().values()))


def test_adapting_changes_the_weights_keeps_the_normalisation_and_stages_and_reproduces(tmp_path):
    video = make_video(tmp_path / "clip.mp4", frames=12, size=(48, 40))
    start = _tiny_backbone()
    before = {k: v.clone() for k, v in start.body.state_dict().items()}
    adapted = adapt_to_footage(start, [video], tmp_path / "run", TINY)
    assert all(torch.equal(v, start.body.state_dict()[k]) for k, v in before.items()), "the start was modified"
    assert not _same(adapted, start)
    assert (adapted.mean, adapted.std, adapted.stages) == (start.mean, start.std, start.stages)
    x = torch.rand(2, 3, 32, 32)
    assert [m.shape for m in adapted(x)] == [m.shape for m in start(x)]
    assert not (tmp_path / "run" / "init").exists()  # the saved start is removed once the run is done
    again = adapt_to_footage(start, [video], tmp_path / "again", TINY)
    assert _same(adapted, again)  # seeded: the same run twice gives the same weights
    read_back = adapt_to_footage(start, [video], tmp_path / "run", TINY, resume=True)
    assert _same(adapted, read_back)  # a finished step is read back, not redone


def test_a_resume_with_other_options_or_another_start_is_refused_naming_them(tmp_path):
    video = make_video(tmp_path / "clip.mp4", frames=12, size=(48, 40))
    start = _tiny_backbone()
    adapt_to_footage(start, [video], tmp_path / "run", TINY)
    longer = FootageOptions(**{**TINY.__dict__, "steps": 3})
    with pytest.raises(ValueError, match="steps"):
        adapt_to_footage(start, [video], tmp_path / "run", longer, resume=True)
    with pytest.raises(ValueError, match="start"):
        adapt_to_footage(load_backbone("test_resnet", weights=None), [video], tmp_path / "run", TINY, resume=True)


def test_no_video_an_unreadable_one_or_too_few_frames_are_named(tmp_path):
    start = _tiny_backbone()
    assert adapt_to_footage(start, [], tmp_path / "off", FootageOptions(steps=0)) is start
    with pytest.raises(ValueError, match="at least one video"):
        adapt_to_footage(start, [], tmp_path / "none", TINY)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match=r"broken\.mp4"):
        adapt_to_footage(start, [broken], tmp_path / "bad", TINY)
    short = make_video(tmp_path / "short.mp4", frames=3, size=(48, 40))
    with pytest.raises(ValueError, match="fewer than one footage batch"):
        adapt_to_footage(start, [short], tmp_path / "short", TINY)
    with pytest.raises(ValueError, match="steps"):
        FootageOptions(steps=-1)
