"""Load a Wan video VAE from the files ComfyUI users have (`wan_2.1_vae.safetensors`,
`wan2.2_vae.safetensors`; fp32/fp16/bf16), and the VideoVAE object the nodes use: encode video,
decode latents, latent shapes and formats."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, describe, read_keys
from ..ops import assign_checkpoint
from .latent_formats import LatentFormat, latent_format_for_channels
from .wan21 import CausalVideoVAE, SpatialTiling, Wan21VAE, Wan21VAEConfig
from .wan22 import RGB, Wan22VAE, Wan22VAEConfig

PREFIXES = ("first_stage_model.", "vae.")
MODELS = {Wan21VAEConfig: Wan21VAE, Wan22VAEConfig: Wan22VAE}
_RESAMPLE_21 = re.compile(r"^encoder\.downsamples\.(\d+)\.resample\.1\.weight$")
_STAGE_22 = re.compile(r"^encoder\.downsamples\.(\d+)\.downsamples\.0\.residual\.2\.weight$")
_RESIDUAL_22 = re.compile(r"^encoder\.downsamples\.0\.downsamples\.(\d+)\.residual\.0\.gamma$")
_NESTED_22 = re.compile(r"^(encoder\.downsamples|decoder\.upsamples)\.\d+\.(downsamples|upsamples)\.")


def config_from_shapes(shapes: dict[str, tuple[int, ...]], source: str) -> Wan21VAEConfig | Wan22VAEConfig:
    """Wan 2.2 when the encoder and decoder stages are nested residual blocks (`downsamples.0.downsamples`),
    else Wan 2.1; widths, latent channels and temporal strides from the tensors' shapes."""
    if "decoder.middle.0.residual.0.gamma" not in shapes:
        raise CheckpointError(
            f"{source} does not look like a Wan VAE: it looks like {describe(shapes)}. The VAE loader expects "
            "wan_2.1_vae.safetensors or wan2.2_vae.safetensors (as ComfyUI ships them in models/vae)."
        )
    if any(_NESTED_22.match(key) for key in shapes):
        return _wan22_config(shapes, source)
    # encoder.downsamples is flat: each stage's residual blocks, then a resample (none after the last).
    dim = _shape(shapes, "encoder.conv1.weight", source)[0]
    resamples = sorted(int(m.group(1)) for key in shapes if (m := _RESAMPLE_21.match(key)))
    if not resamples:
        raise CheckpointError(
            f"{source} looks like a Wan 2.1 VAE without downsampling stages; it may be damaged."
        )
    temporal = tuple(f"encoder.downsamples.{index}.time_conv.weight" in shapes for index in resamples)
    num_res_blocks = resamples[0]
    dim_mult = tuple(
        _shape(shapes, f"encoder.downsamples.{stage * (num_res_blocks + 1)}.residual.2.weight", source)[0]
        // dim
        for stage in range(len(resamples) + 1)
    )
    return Wan21VAEConfig(
        dim=dim,
        z_dim=_shape(shapes, "conv2.weight", source)[0],
        dim_mult=dim_mult,
        num_res_blocks=num_res_blocks,
        temporal_downsample=temporal,
    )


def _wan22_config(shapes: dict[str, tuple[int, ...]], source: str) -> Wan22VAEConfig:
    dim, pixel_channels = _shape(shapes, "encoder.conv1.weight", source)[:2]
    stages = sorted(int(m.group(1)) for key in shapes if (m := _STAGE_22.match(key)))
    dim_mult = tuple(
        shapes[f"encoder.downsamples.{stage}.downsamples.0.residual.2.weight"][0] // dim for stage in stages
    )
    patch_size = round((pixel_channels / RGB) ** 0.5)
    if not stages or 0 in dim_mult or RGB * patch_size**2 != pixel_channels:
        raise CheckpointError(
            f"{source} looks like a Wan 2.2 VAE but its encoder takes {pixel_channels} channels into "
            f"{len(stages)} stages of widths {dim_mult} x {dim}; expected 12 channels (RGB in 2x2 patches) "
            "and 4 stages. The file may be damaged."
        )
    num_res_blocks = sum(1 for key in shapes if _RESIDUAL_22.match(key))
    temporal = tuple(
        f"encoder.downsamples.{stage}.downsamples.{num_res_blocks}.time_conv.weight" in shapes
        for stage in stages[:-1]
    )
    return Wan22VAEConfig(
        dim=dim,
        decoder_dim=_shape(shapes, "decoder.head.2.weight", source)[1] // dim_mult[0],
        z_dim=_shape(shapes, "conv2.weight", source)[0],
        dim_mult=dim_mult,
        num_res_blocks=num_res_blocks,
        temporal_downsample=temporal,
        patch_size=patch_size,
    )


def _shape(shapes: dict[str, tuple[int, ...]], key: str, source: str) -> tuple[int, ...]:
    if key not in shapes:
        raise CheckpointError(
            f"{source} looks like a Wan VAE but has no {key!r} tensor: it is incomplete or damaged."
        )
    return shapes[key]


@dataclass
class VideoVAE:
    """A causal video VAE (Wan 2.1 or 2.2) with its latent format: raw latents in, raw latents out."""

    model: CausalVideoVAE
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

    def check_latent(self, latent: torch.Tensor) -> None:
        """What a decode needs of a raw latent (its channels, finite values), checked before any of it is
        decoded or written."""
        self.latent_format.check_channels(latent)
        if not torch.isfinite(latent).all():
            raise ValueError(
                "latent holds NaN or infinite values; the sampler or the model overflowed (try fp32 or bf16 "
                "instead of fp16). Nothing can be decoded from it."
            )

    def _checked(self, latent: torch.Tensor, tile: int, overlap: int) -> SpatialTiling | None:
        self.check_latent(latent)
        if not tile:
            return None
        s = self.spatial_stride
        if tile % s or overlap % s or not 0 <= overlap < tile:
            raise ValueError(
                f"tile={tile}, overlap={overlap}: both must be multiples of {s} pixels with overlap < tile "
                f"(e.g. tile=512, overlap=64)."
            )
        return SpatialTiling(tile // s, overlap // s, s)

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
        tiles = self._checked(latent, tile, overlap)
        chunk_sink = None if sink is None else (lambda frames: sink(frames.float()))
        video = self.model.decode(latent.to(self.device, self.dtype), progress, chunk_sink, tiles)
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
        tiles = self._checked(latent, tile, overlap)
        return self._frames(latent, progress, tiles)

    @torch.no_grad()  # around each step of the generator, not between them
    def _frames(self, latent: torch.Tensor, progress, tiles) -> Iterator[torch.Tensor]:
        for item in latent.split(1):
            for frames in self.model.decode_chunks(item.to(self.device, self.dtype), progress, tiles):
                yield video_to_frames(frames.float())

    def frames_for(self, latent_frames: int) -> int:
        return 1 + (latent_frames - 1) * self.temporal_stride


def load_vae(
    path: str | Path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> VideoVAE:
    """A Wan 2.1 or 2.2 VAE, told apart by its tensors, in `dtype` (fp32 decodes best; bf16 halves
    memory) on `device`."""
    path, device = Path(path), torch.device(device)
    stored = read_keys(path)
    prefix = next((p for p in PREFIXES if any(k.startswith(p + "decoder.") for k in stored)), "")
    names = {key: key[len(prefix) :] if key.startswith(prefix) else None for key in stored}
    shapes = {name: stored[key][0] for key, name in names.items() if name is not None}
    config = config_from_shapes(shapes, path.name)
    with torch.device("meta"):
        model = MODELS[type(config)](config)
    assign_checkpoint(model, path, names, shapes, dtype, device)
    latent_format = latent_format_for_channels(config.z_dim)
    return VideoVAE(model.eval().requires_grad_(False), latent_format, dtype)


def frames_to_video(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE frames T×H×W×3 in 0..1 -> one video 1×3×T×H×W in -1..1."""
    return images.permute(3, 0, 1, 2).unsqueeze(0) * 2.0 - 1.0


def video_to_frames(video: torch.Tensor) -> torch.Tensor:
    """Video B×3×T×H×W in -1..1 -> IMAGE frames (B·T)×H×W×3 in 0..1."""
    return ((video.clamp(-1.0, 1.0) + 1.0) / 2.0).permute(0, 2, 3, 4, 1).flatten(0, 1)
