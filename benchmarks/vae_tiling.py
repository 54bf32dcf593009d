"""Tiled against untiled VAE decode: PSNR between the two, on Tiny World clips encoded by the same VAE.
Random weights say little here (they mix distant pixels far more than a trained VAE does), so give a
trained VAE file: wan_2.1_vae.safetensors, wan2.2_vae.safetensors or Tiny World's.

    python benchmarks/vae_tiling.py PATH/TO/VAE.safetensors [--size 128] [--frames 9] [--clips 4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from spacetime.training.world import render, sample_scene
from spacetime.vae import frames_to_video, load_vae, video_to_frames

from media import psnr as psnr_uint8
from media import to_uint8


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two IMAGE batches after quantising both to 8 bits, as a video file would."""
    return psnr_uint8(to_uint8(a), to_uint8(b))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("vae", help="a trained Wan-format VAE (.safetensors)")
    parser.add_argument("--size", type=int, default=128, help="frame width and height in pixels")
    parser.add_argument("--frames", type=int, default=9, help="frames per clip (4k+1)")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    vae = load_vae(args.vae, device=args.device)
    stride = vae.spatial_stride
    settings = [(64, 32), (64, 16), (96, 32)] if stride == 8 else [(128, 64), (128, 32), (192, 64)]
    rng = np.random.default_rng(3)
    results = {setting: [] for setting in settings}
    reconstruction = []
    for _ in range(args.clips):
        frames = torch.from_numpy(render(sample_scene(rng), args.frames, args.size, args.size)).float() / 255
        latent = vae.encode(frames_to_video(frames).to(args.device))
        whole = video_to_frames(vae.decode(latent)).cpu()
        reconstruction.append(psnr(whole, frames))
        for tile, overlap in settings:
            tiled = video_to_frames(vae.decode(latent, tile=tile, overlap=overlap)).cpu()
            results[(tile, overlap)].append(psnr(tiled, whole))
    print(
        f"{vae.model.config.name} from {args.vae}: {args.clips} clips of {args.frames}x{args.size}x{args.size}"
    )
    print(f"reconstruction PSNR (untiled vs source): mean {np.mean(reconstruction):.1f} dB\n")
    print("| tile px | overlap px | tiled vs untiled PSNR dB, min | mean |")
    print("|---:|---:|---:|---:|")
    for (tile, overlap), values in results.items():
        print(f"| {tile} | {overlap} | {min(values):.1f} | {np.mean(values):.1f} |")


if __name__ == "__main__":
    main()
