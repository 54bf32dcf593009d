"""Tiny random Wan VAEs in the original key format, and diffusers' AutoencoderKLWan (the test-only
reference) built from the same weights through diffusers' own converter."""

from __future__ import annotations

import torch

from spacetime.vae.wan21 import Wan21VAE, Wan21VAEConfig

TINY_21 = Wan21VAEConfig(dim=8, z_dim=16)


def random_vae_state_dict(config: Wan21VAEConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in Wan21VAE(config).state_dict().items()}
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


def diffusers_vae(config: Wan21VAEConfig, state: dict[str, torch.Tensor]):
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    model = AutoencoderKLWan(
        base_dim=config.dim, z_dim=config.z_dim, dim_mult=list(config.dim_mult), num_res_blocks=config.num_res_blocks,
        attn_scales=[], temperal_downsample=list(config.temporal_downsample),
    )  # fmt: skip
    model.load_state_dict(convert_wan_vae_to_diffusers({k: v.clone() for k, v in state.items()}), strict=True)
    return model.eval()
