"""Tiny random-weight model files under the names the shipped workflows use, so a workflow runs
unchanged (but for its sizes) on any machine: DiT, UMT5 text encoder and Wan 2.1 VAE, in the formats
ComfyUI users have."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

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
CLIP_VISION_FILE = "clip_vision_h.safetensors"
# For core's own model loader, which builds Wan with UMT5-XXL's 4096-wide text embedding whatever the file
# holds: an image-to-video DiT and a text encoder of that width (tiny otherwise).
WIDE_TEXT_I2V_FILE, WIDE_TEXT_ENCODER_FILE = (
    "spacetime_tiny_i2v_wide_text.safetensors",
    "spacetime_tiny_umt5_wide.safetensors",
)


def write_tiny_models(models: Path, image_to_video: bool = False) -> dict[str, Path]:
    """models/diffusion_models, models/text_encoders and models/vae with the tiny files the text-to-video
    workflows name; with `image_to_video`, also those of the image-to-video workflows (and models/clip_vision)
    and core's-loader-width ones."""
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
