"""project_stages (project each stage, fused upsample-and-sum) vs concatenate-then-project.

ResNet-50 stage shapes of a 96x96 batch (2048@3², 1024@6², 512@12², 256@24²) -> a 256-d projected map at
48x48, i.e. one 1x1 head on the 3840-channel hypercolumn. Variants, all in one run:

- ``project_stages``: ``ops.project_stages`` (per-stage 1x1 conv at native resolution, then the
  ``upsample_sum`` custom op: Triton on CUDA, chunked channels-last interpolation on the CPU).
- ``commuted, unfused``: the same algebra with ``upsample_sum_reference`` (whole-batch interpolation
  of each stage and ``out + up``), the previous implementation: isolates what the op itself buys.
- ``reference``: ``ops.project_stages_reference`` (upsample, concatenate 3840 channels, 1x1 conv).

Timing: median of ``--repeats`` interleaved repeats (first discarded), forward (no_grad) and forward +
backward w.r.t. the head's weight and bias, in a child process per allocator setting (``reuse``:
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000``, freed memory is reused from the heap; ``default``:
glibc's defaults, blocks >= 32 MB are fresh mmaps that are zero-filled on first touch). Peak memory: one child
process per variant and pass, with ``MALLOC_MMAP_THRESHOLD_=131072`` (freed blocks go back to the OS), peak RSS
growth (VmHWM reset through /proc/self/clear_refs) around one call after a warm-up; on CUDA
``torch.cuda.max_memory_allocated`` growth instead.

    python benchmarks/bench_project_stages.py [--batch 32] [--repeats 7] [--threads 1] [--similarity]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from contrastive_landmarks.ops import (
    project_stages,
    project_stages_reference,
    select_backend,
    stage_similarity,
    stage_similarity_reference,
    upsample_sum_reference,
)

STAGES = [(2048, 3), (1024, 6), (512, 12), (256, 24)]  # ResNet-50 conv5_x..conv2_x at a 96-px input
ALLOCATORS = {"reuse": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}, "default": {}}
MEMORY_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "131072"}
VARIANTS = ("project_stages", "commuted, unfused", "reference")


def _commuted_unfused(maps, weight, bias, size):
    parts = torch.split(weight, [m.shape[1] for m in maps], dim=1)
    projected = [F.conv2d(m, w[:, :, None, None]) for m, w in zip(maps, parts)]
    return upsample_sum_reference(projected, size, bias)


FUNCTIONS = {
    "project_stages": project_stages,
    "commuted, unfused": _commuted_unfused,
    "reference": project_stages_reference,
}


def _setup(args, device):
    gen = torch.Generator().manual_seed(0)
    layout = torch.channels_last if args.layout == "channels_last" else torch.contiguous_format
    maps = [
        torch.randn(args.batch, c, s, s, generator=gen).to(device).contiguous(memory_format=layout) for c, s in STAGES
    ]
    channels = sum(c for c, _ in STAGES)
    weight = (torch.randn(args.dim, channels, generator=gen) / channels**0.5).to(device)
    bias = torch.randn(args.dim, generator=gen).to(device)
    grad = torch.randn(args.batch, args.dim, args.grid, args.grid, generator=gen).to(device)
    return maps, weight, bias, grad


def _call(name, maps, weight, bias, grad, size, backward):
    fn = FUNCTIONS[name]
    if not backward:
        with torch.no_grad():
            return fn(maps, weight, bias, size)
    w, b = weight.detach().requires_grad_(), bias.detach().requires_grad_()
    out = fn(maps, w, b, size)
    out.backward(grad)
    return out.detach(), w.grad, b.grad


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(args, device) -> dict:
    maps, weight, bias, grad = _setup(args, device)
    size = (args.grid, args.grid)
    result = {}
    outs = {}
    for backward in (False, True):
        key = "fwd+bwd" if backward else "fwd"
        samples = {name: [] for name in args.variants}
        for _ in range(args.repeats):
            for name in args.variants:
                _sync(device)
                start = time.perf_counter()
                out = _call(name, maps, weight, bias, grad, size, backward)
                _sync(device)
                samples[name].append(time.perf_counter() - start)
                outs[(key, name)] = out
        result[key] = {name: statistics.median(s[1:] if len(s) > 1 else s) for name, s in samples.items()}
        if "reference" in args.variants:  # agreement with the definition, forward and weight gradients
            ref = outs[(key, "reference")]
            ref = ref if isinstance(ref, tuple) else (ref,)
            result[key + " rel. error"] = {  # max |x - x_ref| / max |x_ref| over output (and dW, db)
                name: max(
                    ((a - b).abs().max() / b.abs().max()).item()
                    for a, b in zip(
                        outs[(key, name)] if isinstance(outs[(key, name)], tuple) else (outs[(key, name)],), ref
                    )
                )
                for name in args.variants
                if name != "reference"
            }
    return result


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory(args, device) -> float:
    """Peak memory growth (MiB) of one call of ``args.variant`` (after a warm-up call)."""
    maps, weight, bias, grad = _setup(args, device)
    size = (args.grid, args.grid)
    backward = args.pass_ == "fwd+bwd"
    _call(args.variant, maps, weight, bias, grad, size, backward)
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        _call(args.variant, maps, weight, bias, grad, size, backward)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _rss_kib("VmHWM")
    _call(args.variant, maps, weight, bias, grad, size, backward)
    return (_rss_kib("VmHWM") - base) / 1024


def _similarity(args, device) -> dict:
    """stage_similarity (exact, hypercolumn-free) vs the materialised reference, forward, no_grad."""
    gen = torch.Generator().manual_seed(0)
    batch, k, grid = args.sim_batch, args.sim_queries, args.sim_grid
    maps = [
        torch.randn(batch, c, s, s, generator=gen).relu().to(device).contiguous(memory_format=torch.channels_last)
        for c, s in STAGES
    ]
    queries = torch.cat([F.normalize(torch.randn(batch, k, c, generator=gen), dim=-1) for c, _ in STAGES], -1)
    queries = queries.to(device)
    fns = {"stage_similarity": stage_similarity, "reference": stage_similarity_reference}
    samples = {name: [] for name in fns}
    with torch.no_grad():
        exact = stage_similarity_reference(queries.double(), [m.double() for m in maps], grid)
        errors = {name: (fn(queries, maps, grid) - exact).abs().max().item() for name, fn in fns.items()}
        for _ in range(args.repeats):
            for name, fn in fns.items():
                _sync(device)
                start = time.perf_counter()
                fn(queries, maps, grid)
                _sync(device)
                samples[name].append(time.perf_counter() - start)
    return {
        "time": {n: statistics.median(s[1:]) for n, s in samples.items()},
        "error vs fp64": errors,
        "shape": f"B={batch}, K={k}, grid {grid}x{grid}",
    }


def _child(args, mode: str, env_extra: dict, extra: list[str]) -> dict:
    env = {**os.environ, **env_extra, "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, __file__, "--child", mode, *extra, *_forward_args(args)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"child {mode} {extra} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _forward_args(args) -> list[str]:
    return [
        "--batch",
        str(args.batch),
        "--grid",
        str(args.grid),
        "--dim",
        str(args.dim),
        "--repeats",
        str(args.repeats),
        "--threads",
        str(args.threads),
        "--layout",
        args.layout,
        "--sim-batch",
        str(args.sim_batch),
        "--sim-queries",
        str(args.sim_queries),
        "--sim-grid",
        str(args.sim_grid),
        "--variants",
        *args.variants,
    ]


def _machine() -> str:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    if torch.cuda.is_available():
        model += f" + {torch.cuda.get_device_name()}"
    return f"{model}, {os.cpu_count()} logical CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--grid", type=int, default=48)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--layout",
        choices=["channels_last", "nchw"],
        default="channels_last",
        help="layout of the stage maps (the library's backbone returns channels_last)",
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--allocators", nargs="+", default=list(ALLOCATORS), choices=list(ALLOCATORS))
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--similarity", action="store_true", help="also time stage_similarity vs its reference")
    parser.add_argument("--sim-batch", type=int, default=8)
    parser.add_argument("--sim-queries", type=int, default=5)
    parser.add_argument("--sim-grid", type=int, default=96)
    parser.add_argument("--child", choices=["time", "memory", "similarity"], help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--pass", dest="pass_", choices=["fwd", "fwd+bwd"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    if args.child:
        result = {"time": _time, "memory": _memory, "similarity": _similarity}[args.child](args, device)
        print(json.dumps(result))
        return

    print(
        f"machine: {_machine()}; torch {torch.__version__}; device {device}; threads {args.threads} "
        f"(OMP_NUM_THREADS={args.threads}); upsample_sum backend: {select_backend(device, torch.float32)}"
    )
    print(
        f"stages {[f'{c}@{s}x{s}' for c, s in STAGES]} ({args.layout}), batch {args.batch} -> "
        f"{args.dim}-d at {args.grid}x{args.grid}; medians of {args.repeats} repeats (first discarded)"
    )
    base = "project_stages"
    for alloc in args.allocators:
        env = ALLOCATORS[alloc] if device.type == "cpu" else {}
        res = _child(args, "time", env, [])
        print(f"\ntime, allocator '{alloc}' ({' '.join(f'{k}={v}' for k, v in env.items()) or 'glibc defaults'}):")
        for key in ("fwd", "fwd+bwd"):
            row = ", ".join(f"{n} {res[key][n] * 1e3:.1f} ms" for n in args.variants)
            ratios = ", ".join(f"{n}/{base} {res[key][n] / res[key][base]:.1f}x" for n in args.variants if n != base)
            print(f"  {key:8s} {row}  |  {ratios}")
            if key + " rel. error" in res:
                errors = ", ".join(f"{n} {e:.1e}" for n, e in res[key + " rel. error"].items())
                print(f"           max|x - x_ref| / max|x_ref| (output{', dW, db' if key != 'fwd' else ''}): {errors}")
    if not args.no_memory:
        env = MEMORY_ALLOCATOR if device.type == "cpu" else {}
        label = (
            "torch.cuda.max_memory_allocated growth"
            if device.type == "cuda"
            else ("peak RSS growth, " + " ".join(f"{k}={v}" for k, v in env.items()))
        )
        print(f"\npeak memory ({label}), one process per variant and pass:")
        for pass_ in ("fwd", "fwd+bwd"):
            peaks = {n: _child(args, "memory", env, ["--variant", n, "--pass", pass_]) for n in args.variants}
            row = ", ".join(f"{n} {peaks[n]:.0f} MiB" for n in args.variants)
            ratios = ", ".join(
                f"{n}/{base} {peaks[n] / max(peaks[base], 1e-9):.1f}x" for n in args.variants if n != base
            )
            print(f"  {pass_:8s} {row}  |  {ratios}")
    if args.similarity:
        env = ALLOCATORS["reuse"] if device.type == "cpu" else {}
        res = _child(args, "similarity", env, [])
        t = res["time"]
        print(
            f"\nstage_similarity, {res['shape']}, forward no_grad, allocator 'reuse': stage_similarity "
            f"{t['stage_similarity'] * 1e3:.1f} ms, reference {t['reference'] * 1e3:.1f} ms "
            f"(reference/stage_similarity {t['reference'] / t['stage_similarity']:.1f}x); max error vs fp64 "
            f"{res['error vs fp64']}"
        )


if __name__ == "__main__":
    main()
