"""The VideoVAE object the nodes use: a causal video VAE with its latent format, which encodes video,
decodes latents (whole, to a sink, or frame by frame, optionally in spatial tiles) and knows its latent
shapes; and the conversions between ComfyUI's IMAGE frames and the VAE's video tensors."""

from __future__ import annotations

import contextlib
import logging
import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .. import host
from ..latent_formats import LatentFormat
from ..parallel import Group
from .causal import CausalVideoVAE
from .tiling import SpatialTiling

log = logging.getLogger(__name__)
MEMORY_HEADROOM = 0.8  # of the free memory a decode may plan to use
ACTIVATION_COPIES = 6  # full-resolution tensors of the decoder's last stage alive at once, at most
AUTO_TILES = (1024, 768, 512, 384, 256)  # pixels, largest first: tiles tried when a whole frame won't fit
AUTO_OVERLAP = 64  # pixels shared by neighbouring automatic tiles
MAX_SIZE = 8192  # pixels: the widest and tallest video the nodes and the command line make
MAX_FRAMES = 4097  # frames of one clip the nodes make at once (a Long Video window at most)


@dataclass
class VideoVAE:
    """A causal video VAE (Wan 2.1 or 2.2) with its latent format: raw latents in, raw latents out."""

    model: CausalVideoVAE
    latent_format: LatentFormat
    dtype: torch.dtype
    device: torch.device | None = (
        None  # where it always runs (the command line's --device); None: placed per use
    )
    parallel: Group | None = None  # processes that decode the spatial tiles in turns (parallel.py)

    @property
    def temporal_stride(self) -> int:
        return self.model.config.temporal_stride

    @property
    def spatial_stride(self) -> int:
        return self.model.config.spatial_stride

    @property
    def latent_channels(self) -> int:
        return self.model.config.z_dim

    @contextlib.contextmanager
    def _on_device(self) -> Iterator[torch.device]:
        """The VAE on the compute device for a decode or encode, with room at least for the work of the
        smallest automatic tile (whole frames or larger tiles when the room is there: auto_tiling)."""
        if self.device is not None:
            yield self.device
            return
        side = AUTO_TILES[-1] // self.spatial_stride
        with host.on_compute_device(self.model, self.decode_bytes(side, side)) as device:
            yield device

    def check_size(self, frames: int, height: int, width: int) -> None:
        """Frames must be 4k+1 and sizes multiples of the spatial stride up to MAX_SIZE; the error names the
        nearest valid values."""
        t, s = self.temporal_stride, self.spatial_stride
        for name, value in (("frames", frames), ("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name}={value!r} must be a whole number, got {type(value).__name__}.")
        if frames < 1 or (frames - 1) % t:
            below = 1 + max(0, (frames - 1) // t) * t
            raise ValueError(
                f"frames={frames} must be {t}k+1 (1, 5, 9, ..., 81, ...): use {below} or {below + t}."
            )
        for name, value in (("height", height), ("width", width)):
            if value < s:
                raise ValueError(
                    f"{name}={value} is below the smallest size this VAE makes, {s} pixels (its stride): "
                    f"use {s} or more."
                )
            if value % s:
                below = value // s * s
                raise ValueError(
                    f"{name}={value} must be a multiple of {s} (the VAE's stride): use {below} or {below + s}."
                )
            if value > MAX_SIZE:
                raise ValueError(f"{name}={value} is above the largest size made, {MAX_SIZE} pixels.")

    def latent_shape(self, frames: int, height: int, width: int, batch: int = 1) -> tuple[int, ...]:
        self.check_size(frames, height, width)
        if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
            raise ValueError(
                f"batch_size={batch!r} must be a whole number, at least 1 (videos made together)."
            )
        s = self.spatial_stride
        return (
            batch,
            self.latent_channels,
            (frames - 1) // self.temporal_stride + 1,
            height // s,
            width // s,
        )

    @torch.no_grad()
    def encode(self, video: torch.Tensor, progress: Callable[[], None] | None = None) -> torch.Tensor:
        """Video B×3×T×H×W in -1..1 (T = 4k+1) -> raw latent B×C×T'×H'×W' (float32)."""
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video of shape {tuple(video.shape)}: expected B×3×T×H×W (RGB).")
        self.check_size(*video.shape[2:])
        with self._on_device() as device:
            return self.model.encode(video.to(device, self.dtype), progress).float()

    def check_latent(self, latent: torch.Tensor) -> None:
        """What a decode needs of a raw latent (its channels, at least one frame, finite values), checked
        before any of it is decoded or written."""
        self.latent_format.check_channels(latent)
        if 0 in latent.shape:
            raise ValueError(
                f"latent of shape {tuple(latent.shape)} is empty (B×C×T×H×W with a size of 0): there is nothing "
                "to decode; connect a latent with at least one frame."
            )
        if not torch.isfinite(latent).all():
            raise ValueError(
                "latent holds NaN or infinite values; the sampler or the model overflowed (try fp32 or bf16 "
                "instead of fp16). Nothing can be decoded from it."
            )

    def decode_bytes(self, height: int, width: int) -> int:
        """What decoding a latent frame of height×width (latent pixels) holds at once, over-estimated: the
        middle block's self-attention over its pixels (scores and their softmax, as an attention kernel
        that materialises them holds them: the CPU's does) and the last stage's activations at full
        resolution (a few tensors of the decoder's width for each of a latent frame's frames)."""
        config, size = self.model.config, self.dtype.itemsize
        tokens = height * width
        width_last = getattr(config, "decoder_dim", config.dim)
        activations = ACTIVATION_COPIES * width_last * self.temporal_stride * tokens * self.spatial_stride**2
        return (2 * tokens * tokens + activations) * size

    def auto_tiling(
        self, latent: torch.Tensor, device: torch.device, free: int | None = None
    ) -> SpatialTiling | None:
        """None when a whole frame's decode fits in the free memory of `device` (or `free` bytes); else the
        largest tiles (AUTO_TILES pixels) that fit, with a console note (the smallest, if none does)."""
        height, width = latent.shape[3:]
        free = int((host.free_memory_bytes(device) if free is None else free) * MEMORY_HEADROOM)
        needed = self.decode_bytes(height, width)
        if needed <= free:
            return None
        s = self.spatial_stride
        fitting = [
            t for t in AUTO_TILES if self.decode_bytes(min(t // s, height), min(t // s, width)) <= free
        ]
        tile = fitting[0] if fitting else AUTO_TILES[-1]
        log.warning(
            "VAE decode of %dx%d frames would hold about %.1f GB and %.1f GB is free: decoding in %d-pixel "
            "tiles (set tile_size to choose them).",
            width * s, height * s, needed / 1e9, free / 1e9, tile,
        )  # fmt: skip
        return SpatialTiling(tile // s, AUTO_OVERLAP // s, s)

    def _chosen_tiling(self, latent: torch.Tensor, tile: int, overlap: int) -> SpatialTiling | None:
        """The latent checked and the tiles asked for: None for whole frames or automatic tiles (tile 0)."""
        self.check_latent(latent)
        return self.tiling(tile, overlap)

    def tiling(self, tile: int, overlap: int) -> SpatialTiling | None:
        """The tiles of `tile` pixels overlapping by `overlap` (checked: a caller may ask before sampling);
        None for whole frames or automatic tiles (tile 0)."""
        return pixel_tiling(tile, overlap, self.spatial_stride)

    @torch.no_grad()
    def decode(
        self,
        latent: torch.Tensor,
        progress: Callable[[], None] | None = None,
        sink=None,
        tile: int = 0,
        overlap: int = 0,
    ) -> torch.Tensor | None:
        """Raw latent B×C×T'×H'×W' -> video B×3×(4T'-3)×H×W in -1..1 (float32), one latent frame at a
        time; with `sink(frames)`, the decoded frames are handed over chunk by chunk instead. `tile`
        and `overlap` (pixels, multiples of the spatial stride) decode in blended spatial tiles; `tile` 0
        decodes whole frames, or tiles when a whole frame would not fit in memory (auto_tiling) or, on a
        GPU, ran out of it (decoded again in tiles; not with a sink, which has had frames already)."""
        tiles = self._chosen_tiling(latent, tile, overlap)
        chunk_sink = None if sink is None else (lambda frames: sink(frames.float()))
        with self._on_device() as device:
            tiles = tiles or self.auto_tiling(latent, device)
            latent = latent.to(device, self.dtype)
            if tiles is not None or sink is not None or device.type != "cuda":
                video = self.model.decode(latent, progress, chunk_sink, tiles, self.parallel)
            else:
                try:
                    video = self.model.decode(latent, progress, None, None)
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    free = host.free_memory_bytes(device) // 2
                    log.warning("VAE decode ran out of memory on %s: decoding again in tiles.", device)
                    tiles = self.auto_tiling(latent, device, free) or SpatialTiling(
                        AUTO_TILES[-1] // self.spatial_stride,
                        AUTO_OVERLAP // self.spatial_stride,
                        self.spatial_stride,
                    )
                    video = self.model.decode(latent, progress, None, tiles, self.parallel)
        return None if video is None else video.float()

    def decode_frames(
        self,
        latent: torch.Tensor,
        progress: Callable[[], None] | None = None,
        tile: int = 0,
        overlap: int = 0,
    ) -> Iterator[torch.Tensor]:
        """Decode as `decode` does, handing over IMAGE frames (F×H×W×3 in 0..1) one latent frame's worth at
        a time, as the consumer (a video encoder) asks for them: it holds a few frames, never the video.
        The latent is checked now, before anything is decoded or written."""
        tiles = self._chosen_tiling(latent, tile, overlap)
        return self._frames(latent, progress, tiles)

    @torch.no_grad()  # around each step of the generator, not between them
    def _frames(self, latent: torch.Tensor, progress, tiles) -> Iterator[torch.Tensor]:
        with self._on_device() as device:
            tiles = tiles or self.auto_tiling(latent, device)
            for item in latent.split(1):
                for frames in self.model.decode_chunks(
                    item.to(device, self.dtype), progress, tiles, self.parallel
                ):
                    yield video_to_frames(frames.float())

    def frames_for(self, latent_frames: int) -> int:
        return 1 + (latent_frames - 1) * self.temporal_stride


def pixel_tiling(tile: int, overlap: int, stride: int) -> SpatialTiling | None:
    """Tiles of `tile` pixels overlapping by `overlap` for a VAE of spatial `stride`: multiples of it, at least
    two latent pixels a tile, overlap below tile; None for tile 0 (whole frames or automatic tiles)."""
    if tile == 0:
        return None
    if tile % stride or overlap % stride or tile < 2 * stride or not 0 <= overlap < tile:
        raise ValueError(
            f"tile={tile}, overlap={overlap}: both must be multiples of {stride} pixels with overlap < tile and "
            f"tile at least {2 * stride} (e.g. tile=512, overlap=64), or tile 0 for whole frames."
        )
    return SpatialTiling(tile // stride, overlap // stride, stride)


def frames_to_video(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE frames T×H×W×3 in 0..1 -> one video 1×3×T×H×W in -1..1."""
    return images.permute(3, 0, 1, 2).unsqueeze(0) * 2.0 - 1.0


def video_to_frames(video: torch.Tensor) -> torch.Tensor:
    """Video B×3×T×H×W in -1..1 -> IMAGE frames (B·T)×H×W×3 in 0..1."""
    return ((video.clamp(-1.0, 1.0) + 1.0) / 2.0).permute(0, 2, 3, 4, 1).flatten(0, 1)
