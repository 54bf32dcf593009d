"""3D rotary position embedding over the (t, h, w) token grid (Wan-Video/Wan2.1 `rope_params` /
`rope_apply`; RoFormer, Su et al. 2021). The rotation angles are computed in float64 as Wan does;
the rotation itself is applied in float32 (Wan rotates in float64: the difference is float32
rounding, and it halves the memory and time of this step)."""

from __future__ import annotations

import functools

import torch

THETA = 10000.0


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Real dims given to t, h and w: the remainder to time, a third of the rest to each of h and w."""
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


def _axis_angles(length: int, dim: int) -> torch.Tensor:
    """length × dim/2 rotation angles (float64) for positions 0..length-1."""
    inverse = 1.0 / torch.pow(THETA, torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    return torch.outer(torch.arange(length, dtype=torch.float64), inverse)


@functools.lru_cache(maxsize=16)
def rope_frequencies(grid: tuple[int, int, int], head_dim: int, device: torch.device) -> torch.Tensor:
    """2×L×head_dim/2 float32 (cos, sin) of the rotations of a T'×H'×W' grid's tokens, in (t h w) order."""
    frames, height, width = grid
    f_t, f_h, f_w = (_axis_angles(n, d) for n, d in zip(grid, axis_dims(head_dim), strict=True))
    per_token = torch.cat(
        [
            f_t.view(frames, 1, 1, -1).expand(frames, height, width, -1),
            f_h.view(1, height, 1, -1).expand(frames, height, width, -1),
            f_w.view(1, 1, width, -1).expand(frames, height, width, -1),
        ],
        dim=-1,
    )
    angles = per_token.reshape(frames * height * width, head_dim // 2)
    return torch.stack([angles.cos(), angles.sin()]).float().to(device)


def apply_rope(x: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """Rotate query or key channel pairs (2i, 2i+1) by their angles. x: B×L×N×K -> float32."""
    cos, sin = frequencies[:, None, :, None, :]  # each 1×L×1×K/2
    real, imag = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1).flatten(-2)
