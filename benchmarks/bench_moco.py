"""Images/s of a MoCo training step (augment + query fwd/bwd + key fwd + queue), ResNet-18/50.

Usage::

    python benchmarks/bench_moco.py --archs resnet18 --size 64 --batch 64 --steps 5 --threads 1 \
        --variants fp32 bf16 bf16-cl

Reports the median over ``--steps`` timed steps (after one warm-up) of: the batched augmentation of
both views alone, the model step alone (forward, backward, SGD, key update, enqueue), and both, for
each variant of the step, and the ratio of each variant's total to the first variant's (same run):

- ``fp32``: float32, contiguous (the loop before autocast on the CPU);
- ``bf16``: bfloat16 autocast (what ``precision="auto"`` picks on a CPU with native bf16);
- ``bf16-cl``: bfloat16 autocast with channels-last weights and inputs;
- ``fp32-cl``: float32 with channels-last.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from contrastive_landmarks.train.moco import MoCo
from contrastive_landmarks.train.moco_views import MoCoAugment, get_preset

VARIANTS = {
    "fp32": (None, False),
    "fp32-cl": (None, True),
    "bf16": (torch.bfloat16, False),
    "bf16-cl": (torch.bfloat16, True),
}


def bench(
    arch: str, size: int, batch: int, steps: int, device: torch.device, jpeg: bool, variant: str = "fp32"
) -> dict:
    dtype, channels_last = VARIANTS[variant]
    preset = get_preset("faces", size)
    augment = MoCoAugment.from_preset(preset, jpeg=jpeg).to(device)
    torch.manual_seed(0)
    model = MoCo(arch, queue_size=4096, mean=preset.mean, std=preset.std).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.03, momentum=0.9, weight_decay=1e-4
    )
    images = torch.randint(0, 256, (batch, 3, preset.resize, preset.resize), dtype=torch.uint8, device=device)
    aug_times, step_times = [], []
    for step in range(steps + 1):
        tick = time.perf_counter()
        views = augment(torch.cat([images, images]), torch.Generator().manual_seed(step))
        if device.type == "cuda":
            torch.cuda.synchronize()
        middle = time.perf_counter()
        im_q, im_k = views.chunk(2)
        if channels_last:
            im_q = im_q.contiguous(memory_format=torch.channels_last)
            im_k = im_k.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss, _ = model(im_q, im_k)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        end = time.perf_counter()
        if step:  # the first step is a warm-up
            aug_times.append(middle - tick)
            step_times.append(end - middle)
    aug, model_step = statistics.median(aug_times), statistics.median(step_times)
    return {
        "arch": arch,
        "variant": variant,
        "size": size,
        "batch": batch,
        "jpeg": jpeg,
        "augment_img_s": batch / aug,
        "model_img_s": batch / model_step,
        "total_img_s": batch / (aug + model_step),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--size", type=int, default=96, help="network input side (faces preset framing)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-jpeg", action="store_true", help="leave out the JPEG-noise augmentation")
    parser.add_argument("--variants", nargs="+", default=["fp32", "bf16"], choices=sorted(VARIANTS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")
    for arch in args.archs:
        first = None
        for variant in args.variants:
            r = bench(arch, args.size, args.batch, args.steps, device, not args.no_jpeg, variant)
            first = first or r["total_img_s"]
            print(
                f"{r['arch']:>9} {variant:>8} {r['size']}px batch {r['batch']} jpeg={r['jpeg']}: augment "
                f"{r['augment_img_s']:.0f} img/s, model step {r['model_img_s']:.1f} img/s, total "
                f"{r['total_img_s']:.1f} img/s, {r['total_img_s'] / first:.2f}x {args.variants[0]} "
                f"(median of {args.steps})"
            )


if __name__ == "__main__":
    main()
