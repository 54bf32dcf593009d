"""A natural-looking moving test pattern: smooth gradients, fine texture and a soft-edged ball in motion.

It checks encoders the way real footage does (flat colour would flatter any codec), and it is
what `python -m spacetime test-pattern` writes.
"""

from __future__ import annotations

import math

import torch


def moving_pattern(num_frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """IMAGE frames (num_frames×height×width×3, floats in 0..1) of a ball crossing a textured scene."""
    if num_frames < 1 or height < 1 or width < 1:
        raise ValueError(
            f"moving_pattern needs at least one frame of one pixel, got {num_frames}x{height}x{width}."
        )
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0.0, 1.0, height), torch.linspace(0.0, 1.0, width), indexing="ij")
    # Fine texture, smoothed so it looks like grain rather than white noise.
    grain = torch.rand(1, 1, height, width, generator=generator)
    grain = torch.nn.functional.avg_pool2d(grain, 3, stride=1, padding=1, count_include_pad=False)[0, 0] - 0.5
    frames = []
    for t in range(num_frames):
        phase = t / max(num_frames - 1, 1)
        sky = torch.stack([0.35 + 0.25 * y, 0.55 + 0.2 * y, 0.85 - 0.3 * y], dim=-1)
        hills = 0.5 + 0.5 * torch.sin(2 * math.pi * (1.5 * x + 0.3 * phase))
        ground = (y > 0.6 + 0.08 * hills).float().unsqueeze(-1)
        field = torch.stack([0.25 + 0.2 * hills, 0.5 + 0.15 * y, 0.2 + 0.05 * x], dim=-1)
        scene = sky * (1 - ground) + field * ground + 0.06 * grain.unsqueeze(-1)
        cx, cy, radius = 0.15 + 0.7 * phase, 0.45 + 0.15 * math.sin(2 * math.pi * phase), 0.12
        distance = torch.sqrt(((x - cx) * width / height) ** 2 + (y - cy) ** 2)  # round in pixels
        edge = 1.5 / height  # anti-aliased over a pixel and a half, as a camera would
        alpha = ((radius - distance) / edge + 0.5).clamp(0, 1).unsqueeze(-1)
        shade = (1.0 - 0.6 * distance / radius).clamp(0.3, 1.0).unsqueeze(-1)
        ball = torch.tensor([0.9, 0.25, 0.15]) * shade
        frames.append((scene * (1 - alpha) + ball * alpha).clamp(0, 1))
    return torch.stack(frames)
