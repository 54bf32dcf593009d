"""The Wan 2.2 causal video VAE (Wan-Video/Wan2.2 `wan/modules/vae2_2.py`), as in the TI2V 5B release:
48 latent channels, 4x in time and 16x in space. Each 2x2 pixel patch is folded into 12 channels
before the encoder (and unfolded after the decoder), then three 2x stages downsample space; every
stage adds a weightless shortcut that averages pixels into channels (AvgDown3D) or repeats channels
into pixels (DupUp3D). The causal convolutions, attention, resampling, time cache, chunked encode and
decode and spatial tiling are Wan 2.1's (`wan21.py`). Parameter names are Wan's own.

Axes: B batch, C channels, T frames, H W height and width.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, reduce, repeat
from torch import nn

from .causal import (
    CausalBlock,
    CausalVideoVAE,
    Decoder3d,
    Encoder3d,
    Resample,
    ResidualBlock,
    TimeCache,
    run_layers,
)

RGB = 3


@dataclass(frozen=True)
class Wan22VAEConfig:
    dim: int = 160
    decoder_dim: int = 256
    z_dim: int = 48
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    patch_size: int = 2  # pixels per side folded into channels before the encoder
    name: str = "Wan 2.2 VAE"

    def __post_init__(self):
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError("temporal_downsample needs one entry per downsampling stage (len(dim_mult) - 1)")
        if self.patch_size < 1:
            raise ValueError(f"patch_size={self.patch_size} must be at least 1")

    @property
    def temporal_stride(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    @property
    def spatial_stride(self) -> int:
        return self.patch_size * 2 ** (len(self.dim_mult) - 1)

    @property
    def pixel_channels(self) -> int:
        return RGB * self.patch_size**2


class AvgDown3D(nn.Module):
    """The shortcut around a downsampling stage: each block of factor_t x factor_s x factor_s pixels
    becomes channels (space and time to depth), then runs of consecutive channels are averaged down
    to the stage's width. A chunk whose frame count is not a multiple of factor_t is padded with
    zero frames in front (the first frame of the video is averaged with zeros)."""

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int):
        super().__init__()
        factor = factor_t * factor_s * factor_s
        if in_dim * factor % out_dim:
            raise ValueError(
                f"AvgDown3D: {in_dim} channels x {factor} pixels do not split into {out_dim} groups"
            )
        self.factor_t, self.factor_s = factor_t, factor_s
        self.group = in_dim * factor // out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, 0, 0, -x.shape[2] % self.factor_t, 0))
        s = self.factor_s
        x = rearrange(x, "b c (t ft) (h fh) (w fw) -> b (c ft fh fw) t h w", ft=self.factor_t, fh=s, fw=s)
        return reduce(x, "b (c group) t h w -> b c t h w", "mean", group=self.group)


class DupUp3D(nn.Module):
    """The shortcut around an upsampling stage, AvgDown3D's mirror: each channel is repeated, and the
    copies become a block of factor_t x factor_s x factor_s pixels. The video's first latent frame
    keeps only the last of its factor_t frames (the encoder saw one frame there, not factor_t)."""

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int):
        super().__init__()
        factor = factor_t * factor_s * factor_s
        if out_dim * factor % in_dim:
            raise ValueError(
                f"DupUp3D: {out_dim} channels x {factor} pixels are not copies of {in_dim} channels"
            )
        self.factor_t, self.factor_s = factor_t, factor_s
        self.repeats = out_dim * factor // in_dim

    def forward(self, x: torch.Tensor, first_chunk: bool) -> torch.Tensor:
        x = repeat(x, "b c t h w -> b (c copies) t h w", copies=self.repeats)
        s = self.factor_s
        x = rearrange(x, "b (c ft fh fw) t h w -> b c (t ft) (h fh) (w fw)", ft=self.factor_t, fh=s, fw=s)
        return x[:, :, self.factor_t - 1 :] if first_chunk else x


class DownResidualBlock(CausalBlock):
    """One encoder stage (Wan's Down_ResidualBlock): residual blocks and an optional 2x downsampling
    (also in time when `temporal`), plus the AvgDown3D shortcut of the stage's input."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, temporal: bool, spatial: bool):
        super().__init__()
        self.avg_shortcut = AvgDown3D(in_dim, out_dim, 2 if temporal else 1, 2 if spatial else 1)
        layers = [
            ResidualBlock(in_dim if index == 0 else out_dim, out_dim) for index in range(num_res_blocks)
        ]
        if spatial:
            layers.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, cache: TimeCache) -> torch.Tensor:
        return run_layers(self.downsamples, x, cache) + self.avg_shortcut(x)


class UpResidualBlock(CausalBlock):
    """One decoder stage (Wan's Up_ResidualBlock): residual blocks and an optional 2x upsampling that
    keeps the channels (also in time when `temporal`), plus the DupUp3D shortcut when it upsamples."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, temporal: bool, spatial: bool):
        super().__init__()
        self.avg_shortcut = DupUp3D(in_dim, out_dim, 2 if temporal else 1, 2) if spatial else None
        layers = [
            ResidualBlock(in_dim if index == 0 else out_dim, out_dim) for index in range(num_res_blocks)
        ]
        if spatial:
            layers.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d", upsample_dim=out_dim))
        self.upsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, cache: TimeCache) -> torch.Tensor:
        out = run_layers(self.upsamples, x, cache)
        return out if self.avg_shortcut is None else out + self.avg_shortcut(x, cache.first_chunk)


class Wan22VAE(CausalVideoVAE):
    """Video in -1..1 (B×3×T×H×W, T = 4k+1) <-> raw latent (B×48×(k+1)×H/16×W/16)."""

    def __init__(self, config: Wan22VAEConfig):
        stages = len(config.dim_mult) - 1  # the last stage keeps its size
        dims = [config.dim * m for m in (1, *config.dim_mult)]
        downsamples = [
            DownResidualBlock(
                in_dim, out_dim, config.num_res_blocks,
                temporal=stage < stages and config.temporal_downsample[stage], spatial=stage < stages,
            )
            for stage, (in_dim, out_dim) in enumerate(itertools.pairwise(dims))
        ]  # fmt: skip
        mult = config.dim_mult
        decoder_dims = [config.decoder_dim * m for m in (mult[-1], *mult[::-1])]
        temporal_upsample = config.temporal_downsample[::-1]
        upsamples = [
            UpResidualBlock(
                in_dim, out_dim, config.num_res_blocks + 1,
                temporal=stage < stages and temporal_upsample[stage], spatial=stage < stages,
            )
            for stage, (in_dim, out_dim) in enumerate(itertools.pairwise(decoder_dims))
        ]  # fmt: skip
        super().__init__(
            config,
            Encoder3d(config.pixel_channels, dims, downsamples, config.z_dim * 2),
            Decoder3d(config.z_dim, decoder_dims, upsamples, config.pixel_channels),
        )

    def patchify(self, video: torch.Tensor) -> torch.Tensor:
        p = self.config.patch_size
        return rearrange(video, "b c t (h ph) (w pw) -> b (c pw ph) t h w", ph=p, pw=p)

    def unpatchify(self, frames: torch.Tensor) -> torch.Tensor:
        p = self.config.patch_size
        return rearrange(frames, "b (c pw ph) t h w -> b c t (h ph) (w pw)", ph=p, pw=p)
