"""The causal 3D blocks of Wan's video VAEs (Wan-Video/Wan2.1 `wan/modules/vae.py`), shared by Wan 2.1
(`wan21.py`) and Wan 2.2 (`wan22.py`): 3D convolutions that only look back in time, so a video is
encoded as its first frame, then groups of four frames, and decoded one latent frame at a time, each step
reusing the last frames the previous step saw.

The cache of those frames is an explicit `TimeCache` created per encode or decode call (the reference
keeps it in a list on the module). Parameter names are Wan's own.

Axes: B batch, C channels, T frames, H W height and width.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

CACHE_FRAMES = 2  # a temporal kernel of 3 needs the 2 frames before the chunk
FIRST_CHUNK = "first"  # an upsampling time conv has not run yet (its first frame is not doubled)


@dataclass
class TimeCache:
    """The last input frames of every causal convolution, in call order, for one encode/decode."""

    slots: list = field(default_factory=list)
    index: int = 0
    chunk: int = -1  # the chunk being run, counted from 0

    def start_chunk(self) -> None:
        self.index = 0
        self.chunk += 1

    @property
    def first_chunk(self) -> bool:
        return self.chunk == 0

    def take(self) -> int:
        if self.index == len(self.slots):
            self.slots.append(None)
        self.index += 1
        return self.index - 1


class CausalConv3d(nn.Conv3d):
    """Conv3d padded only on the past side in time (zeros, or the cached frames of the previous chunk)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        t, h, w = self.padding
        self.causal_padding = (w, w, h, h, 2 * t, 0)
        self.padding = (0, 0, 0)

    def forward(self, x: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        padding = list(self.causal_padding)
        if previous is not None and padding[4] > 0:
            x = torch.cat([previous.to(x.device, x.dtype), x], dim=2)
            padding[4] -= previous.shape[2]
        return super().forward(F.pad(x, padding))


def cached_conv(conv: CausalConv3d, x: torch.Tensor, cache: TimeCache | None) -> torch.Tensor:
    """Run a causal conv on one chunk, feeding it the frames it saw last time and remembering new ones."""
    if cache is None:
        return conv(x)
    slot = cache.take()
    previous = cache.slots[slot]
    keep = x[:, :, -CACHE_FRAMES:].clone()
    if keep.shape[2] < CACHE_FRAMES and previous is not None:
        keep = torch.cat([previous[:, :, -1:].to(keep.device), keep], dim=2)
    out = conv(x, previous)
    cache.slots[slot] = keep
    return out


class ChannelRMSNorm(nn.Module):
    """L2-normalise over channels (dim 1), times sqrt(C) and a learned gain (Wan's RMS_norm)."""

    def __init__(self, dim: int, images: bool = True):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, *((1, 1) if images else (1, 1, 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma.to(x.dtype)


class Upsample(nn.Upsample):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type_as(x)


class CausalBlock(nn.Module):
    """A block whose forward takes the call's TimeCache: `block(x, cache)`."""


class Resample(CausalBlock):
    """2x spatial resampling per frame, with a strided or doubling causal time conv for the 3D modes.
    Upsampling halves the channels in Wan 2.1 (`upsample_dim` None) and keeps them in Wan 2.2."""

    def __init__(self, dim: int, mode: str, upsample_dim: int | None = None):
        super().__init__()
        self.mode = mode
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(
                Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                nn.Conv2d(dim, dim // 2 if upsample_dim is None else upsample_dim, 3, padding=1),
            )
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=(2, 2)))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(0, 0, 0))

    def forward(self, x: torch.Tensor, cache: TimeCache) -> torch.Tensor:
        if self.mode == "upsample3d":
            x = self._double_frames(x, cache)
        frames = x.shape[2]
        x = rearrange(
            self.resample(rearrange(x, "b c t h w -> (b t) c h w")), "(b t) c h w -> b c t h w", t=frames
        )
        if self.mode == "downsample3d":
            x = self._halve_frames(x, cache)
        return x

    def _double_frames(self, x: torch.Tensor, cache: TimeCache) -> torch.Tensor:
        """Each frame becomes two (channels split in time), except the very first frame of the video."""
        slot = cache.take()
        previous = cache.slots[slot]
        if previous is None:
            cache.slots[slot] = FIRST_CHUNK
            return x
        keep = x[:, :, -CACHE_FRAMES:].clone()
        if keep.shape[2] < CACHE_FRAMES:
            before = (
                torch.zeros_like(keep) if previous is FIRST_CHUNK else previous[:, :, -1:].to(keep.device)
            )
            keep = torch.cat([before, keep], dim=2)
        x = self.time_conv(x, None if previous is FIRST_CHUNK else previous)
        cache.slots[slot] = keep
        return rearrange(x, "b (two c) t h w -> b c (t two) h w", two=2)

    def _halve_frames(self, x: torch.Tensor, cache: TimeCache) -> torch.Tensor:
        """A stride-2 time conv over the last frame of the previous chunk and this chunk; the first chunk passes."""
        slot = cache.take()
        previous = cache.slots[slot]
        if previous is None:
            cache.slots[slot] = x.clone()
            return x
        keep = x[:, :, -1:].clone()
        x = self.time_conv(torch.cat([previous[:, :, -1:].to(x.device), x], dim=2))
        cache.slots[slot] = keep
        return x


class ResidualBlock(CausalBlock):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.residual = nn.Sequential(
            ChannelRMSNorm(in_dim, images=False), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            ChannelRMSNorm(out_dim, images=False), nn.SiLU(), nn.Dropout(0.0), CausalConv3d(out_dim, out_dim, 3, padding=1),
        )  # fmt: skip
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: TimeCache | None) -> torch.Tensor:
        shortcut = self.shortcut(x)
        for layer in self.residual:
            x = cached_conv(layer, x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x + shortcut


class AttentionBlock(CausalBlock):
    """Single-head self-attention over the pixels of each frame."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = ChannelRMSNorm(dim)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: TimeCache | None = None) -> torch.Tensor:
        t, h = x.shape[2], x.shape[3]
        frames = self.norm(rearrange(x, "b c t h w -> (b t) c h w"))
        q, k, v = rearrange(self.to_qkv(frames), "bt (three c) h w -> three bt 1 (h w) c", three=3)
        out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(rearrange(out, "bt 1 (h w) c -> bt c h w", h=h))
        return x + rearrange(out, "(b t) c h w -> b c t h w", t=t)


def run_layers(layers, x: torch.Tensor, cache: TimeCache) -> torch.Tensor:
    """Run layers in order, feeding the time cache to the causal convolutions and blocks that use it."""
    for layer in layers:
        if isinstance(layer, CausalConv3d):
            x = cached_conv(layer, x, cache)
        elif isinstance(layer, CausalBlock):
            x = layer(x, cache)
        else:
            x = layer(x)
    return x


def middle_blocks(dim: int) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(dim, dim), AttentionBlock(dim), ResidualBlock(dim, dim))


def output_head(dim: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        ChannelRMSNorm(dim, images=False), nn.SiLU(), CausalConv3d(dim, out_channels, 3, padding=1)
    )


class Encoder3d(nn.Module):
    """conv1, the downsampling stages, the middle (with attention), and a head to mean and log-variance."""

    def __init__(self, in_channels: int, dims: list[int], downsamples: list[nn.Module], out_channels: int):
        super().__init__()
        self.conv1 = CausalConv3d(in_channels, dims[0], 3, padding=1)
        self.downsamples = nn.Sequential(*downsamples)
        self.middle = middle_blocks(dims[-1])
        self.head = output_head(dims[-1], out_channels)

    def forward(self, x: torch.Tensor, cache: TimeCache) -> torch.Tensor:
        x = cached_conv(self.conv1, x, cache)
        x = run_layers(self.downsamples, x, cache)
        x = run_layers(self.middle, x, cache)
        return run_layers(self.head, x, cache)


class Decoder3d(nn.Module):
    """conv1, the middle (with attention), the upsampling stages, and a head to pixels."""

    def __init__(self, in_channels: int, dims: list[int], upsamples: list[nn.Module], out_channels: int):
        super().__init__()
        self.conv1 = CausalConv3d(in_channels, dims[0], 3, padding=1)
        self.middle = middle_blocks(dims[0])
        self.upsamples = nn.Sequential(*upsamples)
        self.head = output_head(dims[-1], out_channels)

    def forward(self, x: torch.Tensor, cache: TimeCache) -> torch.Tensor:
        x = cached_conv(self.conv1, x, cache)
        x = run_layers(self.middle, x, cache)
        x = run_layers(self.upsamples, x, cache)
        return run_layers(self.head, x, cache)


class CausalVideoVAE(nn.Module):
    """Encoder, decoder and the two 1x1 convs around the latent, run chunk by chunk in time (Wan 2.1
    and 2.2). Subclasses build the encoder and decoder and may fold pixels into channels."""

    def __init__(self, config, encoder: Encoder3d, decoder: Decoder3d):
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.conv1 = CausalConv3d(config.z_dim * 2, config.z_dim * 2, 1)
        self.conv2 = CausalConv3d(config.z_dim, config.z_dim, 1)
        self.decoder = decoder

    def patchify(self, video: torch.Tensor) -> torch.Tensor:
        """Pixels -> the encoder's input channels (Wan 2.1: as they are)."""
        return video

    def unpatchify(self, frames: torch.Tensor) -> torch.Tensor:
        """The decoder's output channels -> pixels (Wan 2.1: as they are)."""
        return frames

    def encode(self, video: torch.Tensor, progress=None) -> torch.Tensor:
        """The latent mean, encoding the first frame, then four frames at a time."""
        cache, chunks = TimeCache(), []
        stride = self.config.temporal_stride
        starts = [0, *range(1, video.shape[2], stride)]
        for index, start in enumerate(starts):
            cache.start_chunk()
            end = 1 if index == 0 else start + stride
            chunks.append(self.encoder(self.patchify(video[:, :, start:end]), cache))
            if progress:
                progress()
        mean, _log_variance = self.conv1(torch.cat(chunks, dim=2)).chunk(2, dim=1)
        return mean

    def decode(
        self, latent: torch.Tensor, progress=None, sink=None, tiles=None, share=None
    ) -> torch.Tensor | None:
        """Frames in -1..1, one latent frame at a time; with `sink`, each chunk of frames is handed
        to it and nothing is kept (memory does not grow with the number of frames). With `tiles`
        (a SpatialTiling), each chunk is decoded tile by tile, every tile with its own time cache; with
        `share` too (a parallel.Group), the group's processes decode the tiles in turns and share them."""
        chunks = []
        for frames in self.decode_chunks(latent, progress, tiles, share):
            if sink is None:
                chunks.append(frames)
            else:
                sink(frames)
        return torch.cat(chunks, dim=2) if sink is None else None

    def decode_chunks(
        self, latent: torch.Tensor, progress=None, tiles=None, share=None
    ) -> Iterator[torch.Tensor]:
        """The frames of each latent frame in turn (1, then 4 at a time), as `decode` makes them."""
        x = self.conv2(latent)
        regions = tiles.regions(latent.shape[3], latent.shape[4]) if tiles else [(slice(None), slice(None))]
        share = share if tiles and share is not None and share.size > 1 else None
        mine = range(len(regions)) if share is None else range(share.rank, len(regions), share.size)
        caches = {i: TimeCache() for i in mine}
        for index in range(latent.shape[2]):
            parts = [None] * len(regions)
            for i, cache in caches.items():
                rows, columns = regions[i]
                cache.start_chunk()
                part = self.decoder(x[:, :, index : index + 1, rows, columns], cache)
                parts[i] = self.unpatchify(part).clamp_(-1.0, 1.0)
            if share is not None:
                parts = share.share(parts, x)
            yield tiles.blend(parts, latent.shape[3], latent.shape[4]) if tiles else parts[0]
            if progress:
                progress()
