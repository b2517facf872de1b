"""Video frames as unlabelled samples (PyAV): frame count and rate, in-order and random access, named errors."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("av")
import av

from contrastive_landmarks.data.transforms import Resize
from contrastive_landmarks.data.video import VideoFrames, VideoWriter, is_video_file, read_video_frames, video_info

SQUARE = 10  # side of the moving square, pixels


def square_x(i: int) -> int:
    """Left edge of the square in frame ``i`` (it moves 4 px right per frame; rows 10..19)."""
    return 4 + 4 * i


def make_video(
    path: Path,
    frames: int = 10,
    *,
    size: tuple[int, int] = (64, 48),
    codec: str | None = None,
    pix_fmt: str = "yuv420p",
    fps: int = 25,
    options: dict | None = None,
) -> Path:
    """Encode ``frames`` frames of a white square moving right on black with PyAV (libx264, else mpeg4)."""
    width, height = size
    codec = codec or ("libx264" if "libx264" in av.codecs_available else "mpeg4")
    with av.open(str(path), mode="w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        container.start_encoding()
        for i in range(frames):
            array = np.zeros((height, width, 3), np.uint8)
            array[10 : 10 + SQUARE, square_x(i) : square_x(i) + SQUARE] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("video") / "square.mp4")


def centre_x(image: torch.Tensor) -> float:
    """Mean column of the bright pixels of a ``(3, H, W)`` frame."""
    mask = image.mean(0) > 0.5
    return float(mask.nonzero()[:, 1].float().mean())


def test_frames_count_rate_and_content(video):
    info = video_info(video)
    assert (info.num_frames, info.fps, info.width, info.height) == (10, 25.0, 64, 48)
    frames = list(read_video_frames(video))
    assert [i for i, _ in frames] == list(range(10))
    for i, image in frames:
        assert image.shape == (3, 48, 64) and image.dtype == torch.float32
        assert image.min() >= 0 and image.max() <= 1
        assert abs(centre_x(image) - (square_x(i) + (SQUARE - 1) / 2)) < 1.0


def test_dataset_in_order_and_at_random_gives_the_same_frames(video):
    decoded = [image for _, image in read_video_frames(video)]
    data = VideoFrames(video)
    assert (len(data), data.num_frames, data.fps) == (10, 10, 25.0)
    sample = data[3]
    assert set(sample) == {"image", "index"} and sample["index"] == 3
    for order in (range(10), [9, 0, 5, 4, 8, 1, 1, 7], [-1]):
        for i in order:
            assert torch.equal(data[i]["image"], decoded[i]), i
    with pytest.raises(IndexError, match="out of range"):
        data[10]
    # pickles with its decoders dropped (DataLoader workers), and reads on after that
    copy = pickle.loads(pickle.dumps(data))
    assert torch.equal(copy[6]["image"], decoded[6])
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
    assert batch["image"].shape == (4, 3, 48, 64) and batch["index"].tolist() == [0, 1, 2, 3]


def test_every_max_frames_region_and_several_videos(video, tmp_path):
    decoded = [image for _, image in read_video_frames(video)]
    got = list(read_video_frames(video, every=3, max_frames=3, region=(2, 5, 50, 30)))
    assert [i for i, _ in got] == [0, 3, 6]
    for i, image in got:
        assert torch.equal(image, decoded[i][:, 5:30, 2:50])
    other = make_video(tmp_path / "other.mkv", 4)
    data = VideoFrames([video, other], every=2, transform=Resize(32))
    assert len(data) == 5 + 2 and [i.num_frames for i in data.info] == [10, 4]
    assert data.locate(4) == (video, 8) and data.locate(6) == (other, 2)
    assert data[6]["image"].shape == (3, 32, 32) and data[6]["index"] == 6
    with pytest.raises(ValueError, match="per video"):
        data.fps
    with pytest.raises(ValueError, match="not inside the 64x48 frames"):
        VideoFrames(video, region=(0, 0, 65, 10))
    with pytest.raises(ValueError, match="every must be a positive integer"):
        VideoFrames(video, every=0)


def test_grey_video_is_decoded_to_three_channels(tmp_path):
    grey = make_video(tmp_path / "grey.mkv", 3, codec="ffv1", pix_fmt="gray")
    (_, image), *_ = read_video_frames(grey)
    assert image.shape == (3, 48, 64) and torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert image[:, 12, square_x(0) + 2].tolist() == [1.0, 1.0, 1.0] and image[:, 0, 0].tolist() == [0.0] * 3


def test_errors_name_the_file(video, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.mp4"):
        VideoFrames(tmp_path / "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    with pytest.raises(ValueError, match=r"cannot read video .*notes\.mp4"):
        VideoFrames(text)
    # half the bytes: mp4's index (moov) is at the end, so the container does not open ...
    data = video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.mp4"):
        read_video_frames(cut)
    # ... and with the index first ("faststart"), the header promises more frames than the data holds
    fast = make_video(tmp_path / "fast.mp4", 40, options={"movflags": "faststart"}).read_bytes()
    (tmp_path / "cut_fast.mp4").write_bytes(fast[: len(fast) // 2])
    with pytest.raises(ValueError, match=r"cut_fast\.mp4 is truncated: its header promises 40 frames"):
        video_info(tmp_path / "cut_fast.mp4")
    empty = make_video(tmp_path / "empty.avi", 0, codec="mpeg4")
    with pytest.raises(ValueError, match=r"empty\.avi holds no frames"):
        VideoFrames(empty)
    with pytest.raises(ValueError, match=r"empty\.mp4.*no video stream"):
        VideoFrames(make_video(tmp_path / "empty.mp4", 0))


def test_missing_pyav_names_the_extra(video, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    with pytest.raises(ImportError, match=r"\[video\]"):
        VideoFrames(video)
    assert is_video_file(video) and not is_video_file(video.with_suffix(".png"))


def test_is_video_file_by_suffix_or_content(video, tmp_path):
    assert is_video_file(tmp_path / "later.MOV")
    unnamed = tmp_path / "recording.bin"
    unnamed.write_bytes(video.read_bytes())
    assert is_video_file(unnamed) and video_info(unnamed).num_frames == 10
    (tmp_path / "notes.txt").write_text("hello")
    assert not is_video_file(tmp_path / "notes.txt")


def test_writer_round_trip_pads_odd_sizes(tmp_path):
    frames = torch.zeros(5, 3, 33, 45)
    for i in range(5):
        frames[i, :, 5:15, 4 * i : 4 * i + 10] = 1
    with VideoWriter(tmp_path / "out.mp4", 30) as writer:
        writer.write(frames[:3])
        writer.write(frames[3])
        writer.write(frames[4:])
    info = video_info(tmp_path / "out.mp4")
    assert (info.num_frames, info.fps, info.width, info.height) == (5, 30.0, 46, 34)
    for i, image in read_video_frames(tmp_path / "out.mp4"):
        assert abs(centre_x(image[:, :33, :45]) - (4 * i + 4.5)) < 1.0


@pytest.mark.data
def test_real_recording(shared_data):
    path = shared_data / "lp-mirror-mouse" / "videos" / "test_vid.mp4"
    data = VideoFrames(path)
    info = data.info[0]
    assert (len(data), info.num_frames, info.fps, info.width, info.height) == (994, 994, 250.0, 396, 406)
    decoded = dict(read_video_frames(path, max_frames=260))
    assert len(decoded) == 260 and decoded[0].shape == (3, 406, 396)
    # the keyframes are ~200 frames apart: these seek back, forward past the gap and to a frame after a keyframe
    for i in (250, 3, 259, 120, 121, 0):
        assert torch.equal(data[i]["image"], decoded[i]), i
    assert data[993]["image"].shape == (3, 406, 396)
