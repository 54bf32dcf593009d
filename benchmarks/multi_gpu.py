"""One video on several GPUs: seconds per denoising step of Wan 2.1 T2V 14B at 720p (81 frames, 1280x720,
classifier-free guidance) with random weights, at 1, 2, 4 and 8 processes, through the same sequence split
that `torchrun --nproc-per-node N -m spacetime generate` uses (parallel.py: Ulysses over NCCL), and with
--parallel-guidance too (guidance's two passes on two halves of the processes).

    python benchmarks/multi_gpu.py [--processes 1 2 4 8] [--guidance] [--steps 2]
    python benchmarks/multi_gpu.py --cpu            # the same script on gloo, a tiny model, 1 and 2 processes

Each row is its own torchrun launch: the model is drawn on every GPU (the same seed on each), one warm-up
step, then --steps timed steps. Rows with more processes than GPUs are left out. Without CUDA it refuses
to run, unless --cpu (which checks the script, not the speed).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time

import torch

MODEL = "Wan 2.1 T2V 14B / Wan 2.2 T2V A14B expert"
FRAMES, HEIGHT, WIDTH = 81, 720, 1280
TINY = {"frames": 9, "height": 64, "width": 96}  # --cpu: a tiny model at a tiny size


def _worker(args: argparse.Namespace) -> None:
    """One process of a torchrun launch: draw the model, sample, print rank 0's timings as JSON."""
    from dataclasses import replace

    import torch.distributed as dist

    from spacetime import parallel
    from spacetime.dit.config import PRESETS
    from spacetime.dit.patchify import SpacetimePatches, patchify
    from spacetime.dit.wan import WanDiT
    from spacetime.samplers.denoiser import Sampling, denoise
    from spacetime.samplers.guidance import Guider

    split, device = parallel.start(None, 2 if args.guidance else 1)
    device = device or torch.device(
        "cuda" if torch.cuda.is_available() else "cpu"
    )  # one process: no torchrun
    config = PRESETS[MODEL]
    if args.cpu:
        config = replace(config, dim=256, ffn_dim=512, num_layers=2, head_dim=64)
    dtype = torch.float32 if args.cpu else torch.bfloat16
    with torch.device("meta"):
        model = WanDiT(config, compute_dtype=dtype)
    generator = torch.Generator(device).manual_seed(0)  # the same weights on every process
    for module in model.modules():
        for name, parameter in list(module.named_parameters(recurse=False)):
            values = torch.empty(parameter.shape, device=device).normal_(
                0, parameter.shape[-1] ** -0.5, generator=generator
            )
            setattr(module, name, torch.nn.Parameter(values.to(dtype), requires_grad=False))
    model.eval().parallel = split
    frames, height, width = (
        (TINY["frames"], TINY["height"], TINY["width"]) if args.cpu else (FRAMES, HEIGHT, WIDTH)
    )
    latent = torch.zeros(1, config.out_channels, (frames - 1) // 4 + 1, height // 8, width // 8)
    tokens, grid = patchify(latent, config.patch_size)
    patches = SpacetimePatches(tokens, grid, config.patch_size, config.latent_format)
    context = (
        torch.randn(1, config.text_len, config.text_dim, generator=torch.Generator().manual_seed(1)) * 0.1
    )
    guider = Guider(model, context, context.clone(), cfg=5.0)
    marks = []

    def step():
        if device.type == "cuda":
            torch.cuda.synchronize()
        marks.append(time.perf_counter())

    with torch.no_grad():
        start = time.perf_counter()
        denoise(guider, patches, Sampling(torch.linspace(1.0, 0.0, args.steps + 2), "euler", seed=0), step)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else 0.0
    if parallel.main_process():
        timed = [b - a for a, b in itertools.pairwise(marks)]  # steps after the first (warm-up)
        row = {"tokens": tokens.shape[1], "seconds_per_step": sum(timed) / len(timed), "peak_gb": peak,
               "first_step": marks[0] - start}  # fmt: skip
        print("RESULT " + json.dumps(row), flush=True)
    if dist.is_initialized():
        dist.barrier()
    parallel.finish()


def _launch(processes: int, args: argparse.Namespace) -> dict | None:
    command = [sys.executable]
    if processes > 1:
        command += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command += [__file__, "--worker", "--steps", str(args.steps)]
    command += ["--guidance"] * args.guidance + ["--cpu"] * args.cpu
    env = os.environ | (
        {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""} if args.cpu else {}
    )  # --cpu: gloo
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode or not lines:
        print(
            f"{processes} processes failed (exit {result.returncode}):\n{result.stderr[-3000:]}",
            file=sys.stderr,
        )
        return None
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument(
        "--guidance", action="store_true", help="also split guidance's passes (--parallel-guidance)"
    )
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step (default 2)")
    parser.add_argument("--cpu", action="store_true", help="check the script on the CPU (gloo, a tiny model)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return 0
    if not args.cpu and not torch.cuda.is_available():
        print("multi_gpu.py measures GPUs and this machine has no CUDA: run it where there are GPUs (or --cpu to "
              "check the script).", file=sys.stderr)  # fmt: skip
        return 2
    available = os.cpu_count() if args.cpu else torch.cuda.device_count()
    counts = [n for n in args.processes if n <= available and (not args.guidance or n % 2 == 0)]
    device = "CPU (gloo, tiny model: checks the script only)" if args.cpu else torch.cuda.get_device_name()
    size = "tiny" if args.cpu else f"{FRAMES} frames {WIDTH}x{HEIGHT}"
    print(f"{MODEL if not args.cpu else 'tiny Wan'}, {size}, cfg 5{', parallel guidance' if args.guidance else ''}; "
          f"{device}, torch {torch.__version__}\n")  # fmt: skip
    print("| processes | tokens | s/step | speed-up | efficiency | peak GB (rank 0) | first step s |")
    # speed-up and efficiency against the first row (1 process when it is measured)
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = None
    for n in counts:
        row = _launch(n, args)
        if row is None:
            continue
        base = base or (n, row["seconds_per_step"])
        speedup = base[1] / row["seconds_per_step"]
        print(f"| {n} | {row['tokens']} | {row['seconds_per_step']:.3f} | {speedup:.2f}x | {speedup * base[0] / n:.0%} | "
              f"{row['peak_gb']:.1f} | {row['first_step']:.1f} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
