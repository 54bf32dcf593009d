"""Tiny random CLIP vision models (transformers' CLIPVisionModelWithProjection, configured as OpenCLIP
ViT-H/14 is: exact GELU, eps 1e-5) written as ComfyUI's clip_vision files hold them: the test-only
reference of the image encoder."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from spacetime.image_encoders.loader import HEAD_DIM_KEY

TINY = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128, image_size=28,
            patch_size=14, projection_dim=16)  # fmt: skip
TINY_METADATA = {HEAD_DIM_KEY: "16"}  # 64 wide / 4 heads: the tensors cannot say it


def reference_model(seed: int = 0, **overrides):
    """transformers' CLIP vision model as OpenCLIP ViT-H/14 is configured (exact GELU, eps 1e-5), tiny."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(**(TINY | overrides), hidden_act="gelu", layer_norm_eps=1e-5)
    model = CLIPVisionModelWithProjection(config).eval()
    with torch.no_grad():  # random norms too, so a misplaced norm cannot hide
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(parameter))
    return model


def checkpoint_state(model, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The tensors as ComfyUI's clip_vision files hold them: transformers' names, no prefix."""
    return {k: (v if dtype is None else v.to(dtype)).contiguous() for k, v in model.state_dict().items()}


def write_file(state: dict, path: Path, metadata: dict | None = TINY_METADATA) -> Path:
    save_file(state, str(path), metadata=metadata)
    return path
