"""Images to the CLIP features Wan 2.1's image-to-video models read: ComfyUI's CLIP preprocessing, and
an output that is interchangeable with core's CLIP_VISION_OUTPUT (comfy.clip_vision.Output).

Wan's reference (`wan/modules/clip.py`, CLIPModel.visual) stretches the whole frame to 224×224 with
bicubic interpolation and normalises with CLIP's mean and std; ComfyUI's `clip_preprocess` does the same
with antialiasing and 8-bit rounding, or first crops the centre square (crop=True, core's default). We
follow ComfyUI's, so our features and core's CLIPVisionEncode's are the same.

Axes: B batch, H W image height and width, C colour channels, S model image size, L tokens, D width,
P projection width.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from einops import rearrange

from .clip_vision import COLOUR_CHANNELS, CLIPVisionEncoder

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LEVELS = 255  # images are rounded to 8-bit levels, as the training images were


@dataclass
class ImageFeatures:
    """What core's CLIPVisionEncode returns, under the same names, so core's nodes (WanImageToVideo,
    WanFirstLastFrameToVideo) take ours and ours take theirs; items work as attributes, as in core."""

    penultimate_hidden_states: torch.Tensor  # B×L×D after all blocks but the last: Wan's clip_fea
    last_hidden_state: torch.Tensor  # B×L×D after all blocks (no final norm)
    image_embeds: torch.Tensor  # B×P, the normed class token projected
    image_sizes: list[tuple[int, ...]]  # C×S×S of each preprocessed image, as core records them
    mm_projected: torch.Tensor | None = None  # a LLaVA projection, which CLIP vision files do not have

    def __getitem__(self, key: str):
        return getattr(self, key)

    def __setitem__(self, key: str, value) -> None:
        setattr(self, key, value)

    def to(self, device: torch.device | str) -> ImageFeatures:
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        return ImageFeatures(
            **{name: v.to(device) if isinstance(v, torch.Tensor) else v for name, v in values.items()}
        )


def preprocess(
    images: torch.Tensor,
    size: int,
    crop: bool,
    mean: tuple[float, ...] = CLIP_MEAN,
    std: tuple[float, ...] = CLIP_STD,
) -> torch.Tensor:
    """B×H×W×C images in 0..1 (ComfyUI's IMAGE) -> B×3×S×S normalised float32 pixels (S = size).

    crop=True scales the shorter side to S and keeps the centre square; crop=False stretches the whole
    image to S×S, as Wan's reference does. Bicubic with antialiasing, as ComfyUI's clip_preprocess."""
    if images.ndim != 4 or images.shape[-1] not in (COLOUR_CHANNELS, COLOUR_CHANNELS + 1):
        raise ValueError(
            f"images of shape {tuple(images.shape)}: expected B×H×W×C with C 3 (RGB) or 4 (RGBA), ComfyUI's IMAGE."
        )
    pixels = rearrange(images[..., :COLOUR_CHANNELS].float(), "b h w c -> b c h w")
    height, width = pixels.shape[2:]
    if (height, width) != (size, size):
        if crop:
            scale = size / min(height, width)
            target = (round(height * scale), round(width * scale))
        else:
            target = (size, size)
        pixels = F.interpolate(pixels, size=target, mode="bicubic", antialias=True)
        top, left = (target[0] - size) // 2, (target[1] - size) // 2
        pixels = pixels[:, :, top : top + size, left : left + size]
    pixels = (pixels * LEVELS).clamp(0, LEVELS).round() / LEVELS
    mean_, std_ = (torch.tensor(v, device=pixels.device)[:, None, None] for v in (mean, std))
    return (pixels - mean_) / std_


@torch.no_grad()
def encode_images(
    encoder: CLIPVisionEncoder, images: torch.Tensor, crop: bool = True, device: torch.device | None = None
) -> ImageFeatures:
    """B×H×W×C images in 0..1 -> their CLIP features, computed on `device` (default: where the encoder's
    weights are). The penultimate hidden states are Wan's `use_31_block=True` features (block 31 of
    ViT-H/14's 32)."""
    config = encoder.config
    device = device or next(encoder.parameters()).device
    pixels = preprocess(images.to(device), config.image_size, crop)
    penultimate, last = encoder(pixels, after_blocks=(config.num_layers - 1, config.num_layers))
    return ImageFeatures(
        penultimate_hidden_states=penultimate,
        last_hidden_state=last,
        image_embeds=encoder.image_embeds(last),
        image_sizes=[tuple(pixels.shape[1:])] * pixels.shape[0],
    )
