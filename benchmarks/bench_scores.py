"""Calibrate the per-landmark confidence of ``LandmarkModel.detect(images, return_scores=True)``.

Positives: the first ``--faces`` AFLW test faces of MTFL (``test.csv``, 80x80 crops, detected as they
are: ``detect`` resizes them to the model's input). Negatives, as many: a third uniform noise, a third
constant images (black, grey, white and random colours), a third shuffled-patch faces (other test
faces cut into ``--patch`` x ``--patch`` pixel patches, permuted). Each candidate score is averaged
over the image's landmarks; the ROC AUC of that mean separates faces from non-faces. Also printed:
the mean score of the faces flipped, zoomed out (the face at half size on a grey canvas) and zoomed
in (the central 60 % upscaled), and which regressor file was measured (sha256 prefix).

Candidates (model-input pixels, ``K`` heatmaps per landmark):

- ``peak``: peakiness, mean over ``K`` of each heatmap's largest probability;
- ``agree@s``: ``exp(-spread / s)``, spread = RMS distance of the ``K`` soft-argmax points from their mean;
- ``mass@r``: probability mass within ``r`` cells (Chebyshev) of the predicted landmark, mean over ``K``;
- ``own-mass@r``: the same around each heatmap's own soft-argmax point;
- ``sharp@s``: ``exp(-d / s)``, d = expected distance of a heatmap's mass from its own soft-argmax point;
- ``library``: what ``detect(return_scores=True)`` returns.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/bench_scores.py            # resnet18-faces, 500 + 500 images
    HF_HUB_OFFLINE=1 python benchmarks/bench_scores.py --model runs/bundle --faces 200
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contrastive_landmarks import LandmarkModel  # noqa: E402
from contrastive_landmarks.coords import cell_centers  # noqa: E402
from contrastive_landmarks.data import MTFL  # noqa: E402
from contrastive_landmarks.hub import resolve_weights  # noqa: E402
from contrastive_landmarks.pipeline import Regression, landmark_scores  # noqa: E402


def roc_auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half (Mann-Whitney U)."""
    pos, neg = positive.double().flatten(), negative.double().flatten()
    greater = (pos[:, None] > neg[None, :]).double().sum()
    ties = (pos[:, None] == neg[None, :]).double().sum()
    return float((greater + 0.5 * ties) / (pos.numel() * neg.numel()))


def shuffle_patches(images: torch.Tensor, patch: int, generator: torch.Generator) -> torch.Tensor:
    """Each ``(3, H, W)`` image cut into ``patch``-pixel squares, permuted (``H``, ``W`` multiples of ``patch``)."""
    b, c, h, w = images.shape
    gh, gw = h // patch, w // patch
    tiles = images.reshape(b, c, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c, patch, patch)
    out = torch.stack([t[torch.randperm(gh * gw, generator=generator)] for t in tiles])
    return out.reshape(b, gh, gw, c, patch, patch).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def negatives(faces: torch.Tensor, count: int, patch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    size = faces.shape[-2:]
    n_noise = count // 3
    n_const = count // 3
    n_shuffle = count - n_noise - n_const
    noise = torch.rand(n_noise, 3, *size, generator=generator)
    fixed = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0]])
    colours = torch.cat([fixed, torch.rand(n_const - len(fixed), 3, generator=generator)])
    constant = colours[:, :, None, None].expand(-1, -1, *size).contiguous()
    shuffled = shuffle_patches(faces[:n_shuffle], patch, generator)
    return {"noise": noise, "constant": constant, "shuffled": shuffled}


def candidates(model: LandmarkModel, r: Regression) -> dict[str, torch.Tensor]:
    """Every candidate, ``(B, N)``."""
    probs = r.probs.double()  # (B, N, K, h, w)
    b, n, k, h, w = probs.shape
    flat = probs.reshape(b, n, k, h * w)
    side = model.input_size or (h, w)
    to_px = torch.tensor([side[1] / 2, side[0] / 2], dtype=torch.float64)  # normalised -> model pixels
    inter = r.intermediate.double() * to_px  # (B, N, K, 2)
    spread = (inter - inter.mean(2, keepdim=True)).norm(dim=-1).pow(2).mean(-1).sqrt()  # (B, N)
    grid = cell_centers((h, w), dtype=torch.float64)  # (hw, 2) normalised
    cell = torch.tensor([2 / w, 2 / h], dtype=torch.float64)
    out = {"peak": flat.amax(-1).mean(-1)}
    for s in (4.0, 8.0, 16.0, 24.0, 32.0):
        out[f"agree@{s:g}px"] = torch.exp(-spread / s)
    # cells as (col, row) offsets from a point, in cell units
    final = r.normalized.double()[:, :, None, None, :]  # (B, N, 1, 1, 2)
    own = r.intermediate.double()[:, :, :, None, :]  # (B, N, K, 1, 2)
    d_final = ((grid - final) / cell).abs().amax(-1)  # (B, N, 1, hw) Chebyshev, cells
    d_own = ((grid - own) / cell).abs().amax(-1)  # (B, N, K, hw)
    for radius in (1, 2, 3):
        out[f"mass@{radius}"] = (flat * (d_final <= radius + 0.5)).sum(-1).mean(-1)
        out[f"own-mass@{radius}"] = (flat * (d_own <= radius + 0.5)).sum(-1).mean(-1)
    dist_px = ((grid - own) * to_px).norm(dim=-1)  # (B, N, K, hw) model pixels
    expected = (flat * dist_px).sum(-1)  # (B, N, K)
    for s in (1.0, 2.0, 4.0):
        out[f"sharp@{s:g}px"] = torch.exp(-expected / s).mean(-1)
    logits = r.heatmaps.double().reshape(b, n, k, h * w)
    for m in (1.0, 3.0, 10.0, 30.0):
        out[f"peak×{m:g}"] = torch.softmax(logits * m, -1).amax(-1).mean(-1)
    z = (logits.amax(-1) - logits.mean(-1)) / logits.std(-1)
    out["peak z"] = z.mean(-1)
    out["max logit"] = logits.amax(-1).mean(-1)
    out["logit range"] = (logits.amax(-1) - logits.mean(-1)).mean(-1)
    top = logits.argmax(-1, keepdim=True)  # (B, N, K, 1)
    d_top = ((grid[top.squeeze(-1)][..., None, :] - grid) / cell).abs().amax(-1)  # (B, N, K, hw) cells
    for radius in (2, 3, 4, 6):
        outside = logits.masked_fill(d_top <= radius + 0.5, float("-inf")).amax(-1)
        out[f"margin@{radius}"] = (logits.amax(-1) - outside).mean(-1)
    combine = model.regressor.combine.detach().double().reshape(n, 2, k, 2)  # (N, out xy, K, in xy)
    importance = combine.pow(2).sum((1, 3)).sqrt()  # (N, K)
    importance = importance / importance.sum(-1, keepdim=True)
    grid_px = grid * to_px
    for m in (0.5, 1.0, 2.0):
        soft = torch.softmax(logits * m, -1)
        for radius in (1, 2, 3, 4):
            mass = (soft * (d_top <= radius + 0.5)).sum(-1)  # (B, N, K)
            out[f"own-mass×{m:g}@{radius}"] = mass.mean(-1)
            out[f"w-own-mass×{m:g}@{radius}"] = (mass * importance).sum(-1)
        mean = soft @ grid_px  # (B, N, K, 2)
        second = torch.einsum("bnkl,li,lj->bnkij", soft, grid_px, grid_px)
        cov = second - mean[..., :, None] * mean[..., None, :]  # (B, N, K, 2, 2)
        cov_l = torch.einsum("nakc,znkcd,nekd->znae", combine, cov, combine)  # (B, N, 2, 2)
        std_l = cov_l.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(0).sqrt()
        out[f"prop-std×{m:g}"] = torch.exp(-std_l / 4)
    for a in ("own-mass×0.5@2", "own-mass×0.5@3", "own-mass×0.5@4", "own-mass×1@2", "own-mass×1@3"):
        for g in ("agree@8px", "agree@16px", "agree@24px", "agree@32px"):
            out[f"{a} · {g}"] = out[a] * out[g]
    out["library"] = landmark_scores(r).double()
    return out


@torch.no_grad()
def score(model: LandmarkModel, images: torch.Tensor, batch: int) -> dict[str, torch.Tensor]:
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(images), batch):
        for name, value in candidates(model, model.regression(images[start : start + batch])).items():
            parts.setdefault(name, []).append(value)
    return {name: torch.cat(values) for name, values in parts.items()}


def sha256_prefix(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet18-faces")
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "mtfl"))
    parser.add_argument("--faces", type=int, default=500, help="positives (and as many negatives)")
    parser.add_argument("--patch", type=int, default=8, help="side of the shuffled patches in pixels (default 8)")
    parser.add_argument("--offset", type=int, default=0, help="first test.csv row used (default 0)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    model = LandmarkModel.from_pretrained(args.model)
    regressor_file = resolve_weights(args.model).weights.parent / "regressor.safetensors"
    data = MTFL(args.root, "test")
    total = 2 * args.faces
    if len(data) < args.offset + total:
        raise SystemExit(f"{args.root}/test.csv has {len(data)} faces, fewer than --offset + 2 x --faces")
    images = torch.stack([data[i]["image"] for i in range(args.offset, args.offset + total)])
    faces, others = images[: args.faces], images[args.faces :]
    generator = torch.Generator().manual_seed(args.seed)
    negative_sets = negatives(others, args.faces, args.patch, generator)

    pos = score(model, faces, args.batch)
    neg_parts = {name: score(model, x, args.batch) for name, x in negative_sets.items()}
    neg = {name: torch.cat([part[name] for part in neg_parts.values()]) for name in pos}
    side = faces.shape[-1]
    inner = round(0.6 * side)
    offset = (side - inner) // 2
    zoom_in = F.interpolate(
        faces[:, :, offset : offset + inner, offset : offset + inner],
        size=(side, side),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    ).clamp(0, 1)
    zoom_out = torch.full_like(faces, 0.5)
    half = side // 2
    zoom_out[:, :, half // 2 : half // 2 + half, half // 2 : half // 2 + half] = F.interpolate(
        faces, size=(half, half), mode="bilinear", align_corners=False, antialias=True
    ).clamp(0, 1)
    variants = {
        "flipped": score(model, faces.flip(-1), args.batch),
        "zoomed out 0.5x": score(model, zoom_out, args.batch),
        "zoomed in 1.67x": score(model, zoom_in, args.batch),
    }

    print(
        f"model {args.model}, regressor.safetensors sha256 {sha256_prefix(regressor_file)}, "
        f"{model.regressor.num_landmarks} landmarks x K={model.regressor.heatmaps_per_landmark}, "
        f"multiplier {model.regressor.softmax_multiplier:g}, grid {tuple(model.hypercolumn.size)}"
    )
    kinds = ", ".join(f"{len(v)} {k}" for k, v in negative_sets.items())
    print(
        f"{args.faces} faces (test.csv rows {args.offset}-{args.offset + args.faces - 1}) vs {args.faces} negatives "
        f"({kinds}); "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads"
    )
    header = [
        "candidate",
        "AUC",
        *(f"AUC {k}" for k in negative_sets),
        "faces",
        *negative_sets,
        *variants,
        "min landmark AUC",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in pos:
        mean_pos, mean_neg = pos[name].mean(-1), neg[name].mean(-1)
        per_landmark = min(roc_auc(pos[name][:, j], neg[name][:, j]) for j in range(pos[name].shape[1]))
        cells = [name, f"{roc_auc(mean_pos, mean_neg):.3f}"]
        cells += [f"{roc_auc(mean_pos, part[name].mean(-1)):.3f}" for part in neg_parts.values()]
        cells += [f"{float(mean_pos.mean()):.3f}"]
        cells += [f"{float(part[name].mean()):.3f}" for part in neg_parts.values()]
        cells += [f"{float(v[name].mean()):.3f}" for v in variants.values()]
        cells += [f"{per_landmark:.3f}"]
        print("| " + " | ".join(cells) + " |")
    chosen_pos, chosen_neg = pos["library"].mean(-1), neg["library"].mean(-1)
    print(
        "library score, AUC against the same negatives: "
        + ", ".join(f"{k} {roc_auc(v['library'].mean(-1), chosen_neg):.3f}" for k, v in variants.items())
    )
    errors = [
        (float((chosen_pos < t).double().mean() + (chosen_neg >= t).double().mean()) / 2, float(t))
        for t in torch.cat([chosen_pos, chosen_neg])
    ]
    rate, threshold = min(errors)
    print(f"library score: best threshold on the per-image mean {threshold:.3f} (balanced error {rate:.3f})")
    print(f"(mean scores per image set; AUC of the per-image mean; {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
