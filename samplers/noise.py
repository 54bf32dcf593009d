"""The starting noise, seeded as ComfyUI core seeds it, and the noised latent a flow model starts from."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .solvers import append_dims

MAX_SEED = 2**64 - 1  # ComfyUI's seed widgets go up to 0xffffffffffffffff


def initial_noise(shape: Sequence[int], seed: int, batch_index: Sequence[int] | None = None) -> torch.Tensor:
    """Standard normal float32 noise for a latent of `shape`, drawn on the CPU from a local generator,
    value for value as ComfyUI's `comfy.sample.prepare_noise` draws it from the global one: a seed gives
    core's noise on any device and the global random state is left alone.

    `batch_index` is core's LATENT "batch_index": latent k gets the draw numbered batch_index[k], one
    shape[1:] draw at a time, so a latent picked out of a batch keeps the noise it had there."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed={seed!r} must be a whole number from 0 to {MAX_SEED} (2**64 - 1).")
    generator = torch.Generator("cpu").manual_seed(seed)
    if batch_index is None:
        return torch.randn(tuple(shape), generator=generator, dtype=torch.float32, device="cpu")
    batch_index = list(batch_index)
    if len(batch_index) != shape[0] or any(
        isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in batch_index
    ):
        raise ValueError(
            f"batch_index={batch_index} must hold one whole number >= 0 per latent ({shape[0]} of them)."
        )
    draws = {}
    for k in range(max(batch_index) + 1):  # every draw up to the largest index, keeping those used
        draw = torch.randn((1, *shape[1:]), generator=generator, dtype=torch.float32, device="cpu")
        if k in batch_index:
            draws[k] = draw
    return torch.cat([draws[k] for k in batch_index])


def noise_scaling(sigma, noise: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """The flow's point at noise level sigma, sigma·noise + (1 - sigma)·latent: ComfyUI's CONST
    `noise_scaling` (comfy/model_sampling.py), in its argument order. At a schedule's first sigma it turns
    a latent into a sampler's start: pure noise at 1, a partly kept latent below (video to video).
    `latent` is in the model's normalised space; sigma is a number, a scalar tensor or one per batch item."""
    sigma = append_dims(torch.as_tensor(sigma, dtype=latent.dtype, device=latent.device), latent.ndim)
    return sigma * noise.to(latent.device, latent.dtype) + (1 - sigma) * latent
