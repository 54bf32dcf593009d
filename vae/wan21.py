"""The Wan 2.1 causal video VAE (Wan-Video/Wan2.1 `wan/modules/vae.py`): 16 latent channels, 4x8x8
compression, built from the causal blocks in `causal.py`.

Axes: B batch, C channels, T frames, H W height and width.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .causal import CausalVideoVAE, Decoder3d, Encoder3d, Resample, ResidualBlock


@dataclass(frozen=True)
class Wan21VAEConfig:
    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    name: str = "Wan 2.1 VAE"

    def __post_init__(self):
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError("temporal_downsample needs one entry per downsampling stage (len(dim_mult) - 1)")

    @property
    def temporal_stride(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    @property
    def spatial_stride(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)


class Wan21VAE(CausalVideoVAE):
    """Video in -1..1 (B×3×T×H×W, T = 4k+1) <-> raw latent (B×16×(k+1)×H/8×W/8)."""

    def __init__(self, config: Wan21VAEConfig):
        stages = len(config.dim_mult) - 1
        dims = [config.dim * m for m in (1, *config.dim_mult)]
        downsamples = []
        for stage, (in_dim, out_dim) in enumerate(itertools.pairwise(dims)):
            for _ in range(config.num_res_blocks):
                downsamples.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if stage < stages:
                temporal = config.temporal_downsample[stage]
                downsamples.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))

        mult = config.dim_mult
        decoder_dims = [config.dim * m for m in (mult[-1], *mult[::-1])]
        temporal_upsample = config.temporal_downsample[::-1]
        upsamples = []
        for stage, (in_dim, out_dim) in enumerate(itertools.pairwise(decoder_dims)):
            if stage > 0:
                in_dim //= 2  # the previous upsampling conv halved the channels
            for _ in range(config.num_res_blocks + 1):
                upsamples.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if stage < stages:
                upsamples.append(
                    Resample(out_dim, "upsample3d" if temporal_upsample[stage] else "upsample2d")
                )
        super().__init__(
            config,
            Encoder3d(3, dims, downsamples, config.z_dim * 2),
            Decoder3d(config.z_dim, decoder_dims, upsamples, 3),
        )
