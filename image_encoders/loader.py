"""Load the CLIP vision encoder Wan 2.1's image-to-video models read, from the file ComfyUI users keep
in models/clip_vision: clip_vision_h.safetensors, in transformers' CLIPVisionModelWithProjection names
(fp32, fp16, bf16 or fp8). A full transformers CLIPModel file also loads: its text half is ignored, as
ComfyUI's CLIPVisionLoader ignores it. ComfyUI reads these names without a prefix, and so do we."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import torch

from .. import host
from ..checkpoint import (
    CheckpointError,
    check_limits,
    describe,
    layer_count,
    metadata_int,
    read_keys,
    read_metadata,
)
from ..ops import assign_checkpoint, default_compute_dtype
from .clip_vision import COLOUR_CHANNELS, VIT_H_14, CLIPVisionConfig, CLIPVisionEncoder

# Tensors a CLIP file may hold that the vision encoder does not use: the text half of a full CLIPModel,
# and the position ids older transformers versions saved.
UNUSED = ("text_model.", "text_projection.", "logit_scale", "vision_model.embeddings.position_ids")
# What the tensors cannot say: the attention head width. ViT-H/14's is 80 (1280 / 16 heads); a model
# with other heads (the tests' tiny ones) says its own in the file's metadata.
HEAD_DIM_KEY = "spacetime.head_dim"
VIT_H_HEAD_DIM = VIT_H_14.width // VIT_H_14.num_heads

WAN_NEEDS = "Wan's image-to-video models need clip_vision_h.safetensors (ViT-H/14)"
# The other CLIP vision families ComfyUI users have, told apart by width (ComfyUI tells them apart by
# depth). ViT-B and ViT-L are OpenAI's, with quick-GELU, which this encoder does not compute; ViT-bigG
# has the right architecture but features 1664 wide, which Wan's image projection cannot take.
OTHER_FAMILIES = {
    768: "a ViT-B (e.g. OpenAI's clip-vit-base)",
    1024: "a ViT-L/14 (e.g. clip_vision_l / SD 1.5's)",
    1664: "a ViT-bigG/14 (e.g. clip_vision_g / SDXL's)",
}
OPENCLIP_MARKER = "transformer.resblocks.0.attn.in_proj_weight"
PATCH_KEY = "vision_model.embeddings.patch_embedding.weight"
CLASS_KEY = "vision_model.embeddings.class_embedding"
POSITION_KEY = "vision_model.embeddings.position_embedding.weight"
MLP_KEY = "vision_model.encoder.layers.0.mlp.fc1.weight"
PROJECTION_KEY = "visual_projection.weight"
_LAYER = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.")
# The sizes CLIP vision encoders use (ViT-H/14: 32 layers of width 1280, heads of 80, 257 positions; ViT-bigG:
# 48 layers of 1664), with room to spare: a file outside them is refused before anything is built from it.
FAMILY = "CLIP vision (ViT-B to ViT-bigG)"
MAX_LAYERS = 128
LIMITS = {
    "width": (1, 8192),
    "patch_size": (1, 64),  # 14
    "positions": (2, 16385),  # a class token and a square grid: 1 + 16 x 16 for ViT-H/14 at 224
    "mlp_dim": (1, 32768),  # 5120
    "head_dim": (1, 1024),  # 80
}


def canonical_name(key: str) -> str | None:
    """Our (transformers) name for a tensor, or None for tensors the vision encoder does not use."""
    return None if key.startswith(UNUSED) else key


def config_from_shapes(
    shapes: dict[str, tuple[int, ...]], source: str, head_dim: int = VIT_H_HEAD_DIM
) -> CLIPVisionConfig:
    """Read a CLIP vision config from tensor names and shapes; refuse what is not this architecture."""
    if PATCH_KEY not in shapes:
        if any(OPENCLIP_MARKER in key for key in shapes):
            raise CheckpointError(
                f"{source} is a CLIP model in OpenCLIP's layout (visual.transformer.resblocks...); Spacetime "
                f"reads the transformers layout ComfyUI's clip_vision files use. {WAN_NEEDS}, as Comfy-Org "
                "repackages it for Wan 2.1."
            )
        raise CheckpointError(
            f"{source} does not look like a CLIP vision encoder: it looks like {describe(shapes)}. "
            f"The image encoder loader expects clip_vision_h.safetensors (ComfyUI's models/clip_vision)."
        )
    if CLASS_KEY not in shapes:
        raise CheckpointError(
            f"{source} is a vision encoder without a class token (SigLIP's), not CLIP: {WAN_NEEDS}."
        )
    if len(shapes[PATCH_KEY]) != 4:
        raise CheckpointError(
            f"{source}: its patch embedding has shape {shapes[PATCH_KEY]}; a CLIP vision encoder's is "
            "width x 3 x patch x patch. The file is damaged."
        )
    width, channels, patch_size, patch_width = shapes[PATCH_KEY]
    if width in OTHER_FAMILIES:
        raise CheckpointError(f"{source} is {OTHER_FAMILIES[width]}: {WAN_NEEDS}.")
    num_layers = layer_count(shapes, _LAYER, source, "encoder layers", MAX_LAYERS)
    if POSITION_KEY not in shapes or MLP_KEY not in shapes:
        missing = POSITION_KEY if POSITION_KEY not in shapes else MLP_KEY
        raise CheckpointError(f"{source} is an incomplete CLIP vision encoder: it has no {missing}.")
    if not shapes[POSITION_KEY] or not shapes[MLP_KEY]:
        raise CheckpointError(f"{source}: its position embedding or MLP is a scalar; the file is damaged.")
    positions, mlp_dim = shapes[POSITION_KEY][0], shapes[MLP_KEY][0]
    sizes = dict(width=width, patch_size=patch_size, positions=positions, mlp_dim=mlp_dim, head_dim=head_dim)
    check_limits(source, sizes, LIMITS, FAMILY)
    grid = math.isqrt(max(positions - 1, 0))
    if channels != COLOUR_CHANNELS or patch_size != patch_width or grid * grid != positions - 1:
        raise CheckpointError(
            f"{source}: a {channels}-channel {patch_size}×{patch_width} patch embedding with {positions} "
            "positions is not a CLIP vision encoder's (3 channels, square patches, a square grid and a class token)."
        )
    if width % head_dim:
        raise CheckpointError(
            f"{source}: width {width} is not a multiple of the {head_dim}-wide attention heads of ViT-H/14. "
            f"A model with other heads must say their width in its metadata ({HEAD_DIM_KEY}). {WAN_NEEDS}."
        )
    projection = shapes.get(PROJECTION_KEY)
    config = CLIPVisionConfig(
        width=width,
        num_layers=num_layers,
        num_heads=width // head_dim,
        mlp_dim=mlp_dim,
        image_size=grid * patch_size,
        patch_size=patch_size,
        projection_dim=None if projection is None else projection[0],
    )
    return VIT_H_14 if replace(config, name=VIT_H_14.name) == VIT_H_14 else config


def _head_dim(path: Path) -> int:
    value = metadata_int(read_metadata(path), HEAD_DIM_KEY, path.name)
    return VIT_H_HEAD_DIM if value is None else value


def load_image_encoder(
    path: str | Path,
    weight_dtype: torch.dtype | None = None,
    compute_dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> CLIPVisionEncoder:
    """A CLIP vision encoder on `device`; weight_dtype None keeps the file's dtypes (fp8 stays fp8);
    compute_dtype None: bf16 on GPUs, fp32 on the CPU. The file is checked before anything is allocated."""
    path, device = Path(path), host.usable_device(device)
    stored = read_keys(path)
    names = {key: canonical_name(key) for key in stored}
    shapes = {name: stored[key][0] for key, name in names.items() if name is not None}
    config = config_from_shapes(shapes, path.name, _head_dim(path))
    with torch.device("meta"):
        model = CLIPVisionEncoder(config)
    assign_checkpoint(model, path, names, shapes, weight_dtype, device)
    model.compute_dtype = compute_dtype or default_compute_dtype(device)
    return model.eval().requires_grad_(False)
