"""The image condition of Wan's image-to-video models (Wan 2.1 I2V / FLF2V, Wan 2.2 I2V A14B): the known
frames, given beside the noisy latent as a concat condition (a 4-channel mask and the known frames'
latent), and for Wan 2.1 the CLIP features of the images. It travels in CONDITIONING under core's keys
(`concat_latent_image`, `concat_mask`, `clip_vision_output`, as core's WanImageToVideo and
WanFirstLastFrameToVideo set them), so conditioning from core's nodes works here and ours in core's
samplers; this module reads it the way core's WAN21 model does (`concat_cond`).

Axes: B batch, C latent channels, T latent frames, H W latent size, M mask channels (the 4 frames of a
latent frame's group), I image tokens, E image feature width, L tokens, P token width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..dit import WanDiT
from ..dit.config import MASK_CHANNELS
from ..dit.patchify import patchify

KEYS = ("concat_latent_image", "concat_mask", "clip_vision_output")


@dataclass(frozen=True)
class ImageCondition:
    """What an image-to-video model takes beside the noisy latent: `latent`, the known frames' raw latent
    (B×C×T×H×W: the VAE's encode of the clip with its unknown frames grey), `mask` (B×M×T×H×W, 1 where a
    frame is known; None: the latent frames `latent` is not zero in), and `features`, CLIP image features
    (B×I×E, the penultimate hidden states of ViT-H/14) for Wan 2.1's image cross-attention."""

    latent: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    features: torch.Tensor | None = None

    @classmethod
    def from_options(cls, options: dict) -> ImageCondition | None:
        """From a CONDITIONING entry's options (core's keys; core's concat_mask is 0 where known, 1 to
        denoise, in 1 or 4 channels); None when it carries none of them."""
        if not any(options.get(key) is not None for key in KEYS):
            return None
        latent, mask = options.get("concat_latent_image"), options.get("concat_mask")
        if mask is not None:
            mask = mask.float()
            if mask.ndim != 5 or mask.shape[1] not in (1, MASK_CHANNELS):
                raise ValueError(
                    f"concat_mask of shape {tuple(mask.shape)}: expected B×1×T×H×W or B×4×T×H×W (core's "
                    "WanImageToVideo / WanFirstLastFrameToVideo)."
                )
            mask = 1.0 - mask
        clip = options.get("clip_vision_output")
        features = None
        if clip is not None:
            features = getattr(clip, "penultimate_hidden_states", None)
            if features is None:
                raise ValueError(
                    f"clip_vision_output of type {type(clip).__name__} holds no penultimate_hidden_states: "
                    "connect CLIP Vision Encode's (or Image Encode (Spacetime)'s) output."
                )
        return cls(None if latent is None else latent.float(), mask, features)

    def check(self, model: WanDiT) -> None:
        """What `model` needs of the condition, with the fix when it is missing."""
        config = model.config
        if config.concat_condition and self.latent is None:
            raise ValueError(
                f"{config.name} is an image-to-video model and the conditioning holds no image: connect Image "
                "Condition (Spacetime) after an editing node (Image to Video, Extend, Connect, Loop), or "
                "core's WanImageToVideo."
            )
        if not config.concat_condition and self.latent is not None:
            raise ValueError(
                f"the conditioning holds an image for an image-to-video model, but {config.name} is not one "
                f"({config.in_channels} input channels): leave out Image Condition / WanImageToVideo, or "
                "load an image-to-video model (Wan 2.2 I2V A14B, Wan 2.1 I2V / FLF2V)."
            )
        if config.image_dim and self.features is None:
            raise ValueError(
                f"{config.name} reads CLIP image features: encode the image with the CLIP vision encoder "
                "(clip_vision_h.safetensors) and connect its output to Image Condition (Spacetime)."
            )

    def tokens(self, model: WanDiT, shape: tuple[int, ...]) -> torch.Tensor:
        """The concat condition as tokens B×L×P beside a noisy latent of `shape` (B×C×T×H×W, raw): the mask
        then the normalised latent, brought to the latent's size, frames and batch as core does."""
        batch, _, frames, height, width = shape
        latent = model.latent_format.normalize(_fit(self.latent, height, width, frames, batch))
        mask = self.mask if self.mask is not None else torch.zeros(1, 1, frames, height, width)
        mask = _fit(mask, height, width, frames, batch).expand(-1, MASK_CHANNELS, -1, -1, -1)
        tokens, _ = patchify(torch.cat([mask, latent], dim=1), model.config.patch_size)
        return tokens


def _fit(x: torch.Tensor, height: int, width: int, frames: int, batch: int) -> torch.Tensor:
    """x (B'×C×T'×H'×W') brought to height×width (bilinear), `frames` (cut, or padded with zeros) and
    `batch` (repeated), as core fits a concat condition to its noise."""
    x = x.float()
    if x.shape[3:] != (height, width):
        x = F.interpolate(x.flatten(1, 2), size=(height, width), mode="bilinear").unflatten(1, x.shape[1:3])
    x = F.pad(x[:, :, :frames], (0, 0, 0, 0, 0, max(0, frames - x.shape[2])))
    if x.shape[0] != batch:
        x = x.repeat(-(-batch // x.shape[0]), 1, 1, 1, 1)[:batch]
    return x
