"""Spatially contrastive loss (Eq. 3/4), forward + backward: naive vs streaming (vs Triton on CUDA).

The paper's projector setting: a 48x48 descriptor grid from 96-px inputs, batch 32, d=256, the authors'
loss (cosine / τ with τ=1/7, distance^0.5 in input pixels). Two cases:

- ``self``: x' = x (the projector objective, §3.2);
- ``pair``: a TPS pair (``tps.make_pair`` on 96-px images; the grid is resampled to the 48x48 cells).

Time: median over interleaved repeats (A B A B ...) in one process, first repeat dropped; both wall
time and process CPU time (robust against other jobs on a shared machine; equal to compute time with
one thread). Memory: on CUDA ``torch.cuda.max_memory_allocated`` in-process; on the CPU the growth of
peak RSS (VmHWM, reset through /proc/self/clear_refs) during one forward + backward after a warm-up,
in a fresh subprocess per variant started with ``MALLOC_MMAP_THRESHOLD_=131072`` so that freed blocks
go back to the OS and RSS follows the live tensors.

Optionally (``--soft-argmax``) soft-argmax matching, naive vs ``F.scaled_dot_product_attention``.

    python benchmarks/bench_spatial_contrastive.py [--batch 32] [--size 48] [--dim 256] [--repeats 5]
        [--threads 1] [--cases self pair] [--soft-argmax]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import torch

from contrastive_landmarks import tps
from contrastive_landmarks.losses import spatial_contrastive_loss
from contrastive_landmarks.ops import softmax_expected_coordinates

IMAGE_SCALE = 2  # 96-px images for a 48x48 grid


def _inputs(case: str, batch: int, size: int, dim: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    feats1 = torch.randn(batch, dim, size, size, generator=g).to(device).requires_grad_(True)
    if case == "self":
        return feats1, None, None
    image = IMAGE_SCALE * size
    pair = tps.make_pair(torch.rand(batch, 3, image, image, generator=g), generator=g)
    feats2 = torch.randn(batch, dim, size, size, generator=g).to(device).requires_grad_(True)
    return feats1, feats2, pair.grid.to(device)


def _loss_step(impl: str, feats1, feats2, grid, size: int) -> float:
    loss = spatial_contrastive_loss(feats1, feats2, grid, image_size=IMAGE_SCALE * size, implementation=impl)
    loss.backward()
    return float(loss.detach())


def _soft_argmax_inputs(batch: int, queries: int, size: int, dim: int, device: str):
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(batch, queries, dim, generator=g), dim=-1).to(device)
    k = torch.nn.functional.normalize(torch.randn(batch, size * size, dim, generator=g), dim=-1).to(device)
    return q.requires_grad_(True), k.requires_grad_(True)


def _soft_argmax_step(impl: str, q, k, size: int) -> float:
    out = softmax_expected_coordinates(q, k, (size, size), scale=20.0, implementation=impl)
    total = out.sum()
    total.backward()
    return float(total.detach())


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _rss_kib() -> tuple[int, int]:
    with open("/proc/self/status") as f:
        status = f.read()
    return (int(re.search(r"VmHWM:\s+(\d+)", status).group(1)), int(re.search(r"VmRSS:\s+(\d+)", status).group(1)))


def _child(task: dict) -> None:
    """Peak RSS growth (MiB) of one step after a warm-up, printed as JSON (CPU only)."""
    torch.set_num_threads(task["threads"])
    if task["kind"] == "loss":
        tensors = _inputs(task["case"], task["batch"], task["size"], task["dim"], "cpu")

        def step():
            _loss_step(task["impl"], *tensors, task["size"])
    else:
        tensors = _soft_argmax_inputs(task["batch"], task["queries"], task["size"], task["dim"], "cpu")

        def step():
            _soft_argmax_step(task["impl"], *tensors, task["size"])

    step()
    for t in tensors:
        if isinstance(t, torch.Tensor):
            t.grad = None
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    _, before = _rss_kib()
    step()
    peak, _ = _rss_kib()
    print(json.dumps({"peak_mib": (peak - before) / 1024}))


def _memory(task: dict, device: str, make, step) -> float:
    """Peak memory (MiB) of one step: CUDA allocator peak, or a subprocess's RSS growth on the CPU."""
    if device == "cuda":
        tensors = make()
        step(*tensors)  # warm-up
        for t in tensors:
            if isinstance(t, torch.Tensor):
                t.grad = None
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(*tensors)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", OMP_NUM_THREADS=str(task["threads"]))
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(task)], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def _time(variants: dict, repeats: int, device: str) -> dict:
    """Interleaved repeats; returns {name: (median wall s, median cpu s, value)} without the first repeat."""
    wall = {n: [] for n in variants}
    cpu = {n: [] for n in variants}
    value = {}
    for _ in range(repeats):
        for name, (tensors, step) in variants.items():
            for t in tensors:
                if isinstance(t, torch.Tensor):
                    t.grad = None
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            value[name] = step(*tensors)
            _sync(device)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    keep = slice(1, None) if repeats > 2 else slice(None)
    return {n: (statistics.median(wall[n][keep]), statistics.median(cpu[n][keep]), value[n]) for n in variants}


def _crossover(device: str) -> None:
    """x' = x loss fwd+bwd on small problems: where the streaming form starts to beat the naive one."""
    print("\ncrossover (x' = x, fwd+bwd, CPU time per call)")
    for batch, size, dim in [
        (2, 6, 32),
        (8, 8, 64),
        (8, 12, 64),
        (32, 12, 64),
        (8, 16, 64),
        (16, 16, 64),
        (8, 24, 64),
        (32, 16, 64),
        (32, 16, 256),
        (8, 32, 64),
        (32, 24, 64),
    ]:
        tensors = _inputs("self", batch, size, dim, device)
        calls = max(3, int(2e7 // (batch * size**4)))

        def step(*t, impl, calls=calls, size=size):
            for _ in range(calls):
                _loss_step(impl, *t, size)
            return 0.0

        variants = {impl: (tensors, lambda *t, impl=impl: step(*t, impl=impl)) for impl in ("naive", "streaming")}
        times = _time(variants, 3, device)
        naive, streaming = times["naive"][1] / calls, times["streaming"][1] / calls
        print(
            f"  B={batch:3d} {size}x{size} d={dim:3d}  B*N*M={batch * size**4:.1e}  naive {naive * 1e3:7.2f} ms  "
            f"streaming {streaming * 1e3:7.2f} ms  ratio {streaming / naive:.2f}"
        )


def _header(args, device: str) -> None:
    cpu = platform.processor() or "?"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            found = re.search(r"model name\s*:\s*(.*)", f.read())
        cpu = found.group(1) if found else cpu
    gpu = torch.cuda.get_device_name() if device == "cuda" else "none"
    alloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")} or "glibc defaults"
    print(
        f"machine: {cpu}, {os.cpu_count()} CPUs, GPU {gpu}; torch {torch.__version__}, "
        f"python {platform.python_version()}"
    )
    print(
        f"threads={torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}); allocator for "
        f"timing: {alloc}; CPU memory children: MALLOC_MMAP_THRESHOLD_=131072"
    )
    print(
        f"batch={args.batch} grid={args.size}x{args.size} d={args.dim} image={IMAGE_SCALE * args.size}px "
        f"repeats={args.repeats} (median of the last {max(1, args.repeats - 1)}), load average "
        f"{os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", nargs="+", default=["self", "pair"], choices=["self", "pair"])
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--soft-argmax", action="store_true", help="also time soft-argmax naive vs SDPA")
    parser.add_argument(
        "--crossover", action="store_true", help="only time naive vs streaming on small problems (the 'auto' threshold)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    impls = ["naive", "streaming"] + (["triton"] if device == "cuda" else [])
    _header(args, device)
    if args.crossover:
        _crossover(device)
        return

    for case in args.cases:
        tensors = _inputs(case, args.batch, args.size, args.dim, device)
        variants = {impl: (tensors, lambda *t, impl=impl: _loss_step(impl, *t, args.size)) for impl in impls}
        times = _time(variants, args.repeats, device)
        mem = {}
        if not args.no_memory:
            for impl in impls:
                task = {
                    "kind": "loss",
                    "case": case,
                    "impl": impl,
                    "batch": args.batch,
                    "size": args.size,
                    "dim": args.dim,
                    "threads": args.threads,
                }
                mem[impl] = _memory(
                    task,
                    device,
                    lambda case=case: _inputs(case, args.batch, args.size, args.dim, device),
                    lambda *t, impl=impl: _loss_step(impl, *t, args.size),
                )
        base_wall, base_cpu, base_value = times["naive"]
        print(f"\ncase={case} (loss naive={base_value:.6f})")
        for impl in impls:
            w, c, v = times[impl]
            line = (
                f"  {impl:9s} wall {w * 1e3:8.0f} ms ({w / base_wall:4.2f}x naive)  cpu {c * 1e3:8.0f} ms "
                f"({c / base_cpu:4.2f}x)  |loss-naive| {abs(v - base_value):.1e}"
            )
            if mem:
                line += f"  peak {mem[impl]:7.0f} MiB (naive/this {mem['naive'] / max(mem[impl], 1e-9):5.1f}x)"
            print(line)
        if mem:
            ok_mem = mem["naive"] / max(mem["streaming"], 1e-9) >= 10
            ok_time = times["streaming"][1] / base_cpu <= 1.2
            print(
                f"  bars (streaming): memory >= 10x below naive: {'PASS' if ok_mem else 'FAIL'}; "
                f"cpu time <= 1.2x naive: {'PASS' if ok_time else 'FAIL'}"
            )

    if args.soft_argmax:
        print("\nsoft-argmax (softmax_expected_coordinates), fwd+bwd")
        for queries in (5, 68, args.size * args.size):
            tensors = _soft_argmax_inputs(args.batch, queries, args.size, args.dim, device)
            variants = {
                impl: (tensors, lambda *t, impl=impl: _soft_argmax_step(impl, *t, args.size))
                for impl in ("naive", "sdpa")
            }
            times = _time(variants, args.repeats, device)
            mem = {}
            if not args.no_memory:
                for impl in ("naive", "sdpa"):
                    task = {
                        "kind": "soft_argmax",
                        "impl": impl,
                        "batch": args.batch,
                        "queries": queries,
                        "size": args.size,
                        "dim": args.dim,
                        "threads": args.threads,
                    }
                    mem[impl] = _memory(
                        task,
                        device,
                        lambda q=queries: _soft_argmax_inputs(args.batch, q, args.size, args.dim, device),
                        lambda *t, impl=impl: _soft_argmax_step(impl, *t, args.size),
                    )
            base = times["naive"][1]
            for impl in ("naive", "sdpa"):
                w, c, v = times[impl]
                line = (
                    f"  N={queries:5d} {impl:6s} wall {w * 1e3:8.1f} ms  cpu {c * 1e3:8.1f} ms ({c / base:4.2f}x naive)"
                )
                if mem:
                    line += f"  peak {mem[impl]:7.1f} MiB"
                print(line)


if __name__ == "__main__":
    main()
