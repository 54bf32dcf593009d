"""Tiny random Wan DiTs written in the original key format, and diffusers' WanTransformer3DModel
(the test-only reference) built from the same weights through diffusers' own converter."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from spacetime.dit.config import WanConfig
from spacetime.dit.wan import WanDiT
from spacetime.latent_formats import WAN21, WAN22

T2V = WanConfig(
    dim=256, ffn_dim=512, num_layers=2, in_channels=16, out_channels=16, text_dim=96, latent_format=WAN21
)
TI2V = WanConfig(
    dim=256, ffn_dim=512, num_layers=2, in_channels=48, out_channels=48, text_dim=96, latent_format=WAN22
)
# Image to video with concat conditioning (16 noisy + 4 mask + 16 known-frame channels): Wan 2.2 I2V A14B's
# experts; with CLIP image cross-attention, Wan 2.1 I2V; with FLF2V's positional embedding over two images.
I2V_22 = replace(T2V, in_channels=36)
I2V = replace(I2V_22, image_dim=80)
FLF2V = replace(I2V, image_tokens=2 * 5)


def random_wan_state_dict(config: WanConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Original Wan key names and shapes, random values at a scale that keeps activations O(1)."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in WanDiT(config).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        fan_in = (
            shape[1] if len(shape) == 2 else (torch.Size(shape[1:]).numel() if len(shape) > 2 else shape[-1])
        )
        scale = 0.5 if key.endswith("modulation") else (1.0 / fan_in**0.5 if len(shape) >= 2 else 0.1)
        tensor = torch.randn(shape, generator=generator) * scale
        if key.endswith(("norm_q.weight", "norm_k.weight", "norm3.weight", "norm_k_img.weight")) or key in (
            "img_emb.proj.0.weight",
            "img_emb.proj.4.weight",
        ):
            tensor = 1.0 + 0.1 * tensor
        state[key] = tensor.contiguous()
    return state


def write(state: dict[str, torch.Tensor], path: Path, prefix: str = "model.diffusion_model.") -> Path:
    save_file({prefix + k: v for k, v in state.items()}, str(path))
    return path


def diffusers_reference(config: WanConfig, state: dict[str, torch.Tensor]):
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    model = WanTransformer3DModel(
        patch_size=config.patch_size,
        num_attention_heads=config.num_heads,
        attention_head_dim=config.head_dim,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        text_dim=config.text_dim,
        freq_dim=config.freq_dim,
        ffn_dim=config.ffn_dim,
        num_layers=config.num_layers,
        cross_attn_norm=config.cross_attn_norm,
        qk_norm="rms_norm_across_heads",
        eps=config.eps,
        image_dim=config.image_dim or None,
        added_kv_proj_dim=config.dim if config.image_dim else None,
        pos_embed_seq_len=config.image_tokens or None,
    )
    converted = convert_wan_transformer_to_diffusers({k: v.clone() for k, v in state.items()})
    if "img_emb.emb_pos" in converted:  # FLF2V's positional embedding: the single-file converter leaves it
        converted["condition_embedder.image_embedder.pos_embed"] = converted.pop("img_emb.emb_pos")
    model.load_state_dict(converted, strict=True)
    return model.eval()
