"""3D rotary position embedding over the (t, h, w) token grid, in float64 as Wan computes it
(Wan-Video/Wan2.1 `rope_params` / `rope_apply`; RoFormer, Su et al. 2021)."""

from __future__ import annotations

import functools

import torch

THETA = 10000.0


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Real dims given to t, h and w: the remainder to time, a third of the rest to each of h and w."""
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


def _axis_frequencies(length: int, dim: int) -> torch.Tensor:
    """length × dim/2 complex rotations for positions 0..length-1."""
    inverse = 1.0 / torch.pow(THETA, torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inverse)
    return torch.polar(torch.ones_like(angles), angles)


@functools.lru_cache(maxsize=16)
def rope_frequencies(grid: tuple[int, int, int], head_dim: int, device: torch.device) -> torch.Tensor:
    """L × head_dim/2 complex128 rotations for the tokens of a T'×H'×W' grid, in (t h w) order."""
    frames, height, width = grid
    f_t, f_h, f_w = (_axis_frequencies(n, d) for n, d in zip(grid, axis_dims(head_dim), strict=True))
    per_token = torch.cat(
        [
            f_t.view(frames, 1, 1, -1).expand(frames, height, width, -1),
            f_h.view(1, height, 1, -1).expand(frames, height, width, -1),
            f_w.view(1, 1, width, -1).expand(frames, height, width, -1),
        ],
        dim=-1,
    )
    return per_token.reshape(frames * height * width, head_dim // 2).to(device)


def apply_rope(x: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """Rotate query or key channels pairwise. x: B×L×N×K (any float dtype) -> float32."""
    pairs = torch.view_as_complex(x.to(torch.float64).unflatten(-1, (-1, 2)))
    rotated = pairs * frequencies[None, :, None, :]
    return torch.view_as_real(rotated).flatten(-2).float()
