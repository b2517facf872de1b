"""Plots render to PNGs of the right size; PCA and NMF checked against naive references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contrastive_landmarks import viz

pytest.importorskip("matplotlib")
PIL = pytest.importorskip("PIL.Image")


def png_size(path):
    assert path.is_file() and path.stat().st_size > 2000
    with PIL.open(path) as image:
        return image.size  # (width, height)


def test_plot_landmarks(tmp_path):
    images = torch.rand(5, 3, 40, 40)
    target = torch.rand(5, 5, 2) * 39
    fig = viz.plot_landmarks(
        images,
        target + 1,
        target,
        torch.rand(5, 5) > 0.2,
        ncols=3,
        panel=1.5,
        dpi=80,
        titles=[f"{i}" for i in range(5)],
        path=tmp_path / "lm.png",
    )
    assert len(fig.axes) == 5
    assert png_size(tmp_path / "lm.png") == (3 * 1.5 * 80, 2 * 1.5 * 80)


def test_plot_matches(tmp_path):
    a, b = torch.rand(3, 32, 32), torch.rand(3, 32, 32)
    pa = torch.rand(5, 2) * 31
    viz.plot_matches(a, pa, b, pa + 0.5, target_b=pa, panel=2, dpi=50, path=tmp_path / "m.png")
    assert png_size(tmp_path / "m.png") == (200, 100)


def test_pca_rgb_matches_numpy_pca(tmp_path):
    g = torch.Generator().manual_seed(0)
    # three strong directions plus noise: PCA must recover them
    basis = torch.randn(3, 16, generator=g)
    coeff = torch.randn(2, 3, 6, 7, generator=g) * torch.tensor([5.0, 3.0, 2.0]).view(1, 3, 1, 1)
    features = torch.einsum("bkhw,kc->bchw", coeff, basis) + 0.01 * torch.randn(2, 16, 6, 7, generator=g)
    rgb = viz.pca_rgb(features)
    assert rgb.shape == (2, 3, 6, 7) and float(rgb.min()) >= 0 and float(rgb.max()) <= 1
    flat = features.permute(0, 2, 3, 1).reshape(-1, 16).double().numpy()
    centred = flat - flat.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    naive = centred @ vt[:3].T
    ours = rgb.permute(0, 2, 3, 1).reshape(-1, 3).double().numpy()
    for j in range(3):  # each channel is an increasing affine function of the naive component (up to sign)
        inside = (ours[:, j] > 0.02) & (ours[:, j] < 0.98)
        corr = abs(np.corrcoef(ours[inside, j], naive[inside, j])[0, 1])
        assert corr > 0.999
    viz.plot_pca(torch.rand(2, 3, 24, 24), features, ncols=2, panel=1, dpi=60, path=tmp_path / "p.png")
    assert png_size(tmp_path / "p.png") == (120, 120)


def test_nmf_recovers_a_nonnegative_factorisation_and_decreases_error():
    g = torch.Generator().manual_seed(1)
    W0, H0 = torch.rand(200, 4, generator=g), torch.rand(4, 30, generator=g)
    data = W0 @ H0
    errors = []
    for iterations in (5, 50, 500):
        W, H = viz.nmf(data, 4, iterations=iterations)
        assert (W >= 0).all() and (H >= 0).all()
        errors.append(float((data - W @ H).norm() / data.norm()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.02
    with pytest.raises(ValueError, match="non-negative"):
        viz.nmf(data - 1, 2)


def test_nmf_parts_and_plot(tmp_path):
    features = torch.rand(3, 20, 8, 8)
    parts = viz.nmf_parts(features, 4, iterations=20)
    assert parts.shape == (3, 4, 8, 8) and (parts >= 0).all()
    torch.testing.assert_close(parts.amax(dim=(0, 2, 3)), torch.ones(4))
    viz.plot_nmf_parts(torch.rand(3, 3, 32, 32), features, 4, ncols=3, panel=1, dpi=70, path=tmp_path / "n.png")
    assert png_size(tmp_path / "n.png") == (210, 70)


def test_plot_fewshot(tmp_path):
    curves = {"hypercolumn": {10: [20.0, 22.0], 100: [12.0, 12.5], 1000: 9.0}, "conv4_x": {10: 25.0, 100: 15.0}}
    fig = viz.plot_fewshot(curves, title="AFLW_M", figsize=(4, 3), dpi=50, path=tmp_path / "f.png")
    assert png_size(tmp_path / "f.png") == (200, 150)
    assert len(fig.axes[0].get_lines()) >= 2


def test_bad_images_are_named():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        viz.plot_landmarks(torch.rand(2, 1, 8, 8))


def test_plot_trajectories_draws_x_y_and_likelihood_of_each_body_part(tmp_path):
    t = np.arange(120.0)
    xy = np.stack([np.stack([t, 50 + 0 * t], -1), np.stack([200 - t, 10 + t / 2], -1)], 1)  # (T, 2, 2)
    likelihood = np.stack([np.full(120, 0.9), np.linspace(0, 1, 120)], 1)
    scores = torch.from_numpy(likelihood)  # arrays or tensors
    size = {"width": 6, "panel_height": 1.5, "dpi": 80}
    fig = viz.plot_trajectories(
        xy, scores, ["nose", "tail"], pcutoff=0.5, fps=30.0, hide_below_pcutoff=True, path=tmp_path / "t.png", **size
    )
    assert png_size(tmp_path / "t.png") == (6 * 80, round((3 * 1.5 + 0.6) * 80))
    x_panel, y_panel, p_panel = fig.axes[:3]
    assert [line.get_label() for line in x_panel.get_lines()] == ["nose", "tail"]
    np.testing.assert_allclose(x_panel.get_lines()[0].get_xdata(), t / 30.0)  # seconds, with fps
    np.testing.assert_allclose(p_panel.get_lines()[1].get_ydata(), likelihood[:, 1])
    tail_y = y_panel.get_lines()[1].get_ydata()
    assert np.isnan(tail_y[likelihood[:, 1] < 0.5]).all() and np.isfinite(tail_y[likelihood[:, 1] >= 0.5]).all()
    assert y_panel.yaxis_inverted() and p_panel.get_lines()[-1].get_ydata()[0] == 0.5  # the p-cutoff line
    with pytest.raises(ValueError, match=r"xy must be \(T, N, 2\)"):
        viz.plot_trajectories(xy[..., 0], likelihood, ["nose", "tail"])
    with pytest.raises(ValueError, match="1 names for 2 body parts"):
        viz.plot_trajectories(xy, likelihood, ["nose"])


def test_the_plot_trajectories_command_writes_a_png(tmp_path, capsys):
    from contrastive_landmarks.cli import main
    from contrastive_landmarks.data.dlc_output import Track, write_track

    rng = np.random.default_rng(0)
    track = Track(rng.uniform(0, 100, (50, 3, 2)), rng.uniform(0, 1, (50, 3)), ["a", "b", "c"], list(range(50)))
    write_track(tmp_path / "v.csv", track, "dlc")
    assert main(["plot-trajectories", str(tmp_path / "v.csv"), "-o", str(tmp_path / "v.png")]) == 0
    assert png_size(tmp_path / "v.png") == (1000, 720)
    assert "3 body parts, 50 rows, p-cutoff 0.6 from the default" in capsys.readouterr().err
    assert main(["plot-trajectories", str(tmp_path / "v.csv"), "-o", str(tmp_path / "no" / "v.png")]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and err.count("\n") == 1
