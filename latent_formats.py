"""Latent formats: the per-channel statistics that map raw VAE latents to the DiT's normalised space.

LATENT sockets carry raw latents, as ComfyUI core does; models see `(raw - mean) / std`.
Values from the Wan 2.1 and 2.2 VAE releases (also in ComfyUI's `comfy/latent_formats.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LatentFormat:
    name: str
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self):
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"latent format {self.name}: mean and std need {self.channels} values each")

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.channels) + (1,) * (like.ndim - 2)
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(shape)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(shape)
        return mean, std

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw VAE latent (B×C×T×H×W) -> the DiT's space."""
        self.check_channels(raw)
        mean, std = self._stats(raw)
        return (raw - mean) / std

    def denormalize(self, latent: torch.Tensor) -> torch.Tensor:
        """The DiT's space -> raw VAE latent."""
        self.check_channels(latent)
        mean, std = self._stats(latent)
        return latent * std + mean

    def check_channels(self, latent: torch.Tensor) -> None:
        if latent.ndim != 5 or latent.shape[1] != self.channels:
            other = [
                f.name for f in LATENT_FORMATS.values() if latent.ndim == 5 and f.channels == latent.shape[1]
            ]
            hint = f" It looks like a {other[0]} latent: use the matching VAE and model." if other else ""
            raise ValueError(
                f"latent of shape {tuple(latent.shape)} does not fit {self.name}, which expects "
                f"B×{self.channels}×T×H×W.{hint}"
            )


WAN21 = LatentFormat(
    name="Wan 2.1 VAE",
    channels=16,
    mean=(
        -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
        0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
    ),
    std=(
        2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
        3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
    ),
)  # fmt: skip

WAN22 = LatentFormat(
    name="Wan 2.2 VAE",
    channels=48,
    mean=(
        -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
        -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
        -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
        -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
        -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
        0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
    ),
    std=(
        0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
        0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
        0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
        0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
        0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
        0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
    ),
)  # fmt: skip

LATENT_FORMATS = {f.name: f for f in (WAN21, WAN22)}


def identity_format(channels: int) -> LatentFormat:
    """For models whose latents need no normalisation (mean 0, std 1)."""
    return LatentFormat(f"{channels}-channel latent", channels, (0.0,) * channels, (1.0,) * channels)
