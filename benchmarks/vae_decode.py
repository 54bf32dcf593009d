"""VAE decode: peak working memory for 5, 17 and 65 latent frames (it must not grow with length), and
time against diffusers' AutoencoderKLWan on the same weights. Prints Markdown tables.

    python benchmarks/vae_decode.py [--vae 2.1|2.2] [--size 256] [--device cpu]

The Wan 2.1 VAE (or 2.2) at its real width with random weights. Decoded frames are handed to a sink and
dropped, so the figure is the decoder's own working memory above what was in use before the decode:
CUDA's peak allocation on a GPU, the peak of live tensor bytes (from the profiler's allocation events)
on the CPU; the decode times in that table include the profiler's overhead. The comparison with diffusers
times the two decoders in alternation, best of a few rounds, so that load from other processes (the CPU
is often shared) falls on both alike; one sequential run of each can be off by 2x or more on a busy machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from spacetime.vae import WAN21, WAN22, Wan21VAE, Wan21VAEConfig, Wan22VAE, Wan22VAEConfig
from spacetime.vae.video_vae import VideoVAE

from memory import TensorPeak
from wan_vae_reference import diffusers_vae, diffusers_vae22, random_vae_state_dict, wan22_state_dict

TIMING_ROUNDS = 3  # ours and diffusers alternate; each keeps its best round


def peak_decode(vae: VideoVAE, latent: torch.Tensor) -> tuple[float, float]:
    start = time.perf_counter()
    with TensorPeak(latent.device) as peak:
        vae.decode(latent, sink=lambda frames: None)
    return time.perf_counter() - start, peak.bytes / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256, help="frame width and height in pixels")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--vae", choices=("2.1", "2.2"), default="2.1", help="which Wan VAE (default 2.1)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.vae == "2.1":
        config = Wan21VAEConfig()
        state = random_vae_state_dict(config)
        reference = diffusers_vae(config, state)
        model, latent_format = Wan21VAE(config), WAN21
    else:
        config = Wan22VAEConfig()
        reference = diffusers_vae22(config)
        state = wan22_state_dict(reference, config.num_res_blocks)
        model, latent_format = Wan22VAE(config), WAN22
    model.load_state_dict(state)
    vae = VideoVAE(model.to(device).eval(), latent_format, torch.float32)
    reference = reference.to(device)
    side, channels = args.size // vae.spatial_stride, vae.latent_channels
    generator = torch.Generator().manual_seed(0)

    print(f"{config.name} (width {config.dim}), {args.size}x{args.size}, fp32 on {args.device}\n")
    print("| latent frames | video frames | decode s (profiled) | working peak MiB |")
    print("|---:|---:|---:|---:|")
    peaks = {}
    for frames in (5, 17, 65):
        latent = torch.randn(1, channels, frames, side, side, generator=generator).to(device)
        seconds, peaks[frames] = peak_decode(vae, latent)
        print(f"| {frames} | {vae.frames_for(frames)} | {seconds:.1f} | {peaks[frames]:.0f} |")
    print(
        f"\ngrowth of the working peak from 17 to 65 latent frames: {100 * (peaks[65] / peaks[17] - 1):+.1f}%"
    )

    latent = torch.randn(1, channels, 5, side, side, generator=generator).to(device)
    runs = {"ours": lambda: vae.decode(latent), "diffusers": lambda: reference.decode(latent).sample}
    seconds = dict.fromkeys(runs, float("inf"))
    with torch.no_grad():
        outputs = {name: run() for name, run in runs.items()}  # also the warm-up
        for _ in range(TIMING_ROUNDS):  # alternating, so a busy machine slows both alike
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                seconds[name] = min(seconds[name], time.perf_counter() - start)
    difference = (outputs["ours"] - outputs["diffusers"]).norm() / outputs["diffusers"].norm()
    print(f"\n| implementation | decode 5 latent frames s (best of {TIMING_ROUNDS}) |")
    print("|---|---:|")
    for name, best in seconds.items():
        print(f"| {name} | {best:.2f} |")
    print(
        f"\nours / diffusers: {seconds['ours'] / seconds['diffusers']:.2f}x; relative difference {difference:.1e}"
    )


if __name__ == "__main__":
    main()
