"""What flows between nodes (ComfyUI's IMAGE and LATENT), checked where a node takes it in: what a socket
type cannot promise (a tensor at all, its shape and dtype, finite values, IMAGE's 0..1 range, a LATENT's
keys), refused with what was received and how to fix it."""

from __future__ import annotations

import torch

# IMAGE values this far outside 0..1 are a mistake of scale (frames in 0..255), not a resize's overshoot.
IMAGE_RANGE_SLACK = 0.5


def check_image(images, name: str = "images", clamped: bool = False) -> None:
    """An IMAGE batch B×H×W×C of floats: at least one frame of at least one pixel, finite, and in 0..1 up to
    a resize's overshoot (IMAGE_RANGE_SLACK), unless the caller clamps to 0..1 itself (`clamped`)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"{name} must be an IMAGE tensor (B×H×W×3 floats in 0..1), got {type(images).__name__}."
        )
    if images.ndim != 4:
        raise ValueError(
            f"{name} has shape {tuple(images.shape)}; expected an IMAGE batch B×H×W×3 (a single frame needs a "
            "batch dimension of 1)."
        )
    if images.shape[0] == 0:
        raise ValueError(f"{name} holds 0 frames; connect a node that produces at least one frame.")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise ValueError(f"{name} has an empty frame size {images.shape[2]}x{images.shape[1]}.")
    if not images.is_floating_point():
        raise TypeError(
            f"{name} has dtype {images.dtype}; an IMAGE holds floats in 0..1 (from 8-bit values: divide by 255)."
        )
    bad = ~torch.isfinite(images)
    if bad.any():
        frames = bad.flatten(1).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(
            f"{name} holds {int(bad.sum())} NaN or infinite values in {len(frames)} frame(s), first in frame "
            f"{frames[0]}: the node that made them overflowed (a VAE or model in fp16: try fp32 or bf16)."
        )
    if clamped:
        return
    low, high = (float(value) for value in torch.aminmax(images))
    if low < -IMAGE_RANGE_SLACK or high > 1 + IMAGE_RANGE_SLACK:
        hint = " They look like 0..255 values: divide by 255." if high > 2 else ""
        raise ValueError(f"{name} holds values from {low:g} to {high:g}; an IMAGE holds 0..1.{hint}")


def latent_samples(latent, name: str = "latent") -> torch.Tensor:
    """A LATENT's samples: a dict with a float tensor B×C×T×H×W under 'samples', none of its sizes 0, and
    finite."""
    if not isinstance(latent, dict) or "samples" not in latent:
        got = f"a dict with keys {sorted(latent)}" if isinstance(latent, dict) else type(latent).__name__
        raise ValueError(
            f"{name} must be a LATENT (a dict holding the latent under 'samples'), got {got}: connect a node "
            "that outputs a LATENT (Empty Latent Video, VAE Encode, Unpatchify)."
        )
    samples = latent["samples"]
    if not isinstance(samples, torch.Tensor) or not samples.is_floating_point():
        got = samples.dtype if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise TypeError(f"{name}['samples'] must be a float tensor B×C×T×H×W, got {got}.")
    if samples.ndim != 5 or 0 in samples.shape:
        raise ValueError(
            f"{name} has shape {tuple(samples.shape)}; expected a latent video B×C×T×H×W with at least one "
            "item, channel, frame and pixel."
        )
    if not torch.isfinite(samples).all():
        raise ValueError(
            f"{name} holds NaN or infinite values; the sampler or the model overflowed (try fp32 or bf16 "
            "instead of fp16). Nothing can be made from it."
        )
    return samples
