"""Load a Wan video VAE from the files ComfyUI users have (`wan_2.1_vae.safetensors`,
`wan2.2_vae.safetensors`; fp32/fp16/bf16): the architecture and its latent format from the tensors."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .. import host
from ..checkpoint import CheckpointError, check_limits, describe, read_keys
from ..latent_formats import WAN21, WAN22, LatentFormat, identity_format
from ..ops import assign_checkpoint
from .video_vae import VideoVAE
from .wan21 import Wan21VAE, Wan21VAEConfig
from .wan22 import RGB, Wan22VAE, Wan22VAEConfig

PREFIXES = ("first_stage_model.", "vae.")
MODELS = {Wan21VAEConfig: Wan21VAE, Wan22VAEConfig: Wan22VAE}
# Stage and block numbers of up to 6 digits (a longer one is no Wan VAE's, and check_layout names it).
_RESAMPLE_21 = re.compile(r"^encoder\.downsamples\.(\d{1,6})\.resample\.1\.weight$")
_STAGE_22 = re.compile(r"^encoder\.downsamples\.(\d{1,6})\.downsamples\.0\.residual\.2\.weight$")
_RESIDUAL_22 = re.compile(r"^encoder\.downsamples\.0\.downsamples\.(\d{1,6})\.residual\.0\.gamma$")
_NESTED_22 = re.compile(r"^(encoder\.downsamples|decoder\.upsamples)\.\d+\.(downsamples|upsamples)\.")
# The sizes Wan's VAEs use (Wan 2.1: width 96, 16 latent channels; Wan 2.2: 160 and 256 wide, 48 channels, 2x2
# patches; Tiny World's: 16 wide, 12 channels; all with 2 residual blocks or fewer in 4 stages or fewer), with
# room to spare: a file outside them is refused before anything is built from it.
FAMILY = "Wan VAE (Wan 2.1, Wan 2.2, Tiny World)"
LIMITS = {
    "dim": (1, 1024),
    "decoder_dim": (1, 4096),  # the decoder's last width (Wan 2.2: 256)
    "z_dim": (1, 256),
    "stages": (1, 8),
    "dim_mult": (1, 16),  # 1, 2, 4, 4
    "num_res_blocks": (1, 16),
    "patch_size": (1, 8),
}


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
    dim, z_dim = _size(shapes, "encoder.conv1.weight", 0, source), _size(shapes, "conv2.weight", 0, source)
    resamples = sorted(int(m.group(1)) for key in shapes if (m := _RESAMPLE_21.match(key)))
    if not resamples:
        raise CheckpointError(
            f"{source} looks like a Wan 2.1 VAE without downsampling stages; it may be damaged."
        )
    num_res_blocks = resamples[0]
    sizes = dict(dim=dim, z_dim=z_dim, stages=len(resamples) + 1, num_res_blocks=num_res_blocks)
    check_limits(source, sizes, LIMITS, FAMILY)
    temporal = tuple(f"encoder.downsamples.{index}.time_conv.weight" in shapes for index in resamples)
    widths = tuple(
        _size(shapes, f"encoder.downsamples.{stage * (num_res_blocks + 1)}.residual.2.weight", 0, source)
        for stage in range(len(resamples) + 1)
    )
    return Wan21VAEConfig(
        dim=dim,
        z_dim=z_dim,
        dim_mult=_multiples(widths, dim, source),
        num_res_blocks=num_res_blocks,
        temporal_downsample=temporal,
    )


def _wan22_config(shapes: dict[str, tuple[int, ...]], source: str) -> Wan22VAEConfig:
    dim, pixel_channels = (_size(shapes, "encoder.conv1.weight", axis, source) for axis in (0, 1))
    stages = sorted(int(m.group(1)) for key in shapes if (m := _STAGE_22.match(key)))
    patch_size = round((pixel_channels / RGB) ** 0.5)
    if not stages or RGB * patch_size**2 != pixel_channels:
        raise CheckpointError(
            f"{source} looks like a Wan 2.2 VAE but its encoder takes {pixel_channels} channels into "
            f"{len(stages)} stages; expected 12 channels (RGB in 2x2 patches) and 4 stages. The file may be "
            "damaged."
        )
    num_res_blocks = sum(1 for key in shapes if _RESIDUAL_22.match(key))
    decoder_width = _size(shapes, "decoder.head.2.weight", 1, source)
    sizes = dict(dim=dim, z_dim=_size(shapes, "conv2.weight", 0, source), stages=len(stages),
                 num_res_blocks=num_res_blocks, patch_size=patch_size, decoder_dim=decoder_width)  # fmt: skip
    check_limits(source, sizes, LIMITS, FAMILY)
    widths = tuple(
        _size(shapes, f"encoder.downsamples.{stage}.downsamples.0.residual.2.weight", 0, source)
        for stage in stages
    )
    dim_mult = _multiples(widths, dim, source)
    temporal = tuple(
        f"encoder.downsamples.{stage}.downsamples.{num_res_blocks}.time_conv.weight" in shapes
        for stage in stages[:-1]
    )
    return Wan22VAEConfig(
        dim=dim,
        decoder_dim=decoder_width // dim_mult[0],
        z_dim=sizes["z_dim"],
        dim_mult=dim_mult,
        num_res_blocks=num_res_blocks,
        temporal_downsample=temporal,
        patch_size=patch_size,
    )


def _multiples(widths: tuple[int, ...], dim: int, source: str) -> tuple[int, ...]:
    """Each stage's width as a multiple of the first layer's (Wan's dim_mult), within the family's limits."""
    multiples = tuple(width // dim for width in widths)
    check_limits(source, {"dim_mult": multiples}, LIMITS, FAMILY)
    return multiples


def _size(shapes: dict[str, tuple[int, ...]], key: str, axis: int, source: str) -> int:
    """One dimension of a tensor the VAE's config is read from, or an error naming the tensor."""
    if key not in shapes:
        raise CheckpointError(
            f"{source} looks like a Wan VAE but has no {key!r} tensor: it is incomplete or damaged."
        )
    if len(shapes[key]) <= axis:
        raise CheckpointError(
            f"{source} looks like a Wan VAE but its {key!r} has shape {shapes[key]}: it is damaged."
        )
    return shapes[key][axis]


def load_vae(
    path: str | Path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> VideoVAE:
    """A Wan 2.1 or 2.2 VAE, told apart by its tensors, in `dtype` (fp32 decodes best; bf16 halves
    memory) on `device`."""
    path, device = Path(path), host.usable_device(device)
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
