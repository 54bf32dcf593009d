"""Spacetime patches: a latent video cut into tokens and put back exactly (Sora's "spacetime
patches"; the token layout is Wan's Conv3d patch embedding flattened, channels outermost).

Axes: B batch, C channels, T H W latent grid, L tokens = T'·H'·W', P = C·pt·ph·pw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from einops import rearrange

from ..latent_formats import LatentFormat

PATTERN = "b c (t pt) (h ph) (w pw) -> b (t h w) (c pt ph pw)"
INVERSE = "b (t h w) (c pt ph pw) -> b c (t pt) (h ph) (w pw)"


def check_divisible(latent_shape: tuple[int, ...], patch_size: tuple[int, int, int]) -> None:
    if len(latent_shape) != 5:
        raise ValueError(f"latent has shape {tuple(latent_shape)}; expected a latent video B×C×T×H×W.")
    for axis, size, patch in zip(
        ("frames (T)", "height (H)", "width (W)"), latent_shape[2:], patch_size, strict=True
    ):
        if size % patch:
            lower, upper = size - size % patch, size - size % patch + patch
            raise ValueError(
                f"latent {axis} = {size} is not divisible by the patch size {patch}: "
                f"use a latent of {lower or upper} or {upper} along that axis."
            )


def patchify(
    latent: torch.Tensor, patch_size: tuple[int, int, int]
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """B×C×T×H×W -> tokens B×L×(C·pt·ph·pw) and the grid (T', H', W')."""
    check_divisible(tuple(latent.shape), patch_size)
    pt, ph, pw = patch_size
    grid = (latent.shape[2] // pt, latent.shape[3] // ph, latent.shape[4] // pw)
    return rearrange(latent, PATTERN, pt=pt, ph=ph, pw=pw), grid


def unpatchify(
    tokens: torch.Tensor, grid: tuple[int, int, int], patch_size: tuple[int, int, int]
) -> torch.Tensor:
    """Tokens B×L×P and their grid -> B×C×T×H×W, the exact inverse of `patchify`."""
    t, h, w = grid
    pt, ph, pw = patch_size
    if tokens.ndim != 3 or tokens.shape[1] != t * h * w or tokens.shape[2] % (pt * ph * pw):
        raise ValueError(
            f"tokens of shape {tuple(tokens.shape)} do not fit grid {grid} with patch {patch_size}: "
            f"expected B×{t * h * w}×(C·{pt * ph * pw})."
        )
    return rearrange(tokens, INVERSE, t=t, h=h, w=w, pt=pt, ph=ph, pw=pw)


@dataclass(frozen=True)
class SpacetimePatches:
    """What flows on a SPACETIME_PATCHES socket: tokens in the DiT's normalised latent space,
    everything needed to turn them back into a LATENT, and the tokens pinned to known values."""

    tokens: torch.Tensor  # B×L×P
    grid: tuple[int, int, int]
    patch_size: tuple[int, int, int]
    latent_format: LatentFormat
    pinned: torch.Tensor | None = None  # B×L bool: True where a token is known
    known: torch.Tensor | None = field(default=None, repr=False)  # B×L×P, the values of pinned tokens

    def __post_init__(self):
        if (self.pinned is None) != (self.known is None):
            raise ValueError("pinned and known go together: give both or neither.")
        if self.pinned is not None and self.pinned.shape != self.tokens.shape[:2]:
            raise ValueError(
                f"pinned has shape {tuple(self.pinned.shape)}, expected {tuple(self.tokens.shape[:2])}."
            )
        if self.known is not None and self.known.shape != self.tokens.shape:
            raise ValueError(
                f"known has shape {tuple(self.known.shape)}, expected {tuple(self.tokens.shape)}."
            )

    @classmethod
    def from_latent(
        cls,
        raw: torch.Tensor,
        patch_size: tuple[int, int, int],
        latent_format: LatentFormat,
        noise_mask: torch.Tensor | None = None,
    ):
        """Cut a raw VAE latent (as a LATENT socket holds it) into normalised tokens. With core's
        `noise_mask` (1: denoise, 0: keep the latent as it is), the tokens it keeps are pinned."""
        tokens, grid = patchify(latent_format.normalize(raw), patch_size)
        if noise_mask is None:
            return cls(tokens=tokens, grid=grid, patch_size=patch_size, latent_format=latent_format)
        pinned = pinned_tokens(noise_mask, tuple(raw.shape), patch_size)
        return cls(tokens, grid, patch_size, latent_format, pinned=pinned, known=tokens.clone())

    @property
    def latent_shape(self) -> tuple[int, int, int, int, int]:
        """The shape of the latent these patches were cut from (B×C×T×H×W)."""
        (t, h, w), (pt, ph, pw) = self.grid, self.patch_size
        return (self.tokens.shape[0], self.tokens.shape[2] // (pt * ph * pw), t * pt, h * ph, w * pw)

    def to_latent(self) -> torch.Tensor:
        """The raw VAE latent these tokens stand for."""
        return self.latent_format.denormalize(unpatchify(self.tokens, self.grid, self.patch_size))

    def noise_mask(self) -> torch.Tensor | None:
        """Core's noise_mask (B×1×T×H×W, 1 where the tokens are denoised, 0 where pinned), or None."""
        if self.pinned is None:
            return None
        pt, ph, pw = self.patch_size
        cells = self.pinned[..., None].expand(-1, -1, pt * ph * pw).float()
        return 1.0 - unpatchify(cells, self.grid, self.patch_size)


def core_mask(noise_mask: torch.Tensor, latent_shape: tuple[int, ...]) -> torch.Tensor:
    """A LATENT's noise_mask brought to the latent's shape B×C×T×H×W as ComfyUI's samplers do
    (comfy.utils.reshape_mask): a mask of fewer than 5 dims is frames×H×W, resized trilinearly, then
    repeated over channels and batch."""
    if noise_mask.ndim < 2 or noise_mask.ndim > 5:
        raise ValueError(
            f"noise_mask has shape {tuple(noise_mask.shape)}; expected H×W, frames×H×W or B×C×T×H×W "
            "(1 where the latent is denoised, 0 where it is kept), as core's mask nodes make."
        )
    _check_mask(noise_mask, latent_shape)
    mask = noise_mask.float()
    if mask.ndim < 5:
        mask = mask.reshape(1, 1, -1, mask.shape[-2], mask.shape[-1])
    mask = torch.nn.functional.interpolate(mask, size=tuple(latent_shape[2:]), mode="trilinear")
    if mask.shape[1] < latent_shape[1]:
        mask = mask.repeat(1, latent_shape[1], 1, 1, 1)[:, : latent_shape[1]]
    batch = latent_shape[0]
    if mask.shape[0] < batch:
        mask = mask.repeat(-(-batch // mask.shape[0]), 1, 1, 1, 1)
    return mask[:batch]


def _check_mask(noise_mask: torch.Tensor, latent_shape: tuple[int, ...]) -> None:
    """What core_mask's resize would hide: values that are not in 0..1, and a frame of other proportions
    than the latent's (a 1×1 mask, one value for everything, fits any)."""
    if not torch.isfinite(noise_mask).all() or noise_mask.min() < 0 or noise_mask.max() > 1:
        raise ValueError(
            "noise_mask holds values outside 0..1 (or NaN): a mask is 1 where the latent is denoised and 0 "
            "where it is kept; connect a mask node's output, or clamp it."
        )
    (height, width), (latent_height, latent_width) = noise_mask.shape[-2:], latent_shape[3:]
    if (height, width) != (1, 1) and abs(width * latent_height / height - latent_width) > 1:
        raise ValueError(
            f"noise_mask frames of {width}x{height} do not have the latent's proportions ({latent_width}x"
            f"{latent_height} latent pixels): it would be stretched. Make the mask at the video's size."
        )


def pinned_tokens(
    noise_mask: torch.Tensor, latent_shape: tuple[int, ...], patch_size: tuple[int, int, int]
) -> torch.Tensor:
    """B×L bool: the tokens core's noise_mask keeps. A token is pinned only where the mask is below 0.5
    on every one of its cells; a token it keeps in part (a soft or unaligned edge) is denoised whole."""
    mask, _ = patchify(core_mask(noise_mask, latent_shape), patch_size)
    return (mask < 0.5).all(dim=-1)
