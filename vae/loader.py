"""Load a Wan video VAE from the files ComfyUI users have (`wan_2.1_vae.safetensors`, fp32/fp16/bf16),
and the VideoVAE object the nodes use: encode video, decode latents, latent shapes and formats."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, describe, read_keys
from ..ops import assign_checkpoint
from .latent_formats import LatentFormat, latent_format_for_channels
from .wan21 import SpatialTiling, Wan21VAE, Wan21VAEConfig

PREFIXES = ("first_stage_model.", "vae.")
_RESAMPLE = re.compile(r"^encoder\.downsamples\.(\d+)\.resample\.1\.weight$")


def config_from_shapes(shapes: dict[str, tuple[int, ...]], source: str) -> Wan21VAEConfig:
    if "decoder.middle.0.residual.0.gamma" not in shapes:
        raise CheckpointError(
            f"{source} does not look like a Wan VAE: it looks like {describe(shapes)}. The VAE loader expects "
            "wan_2.1_vae.safetensors (as ComfyUI ships it in models/vae)."
        )
    z_dim = shapes["conv2.weight"][0]
    if z_dim == 48 or any(
        ".avg_shortcut" in key or "encoder.downsamples.0.downsamples" in key for key in shapes
    ):
        raise CheckpointError(
            f"{source} is the Wan 2.2 VAE (48 latent channels, 16x spatial compression), which this version "
            "cannot load yet. Use wan_2.1_vae.safetensors with Wan 2.1 / 2.2 A14B models."
        )
    resamples = sorted(int(m.group(1)) for key in shapes if (m := _RESAMPLE.match(key)))
    temporal = tuple(f"encoder.downsamples.{index}.time_conv.weight" in shapes for index in resamples)
    return Wan21VAEConfig(dim=shapes["encoder.conv1.weight"][0], z_dim=z_dim, temporal_downsample=temporal)


@dataclass
class VideoVAE:
    """A causal video VAE with its latent format: raw latents in, raw latents out."""

    model: Wan21VAE
    latent_format: LatentFormat
    dtype: torch.dtype

    @property
    def temporal_stride(self) -> int:
        return self.model.config.temporal_stride

    @property
    def spatial_stride(self) -> int:
        return self.model.config.spatial_stride

    @property
    def latent_channels(self) -> int:
        return self.model.config.z_dim

    @property
    def device(self) -> torch.device:
        return self.model.conv2.weight.device

    def check_size(self, frames: int, height: int, width: int) -> None:
        """Frames must be 4k+1 and sizes multiples of the spatial stride; the error names the nearest valid values."""
        t, s = self.temporal_stride, self.spatial_stride
        if frames < 1 or (frames - 1) % t:
            below = 1 + max(0, (frames - 1) // t) * t
            raise ValueError(
                f"frames={frames} must be {t}k+1 (1, 5, 9, ..., 81, ...): use {below} or {below + t}."
            )
        for name, value in (("height", height), ("width", width)):
            if value < s or value % s:
                below = value // s * s
                options = f"{below} or {below + s}" if below >= s else f"{s}"
                raise ValueError(
                    f"{name}={value} must be a multiple of {s} (the VAE's stride): use {options}."
                )

    def latent_shape(self, frames: int, height: int, width: int, batch: int = 1) -> tuple[int, ...]:
        self.check_size(frames, height, width)
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
        latent = self.model.encode(video.to(self.device, self.dtype), progress)
        return latent.float()

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
        and `overlap` (pixels, multiples of the spatial stride) decode in blended spatial tiles."""
        self.latent_format.check_channels(latent)
        if not torch.isfinite(latent).all():
            raise ValueError(
                "latent holds NaN or infinite values; the sampler or the model overflowed (try fp32 or bf16 "
                "instead of fp16). Nothing can be decoded from it."
            )
        chunk_sink = None if sink is None else (lambda frames: sink(frames.float()))
        tiles = None
        if tile:
            s = self.spatial_stride
            if tile % s or overlap % s or not 0 <= overlap < tile:
                raise ValueError(
                    f"tile={tile}, overlap={overlap}: both must be multiples of {s} pixels with overlap < tile "
                    f"(e.g. tile=512, overlap=64)."
                )
            tiles = SpatialTiling(tile // s, overlap // s, s)
        video = self.model.decode(latent.to(self.device, self.dtype), progress, chunk_sink, tiles)
        return None if video is None else video.float()

    def frames_for(self, latent_frames: int) -> int:
        return 1 + (latent_frames - 1) * self.temporal_stride


def load_vae(
    path: str | Path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> VideoVAE:
    """A Wan 2.1 VAE in `dtype` (fp32 decodes best; bf16 halves memory) on `device`."""
    path, device = Path(path), torch.device(device)
    stored = read_keys(path)
    prefix = next((p for p in PREFIXES if any(k.startswith(p + "decoder.") for k in stored)), "")
    names = {key: key[len(prefix) :] if key.startswith(prefix) else None for key in stored}
    shapes = {name: stored[key][0] for key, name in names.items() if name is not None}
    config = config_from_shapes(shapes, path.name)
    with torch.device("meta"):
        model = Wan21VAE(config)
    assign_checkpoint(model, path, names, shapes, dtype, device)
    latent_format = latent_format_for_channels(config.z_dim)
    return VideoVAE(model.eval().requires_grad_(False), latent_format, dtype)


def frames_to_video(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE frames T×H×W×3 in 0..1 -> one video 1×3×T×H×W in -1..1."""
    return images.permute(3, 0, 1, 2).unsqueeze(0) * 2.0 - 1.0


def video_to_frames(video: torch.Tensor) -> torch.Tensor:
    """Video B×3×T×H×W in -1..1 -> IMAGE frames (B·T)×H×W×3 in 0..1."""
    return ((video.clamp(-1.0, 1.0) + 1.0) / 2.0).permute(0, 2, 3, 4, 1).flatten(0, 1)
