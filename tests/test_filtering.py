"""`filtering.filter_track` on synthetic tracks whose truth is known: noise, gaps, a swap, a jump."""

from __future__ import annotations

import math

import numpy as np
import pytest

from contrastive_landmarks.filtering import (
    filter_track,
    find_pcutoff,
    median_filter,
    savgol_coefficients,
    savgol_filter,
)

FRAMES = 600


def truth_track() -> np.ndarray:
    """(600, 3, 2): three body parts on smooth paths (a slow circle, a drift with a sway, a figure of eight),
    40-90 px apart, moving up to about 2 px a frame."""
    t = np.arange(FRAMES, dtype=np.float64)
    head = np.stack([200 + 60 * np.cos(t / 40), 150 + 60 * np.sin(t / 40)], -1)
    tail = np.stack([100 + 0.1 * t + 15 * np.sin(t / 25), 260 + 10 * np.cos(t / 30)], -1)
    paw = np.stack([320 + 30 * np.sin(t / 20), 300 + 20 * np.sin(t / 10)], -1)
    return np.stack([head, tail, paw], 1)


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum(-1).mean()))


@pytest.mark.parametrize("method", ["median", "savgol"])
def test_gaussian_jitter_is_reduced(method):
    truth = truth_track()
    noisy = truth + np.random.default_rng(0).normal(0, 2.0, truth.shape)  # sigma 2 px per coordinate
    likelihood = np.full(truth.shape[:2], 0.9)
    result = filter_track(noisy, likelihood, method=method)
    raw, filtered = rms(noisy, truth), rms(result.xy, truth)
    assert 2.6 < raw < 3.0  # sqrt(2) * 2
    assert filtered < 0.65 * raw, (raw, filtered)
    assert not result.filled.any() and not result.swapped.any()  # noise alone is neither a gap nor an outlier
    np.testing.assert_array_equal(result.likelihood, likelihood)


def test_gaps_below_the_pcutoff_are_interpolated_near_the_truth():
    truth = truth_track()
    rng = np.random.default_rng(1)
    noisy = truth + rng.normal(0, 1.0, truth.shape)
    likelihood = rng.uniform(0.7, 1.0, truth.shape[:2])
    gaps = [(0, slice(100, 112)), (1, slice(300, 306)), (2, slice(450, 453)), (2, slice(0, 4))]
    for part, frames in gaps:  # wrong points the model was unsure of
        noisy[frames, part] = rng.uniform(0, 400, (len(range(*frames.indices(FRAMES))), 2))
        likelihood[frames, part] = rng.uniform(0.0, 0.5)
    noisy[200, 1] = np.nan  # a point that is not there at all
    result = filter_track(noisy, likelihood, pcutoff=0.6)
    expected = np.zeros(truth.shape[:2], bool)
    for part, frames in gaps:
        expected[frames, part] = True
    expected[200, 1] = True
    np.testing.assert_array_equal(result.filled, expected)
    error = np.linalg.norm(result.xy - truth, axis=-1)
    for part, frames in gaps[:3]:  # inside the track: interpolated between the kept frames on either side
        assert error[frames, part].max() < 3.0, (part, frames, error[frames, part])
    # before the first kept frame: held at it, not extrapolated
    assert (result.xy[:4, 2] == result.xy[0, 2]).all() and np.linalg.norm(result.xy[0, 2] - truth[4, 2]) < 3.0
    assert error[200, 1] < 3.0
    assert np.isfinite(result.xy).all()
    # the likelihood stays the model's: filled points are still below the cut-off
    np.testing.assert_array_equal(result.likelihood, likelihood)
    # with a p-cutoff below the gaps' likelihood they are taken at face value, and are far off
    loose = filter_track(noisy, likelihood, pcutoff=0.0, max_jump=math.inf)
    assert np.linalg.norm(loose.xy[100:112, 0] - truth[100:112, 0], axis=-1).max() > 20


def test_a_swap_of_two_body_parts_is_exchanged_back():
    truth = truth_track()
    noisy = truth + np.random.default_rng(2).normal(0, 1.0, truth.shape)
    swapped = noisy.copy()
    swapped[250:254, [0, 2]] = noisy[250:254, [2, 0]]  # head and paw exchanged for 4 frames, confidently
    likelihood = np.full(truth.shape[:2], 0.95)
    likelihood[250:254, 0] = 0.8
    result = filter_track(swapped, likelihood)
    marked = np.zeros(truth.shape[:2], bool)
    marked[250:254, [0, 2]] = True
    np.testing.assert_array_equal(result.swapped, marked)
    assert not result.filled.any()
    error = np.linalg.norm(result.xy - truth, axis=-1)
    assert error[245:260].max() < 3.0, error[245:260]
    assert (result.likelihood[250:254, 2] == 0.8).all() and (result.likelihood[250:254, 0] == 0.95).all()
    # without the swap check (no outliers), the median window of 5 cannot remove a 4-frame swap
    plain = filter_track(swapped, likelihood, max_jump=math.inf)
    assert np.linalg.norm(plain.xy[251:253] - truth[251:253], axis=-1).max() > 50


def test_a_confident_jump_is_an_outlier_and_filled():
    truth = truth_track()
    noisy = truth + np.random.default_rng(3).normal(0, 1.0, truth.shape)
    noisy[400:403, 1] = [380.0, 20.0]  # the tail base jumps somewhere else for 3 frames, with a high likelihood
    likelihood = np.full(truth.shape[:2], 0.99)
    result = filter_track(noisy, likelihood, method="savgol")
    assert result.filled[400:403, 1].all() and result.filled.sum() == 3 and not result.swapped.any()
    assert np.linalg.norm(result.xy[395:408, 1] - truth[395:408, 1], axis=-1).max() < 3.0
    assert 2.0 <= result.max_jump[1] < 20  # 8 x the median distance from the running median, for 1 px noise
    # a threshold above the jump keeps it
    kept = filter_track(noisy, likelihood, method="savgol", max_jump=1000)
    assert not kept.filled.any() and np.linalg.norm(kept.xy[401, 1] - truth[401, 1]) > 100


def test_savgol_matches_scipy_and_its_kernel_is_exact_on_polynomials():
    from scipy import signal  # part of [dev]

    rng = np.random.default_rng(4)
    values = np.cumsum(rng.normal(size=200))
    for window, order in ((5, 2), (9, 2), (11, 3), (7, 0)):
        np.testing.assert_allclose(
            savgol_filter(values, window, order), signal.savgol_filter(values, window, order, mode="interp"), atol=1e-9
        )
    t = np.arange(30.0)
    cubic = 0.01 * t**3 - t**2 + 3
    np.testing.assert_allclose(savgol_filter(cubic, 7, 3), cubic, atol=1e-8)
    assert savgol_coefficients(5, 2).shape == (3, 5)
    np.testing.assert_array_equal(savgol_filter(values[:2], 9), values[:2])  # too short to fit: unchanged
    np.testing.assert_allclose(savgol_filter(values[:6], 9), signal.savgol_filter(values[:6], 5, 2, mode="interp"))


def test_median_filter_repeats_the_ends_and_rejects_even_windows():
    assert median_filter(np.array([5.0, 0.0, 0.0, 1.0]), 5).tolist() == [5.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="odd number"):
        median_filter(np.zeros(4), 4)
    with pytest.raises(ValueError, match="odd number"):
        filter_track(np.zeros((4, 1, 2)), np.ones((4, 1)), window=2)
    with pytest.raises(ValueError, match=r"likelihood must be \(T, N\)"):
        filter_track(np.zeros((4, 2, 2)), np.ones((4, 1)))


def test_a_body_part_never_above_the_cutoff_is_left_as_it_was():
    xy = np.random.default_rng(5).uniform(0, 100, (20, 2, 2))
    likelihood = np.stack([np.full(20, 0.9), np.full(20, 0.1)], 1)
    result = filter_track(xy, likelihood, window=1, max_jump=math.inf)
    np.testing.assert_array_equal(result.xy[:, 1], xy[:, 1])
    assert not result.filled[:, 1].any() and result.unfiltered.tolist() == [False, True]


def test_find_pcutoff_reads_the_project_config(tmp_path):
    assert find_pcutoff(tmp_path / "video.mp4") == (0.6, None)
    project = tmp_path / "project"
    (project / "videos").mkdir(parents=True)
    (project / "config.yaml").write_text(
        "Task: Reaching\n# Plotting configuration\npcutoff: 0.4  # note\ndotsize: 12\n"
    )
    assert find_pcutoff(project / "videos" / "a.mp4") == (0.4, project / "config.yaml")
    (project / "config.yaml").write_text("pcutoff: 4\n")
    with pytest.raises(ValueError, match="pcutoff must be a number in"):
        find_pcutoff(project / "videos" / "a.mp4")


@pytest.mark.data
def test_the_reaching_projects_pcutoff(shared_data):
    value, path = find_pcutoff(shared_data / "dlc-reaching" / "videos" / "any.mp4")
    assert value == 0.4 and path == shared_data / "dlc-reaching" / "config.yaml"


def corrupted(truth: np.ndarray, seed: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """``truth`` with what a pose model gets wrong: 2 px jitter everywhere, wrong points it is unsure of (gaps),
    a confident 4-frame swap of two body parts and a confident 2-frame jump."""
    rng = np.random.default_rng(seed)
    xy = truth + rng.normal(0, 2.0, truth.shape)
    likelihood = rng.uniform(0.8, 1.0, truth.shape[:2])
    for part, start, length in ((0, 80, 15), (1, 200, 8), (2, 330, 4), (0, 500, 6)):
        xy[start : start + length, part] = rng.uniform(0, 400, (length, 2))
        likelihood[start : start + length, part] = rng.uniform(0.0, 0.5, length)
    xy[420:424, [1, 2]] = xy[420:424, [2, 1]]
    xy[150:152, 2] += [150.0, -120.0]
    return xy, likelihood


@pytest.mark.parametrize("method", ["median", "savgol"])
def test_filtered_error_is_much_lower_than_the_raw_one_on_a_known_truth(method):
    truth = truth_track()
    xy, likelihood = corrupted(truth)
    result = filter_track(xy, likelihood, method=method)
    raw, filtered = rms(xy, truth), rms(result.xy, truth)
    assert raw > 20 and filtered < 2.0, (raw, filtered)  # gaps and swaps dominate the raw error
    error = np.linalg.norm(result.xy - truth, axis=-1)
    assert error.max() < 8.0, np.unravel_index(error.argmax(), error.shape)
    assert np.median(error) < 0.6 * np.median(np.linalg.norm(xy - truth, axis=-1))  # the jitter too
    assert result.swapped[420:424, [1, 2]].all() and result.swapped.sum() == 8
    assert result.filled[150:152, 2].all() and result.filled.sum() == 15 + 8 + 4 + 6 + 2


# -- prediction files and the `filter` / `plot-trajectories` commands ----------------------------------------------
def write(path, xy, likelihood, fmt: str):
    from contrastive_landmarks.data.dlc_output import Track, write_track

    names = ["head", "tail_base", "paw"][: xy.shape[1]]
    write_track(path, Track(xy, likelihood, names, list(range(len(xy))), scorer="DLC_resnet50_testNov1shuffle1"), fmt)
    return path


@pytest.mark.parametrize(("name", "fmt"), [("a.h5", "h5"), ("a.csv", "dlc"), ("a.csv", "csv"), ("a.json", "json")])
def test_prediction_files_read_back_as_written(tmp_path, name, fmt):
    from contrastive_landmarks.data.dlc_output import file_format, read_track

    truth = truth_track()[:30]
    likelihood = np.random.default_rng(7).uniform(0, 1, truth.shape[:2])
    track = read_track(write(tmp_path / name, truth, likelihood, fmt))
    assert file_format(tmp_path / name) == fmt and track.key == "frame" and track.index == list(range(30))
    assert track.names == ["head", "tail_base", "paw"]
    tolerance = 0 if fmt in ("h5", "json") else 5e-4  # CSVs hold 3 decimals
    assert np.abs(track.xy - truth).max() <= tolerance and np.abs(track.likelihood - likelihood).max() <= tolerance
    assert track.scorer == ("DLC_resnet50_testNov1shuffle1" if fmt in ("h5", "dlc") else "model")


@pytest.mark.parametrize(("name", "fmt"), [("v.csv", "dlc"), ("v.csv", "csv"), ("v.h5", "h5")])
def test_the_filter_command_writes_the_filtered_track_beside_the_file(tmp_path, capsys, name, fmt):
    from contrastive_landmarks.cli import main
    from contrastive_landmarks.data.dlc_output import file_format, read_track

    truth = truth_track()
    xy, likelihood = corrupted(truth)
    path = write(tmp_path / name, xy, likelihood, fmt)
    assert main(["filter", str(path)]) == 0
    err = capsys.readouterr().err
    assert "600 frames, median, p-cutoff 0.6 from the default: 35 points interpolated, 8 swapped back" in err
    out = tmp_path / f"v_filtered{path.suffix}"
    assert file_format(out) == fmt  # written the way it was read
    filtered = read_track(out)
    assert rms(filtered.xy, truth) < 2.0 < 20 < rms(xy, truth)
    assert filtered.names == ["head", "tail_base", "paw"] and filtered.index == list(range(600))
    np.testing.assert_allclose(filtered.likelihood[:, 0], likelihood[:, 0], atol=5e-4)  # the model's, kept
    assert (tmp_path / "v_filtered.csv").is_file()  # for an .h5: DeepLabCut's CSV beside it
    if fmt == "h5":
        np.testing.assert_allclose(read_track(tmp_path / "v_filtered.csv").xy, filtered.xy, atol=5e-4)


def test_the_filter_command_reads_the_projects_pcutoff_and_names_bad_input(tmp_path, capsys):
    from contrastive_landmarks.cli import main

    project = tmp_path / "project"
    (project / "videos").mkdir(parents=True)
    (project / "config.yaml").write_text("pcutoff: 0.1\n")
    truth = truth_track()
    xy, likelihood = corrupted(truth)
    path = write(project / "videos" / "v.csv", xy, likelihood, "dlc")
    settings = ["--method", "savgol", "--window", "7", "--max-jump", "inf"]  # gaps caught by likelihood alone
    assert main(["filter", str(path), *settings]) == 0
    below = int((likelihood < 0.1).sum())
    config = project / "config.yaml"
    assert f"savgol, p-cutoff 0.1 from {config}: {below} points interpolated" in capsys.readouterr().err
    with_project = read_track_xy(project / "videos" / "v_filtered.csv")
    assert main(["filter", str(path), *settings, "--pcutoff", "0.6"]) == 0
    assert "p-cutoff 0.6 from --pcutoff: 33 points interpolated" in capsys.readouterr().err  # the gaps
    with_cli = read_track_xy(project / "videos" / "v_filtered.csv")
    assert 3 < below < 33 and rms(with_cli, truth) < rms(with_project, truth)

    def one_line(*args: str) -> str:
        assert main(["filter", *map(str, args)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        return err

    likelihood[:, 1] = 0.3  # a body part the model is never sure of: said, not silently passed through
    write(tmp_path / "unsure.csv", xy, likelihood, "dlc")
    assert main(["filter", str(tmp_path / "unsure.csv")]) == 0
    err = capsys.readouterr().err
    assert "; tail_base left unfiltered, no point of it reaching the p-cutoff (set a lower --pcutoff)" in err
    np.testing.assert_allclose(read_track_xy(tmp_path / "unsure_filtered.csv")[:, 1], xy[:, 1], atol=5e-4)

    assert "predictions not found" in one_line(tmp_path / "missing.h5")
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    assert "expected DeepLabCut's CSV" in one_line(tmp_path / "notes.csv")
    (tmp_path / "images.csv").write_text("image,nose_x,nose_y,nose_score\na.png,1,2,0.9\n")
    assert "holds images, not the frames of a video" in one_line(tmp_path / "images.csv")
    (project / "videos" / "v_filtered.csv").unlink()
    (project / "videos" / "v_filtered.csv").mkdir()
    assert "v_filtered.csv: it is a folder" in one_line(path)
    with pytest.raises(SystemExit):
        main(["filter", str(path), "--window", "4"])
    assert "must be an odd number of frames" in capsys.readouterr().err


def read_track_xy(path) -> np.ndarray:
    from contrastive_landmarks.data.dlc_output import read_track

    return read_track(path).xy
