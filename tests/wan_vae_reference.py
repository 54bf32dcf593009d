"""Tiny random Wan VAEs in the original key format, and diffusers' AutoencoderKLWan (the test-only
reference) with the same weights: Wan 2.1 through diffusers' own converter; Wan 2.2, for which the
library has no converter, through the name table below (diffusers name -> Wan 2.2 `vae2_2.py` name,
as in wan2.2_vae.safetensors)."""

from __future__ import annotations

import re

import torch

from spacetime.vae.wan21 import Wan21VAE, Wan21VAEConfig
from spacetime.vae.wan22 import Wan22VAEConfig

TINY_21 = Wan21VAEConfig(dim=8, z_dim=16)
TINY_22 = Wan22VAEConfig(dim=8, decoder_dim=12, z_dim=48, num_res_blocks=1)


def random_weights(shapes: dict[str, torch.Size], seed: int = 0) -> dict[str, torch.Tensor]:
    """Norm gains near 1, small biases, weights of unit gain (1/sqrt(fan-in)): activations neither vanish
    nor saturate, so every layer shows in the output."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("gamma"):
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        elif key.endswith("bias"):
            state[key] = 0.02 * torch.randn(shape, generator=generator)
        else:
            fan_in = torch.Size(shape[1:]).numel()
            state[key] = torch.randn(shape, generator=generator) / fan_in**0.5
    return state


def random_vae_state_dict(config: Wan21VAEConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in Wan21VAE(config).state_dict().items()}
    return random_weights(shapes, seed)


def diffusers_vae(config: Wan21VAEConfig, state: dict[str, torch.Tensor]):
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    model = AutoencoderKLWan(
        base_dim=config.dim, z_dim=config.z_dim, dim_mult=list(config.dim_mult), num_res_blocks=config.num_res_blocks,
        attn_scales=[], temperal_downsample=list(config.temporal_downsample),
    )  # fmt: skip
    model.load_state_dict(convert_wan_vae_to_diffusers({k: v.clone() for k, v in state.items()}), strict=True)
    return model.eval()


def diffusers_vae22(config: Wan22VAEConfig, seed: int = 0):
    """diffusers' AutoencoderKLWan in its Wan 2.2 form (is_residual), with seeded random weights."""
    from diffusers import AutoencoderKLWan

    model = AutoencoderKLWan(
        base_dim=config.dim, decoder_base_dim=config.decoder_dim, z_dim=config.z_dim,
        dim_mult=list(config.dim_mult), num_res_blocks=config.num_res_blocks, attn_scales=[],
        temperal_downsample=list(config.temporal_downsample), is_residual=True,
        in_channels=config.pixel_channels, out_channels=config.pixel_channels, patch_size=config.patch_size,
        scale_factor_temporal=config.temporal_stride, scale_factor_spatial=config.spatial_stride,
        latents_mean=[0.0] * config.z_dim, latents_std=[1.0] * config.z_dim,
    )  # fmt: skip
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    model.load_state_dict(random_weights(shapes, seed), strict=True)
    return model.eval()


_RESIDUAL_PARTS = {"norm1": "0", "conv1": "2", "norm2": "3", "conv2": "6"}


def wan22_key(key: str, num_res_blocks: int) -> str:
    """A diffusers AutoencoderKLWan(is_residual=True) parameter name -> its name in Wan 2.2's vae2_2.py."""
    key = re.sub(
        r"resnets\.(\d+)\.(norm1|conv1|norm2|conv2)\.",
        lambda m: f"resnets.{m[1]}.residual.{_RESIDUAL_PARTS[m[2]]}.",
        key,
    )
    key = re.sub(r"resnets\.(\d+)\.conv_shortcut\.", r"resnets.\1.shortcut.", key)
    for pattern, replacement in (
        (r"^quant_conv\.", "conv1."),
        (r"^post_quant_conv\.", "conv2."),
        (r"^(encoder|decoder)\.conv_in\.", r"\1.conv1."),
        (r"^(encoder|decoder)\.norm_out\.", r"\1.head.0."),
        (r"^(encoder|decoder)\.conv_out\.", r"\1.head.2."),
        (r"\.mid_block\.resnets\.0\.", ".middle.0."),
        (r"\.mid_block\.attentions\.0\.", ".middle.1."),
        (r"\.mid_block\.resnets\.1\.", ".middle.2."),
        (r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.downsamples.\1.downsamples."),
        (
            r"^encoder\.down_blocks\.(\d+)\.downsampler\.",
            rf"encoder.downsamples.\1.downsamples.{num_res_blocks}.",
        ),
        (r"^decoder\.up_blocks\.(\d+)\.resnets\.", r"decoder.upsamples.\1.upsamples."),
        (
            r"^decoder\.up_blocks\.(\d+)\.upsampler\.",
            rf"decoder.upsamples.\1.upsamples.{num_res_blocks + 1}.",
        ),
    ):
        key = re.sub(pattern, replacement, key)
    return key


def wan22_state_dict(model, num_res_blocks: int) -> dict[str, torch.Tensor]:
    """diffusers' weights under Wan 2.2's original names (the layout of wan2.2_vae.safetensors)."""
    return {wan22_key(k, num_res_blocks): v.clone().contiguous() for k, v in model.state_dict().items()}
