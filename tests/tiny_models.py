"""Tiny random-weight model files under the names the shipped workflows use, so a workflow runs
unchanged (but for its sizes) on any machine: DiT, UMT5 text encoder and Wan 2.1 VAE, in the formats
ComfyUI users have."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from safetensors.torch import save_file

from umt5_reference import reference_model, write_comfy_file
from wan_reference import T2V, random_wan_state_dict, write
from wan_vae_reference import TINY_21, random_vae_state_dict

# Width 64 text embeddings, as the tiny UMT5 of umt5_reference makes them.
TINY_T2V = replace(T2V, dim=128, ffn_dim=256, text_dim=64)  # one head of 128, as Wan reads heads
DIT_FILE = "wan2.1_t2v_1.3B_fp16.safetensors"
TEXT_ENCODER_FILE = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
VAE_FILE = "wan_2.1_vae.safetensors"


def write_tiny_models(models: Path) -> dict[str, Path]:
    """models/diffusion_models, models/text_encoders and models/vae, each holding one tiny file."""
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
    return paths
