"""Tiny random-weight model files under the names the shipped workflows use, so a workflow runs
unchanged (but for its sizes) on any machine: DiT, UMT5 text encoder and Wan 2.1 VAE, in the formats
ComfyUI users have."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from clip_reference import TINY as TINY_CLIP
from clip_reference import checkpoint_state
from clip_reference import reference_model as clip_model
from clip_reference import write_file as write_clip
from umt5_reference import reference_model, write_comfy_file
from wan_reference import T2V, random_wan_state_dict, write
from wan_vae_reference import TINY_21, random_vae_state_dict

# Width 64 text embeddings, as the tiny UMT5 of umt5_reference makes them.
TINY_T2V = replace(T2V, dim=128, ffn_dim=256, text_dim=64)  # one head of 128, as Wan reads heads
DIT_FILE = "wan2.1_t2v_1.3B_fp16.safetensors"
TEXT_ENCODER_FILE = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
VAE_FILE = "wan_2.1_vae.safetensors"
# The image-to-video workflows' files: Wan 2.2 I2V A14B's experts, Wan 2.1 FLF2V (reading the tiny CLIP
# encoder's features: 5 tokens an image, two images) and the CLIP vision encoder.
TINY_I2V = replace(TINY_T2V, in_channels=36)
TINY_FLF2V = replace(TINY_I2V, image_dim=TINY_CLIP["hidden_size"], image_tokens=2 * 5)
I2V_FILES = {
    "wan2.2_i2v_high_noise_14B_fp16.safetensors": TINY_I2V,
    "wan2.2_i2v_low_noise_14B_fp16.safetensors": TINY_I2V,
    "wan2.1_flf2v_720p_14B_fp16.safetensors": TINY_FLF2V,
}
# The 4-step workflows: Wan 2.2 T2V A14B's experts and a LoRA for each expert of both A14B models (lightx2v's
# Lightning, under Comfy-Org's names), tiny and random.
T2V_EXPERT_FILES = ("wan2.2_t2v_high_noise_14B_fp16.safetensors", "wan2.2_t2v_low_noise_14B_fp16.safetensors")
LORA_FILES = {
    f"wan2.2_{kind}_lightx2v_4steps_lora_{version}_{noise}_noise.safetensors": config
    for kind, version, config in (("t2v", "v1.1", TINY_T2V), ("i2v", "v1", TINY_I2V))
    for noise in ("high", "low")
}
CLIP_VISION_FILE = "clip_vision_h.safetensors"
# For core's own model loader, which builds Wan with UMT5-XXL's 4096-wide text embedding whatever the file
# holds: an image-to-video DiT and a text encoder of that width (tiny otherwise).
WIDE_TEXT_I2V_FILE, WIDE_TEXT_ENCODER_FILE = (
    "spacetime_tiny_i2v_wide_text.safetensors",
    "spacetime_tiny_umt5_wide.safetensors",
)


def random_lora(config, seed: int, rank: int = 4) -> dict:
    """A rank-`rank` LoRA on every block's attention and MLP projections, in the original Wan layout."""
    generator = torch.Generator().manual_seed(seed)
    dim, ffn = config.dim, config.ffn_dim
    shapes = {"self_attn.q": (dim, dim), "cross_attn.o": (dim, dim), "ffn.0": (ffn, dim), "ffn.2": (dim, ffn)}
    tensors = {}
    for block in range(config.num_layers):
        for layer, (out, width) in shapes.items():
            stem = f"diffusion_model.blocks.{block}.{layer}"
            tensors[f"{stem}.lora_down.weight"] = torch.randn(rank, width, generator=generator) / width**0.5
            tensors[f"{stem}.lora_up.weight"] = torch.randn(out, rank, generator=generator) * 0.1
            tensors[f"{stem}.alpha"] = torch.tensor(float(rank))
    return tensors


def write_tiny_models(models: Path, image_to_video: bool = False) -> dict[str, Path]:
    """models/diffusion_models, models/text_encoders and models/vae with the tiny files the text-to-video
    workflows name; with `image_to_video`, also those of the image-to-video and 4-step workflows (and
    models/clip_vision, models/loras) and core's-loader-width ones."""
    paths = {
        "dit": models / "diffusion_models" / DIT_FILE,
        "text_encoder": models / "text_encoders" / TEXT_ENCODER_FILE,
        "vae": models / "vae" / VAE_FILE,
    }
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    write(random_wan_state_dict(TINY_T2V), paths["dit"])
    write_comfy_file(reference_model(), paths["text_encoder"])
    save_file(random_vae_state_dict(TINY_21), str(paths["vae"]))
    if not image_to_video:
        return paths
    for seed, (name, config) in enumerate(I2V_FILES.items(), start=1):
        write(random_wan_state_dict(config, seed), models / "diffusion_models" / name)
    for seed, name in enumerate(T2V_EXPERT_FILES, start=5):
        write(random_wan_state_dict(TINY_T2V, seed), models / "diffusion_models" / name)
    (models / "loras").mkdir(exist_ok=True)
    for seed, (name, config) in enumerate(LORA_FILES.items()):
        save_file(random_lora(config, seed), str(models / "loras" / name))
    write(
        random_wan_state_dict(replace(TINY_I2V, text_dim=4096)),
        models / "diffusion_models" / WIDE_TEXT_I2V_FILE,
    )
    write_comfy_file(reference_model(d_model=4096), models / "text_encoders" / WIDE_TEXT_ENCODER_FILE)
    (models / "clip_vision").mkdir(exist_ok=True)
    paths["clip_vision"] = write_clip(
        checkpoint_state(clip_model()), models / "clip_vision" / CLIP_VISION_FILE
    )
    return paths
