"""Load a Wan video VAE from the files ComfyUI users have (`wan_2.1_vae.safetensors`,
`wan2.2_vae.safetensors`; fp32/fp16/bf16): the architecture and its latent format from the tensors."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, describe, read_keys
from ..latent_formats import WAN21, WAN22, LatentFormat, identity_format
from ..ops import assign_checkpoint
from .video_vae import VideoVAE
from .wan21 import Wan21VAE, Wan21VAEConfig
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
    return VideoVAE(model.eval().requires_grad_(False), latent_format(config), dtype)


def latent_format(config: Wan21VAEConfig | Wan22VAEConfig) -> LatentFormat:
    """The released Wan VAEs' latent statistics (LATENT_FORMATS, by architecture and channel count); a VAE
    of other channels (Tiny World's, trained with its statistics folded into its weights) needs none."""
    released = {Wan21VAEConfig: WAN21, Wan22VAEConfig: WAN22}[type(config)]
    return released if released.channels == config.z_dim else identity_format(config.z_dim)
