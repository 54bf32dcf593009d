"""VAE nodes: SpacetimeVAELoader, SpacetimeEmptyLatentVideo, SpacetimeVAEDecode, SpacetimeVAEEncode."""

from __future__ import annotations

import torch

from .. import host
from ..editing import decode_long_video, decode_steps
from ..inputs import check_image, latent_samples
from ..ops import dtype_choice
from ..vae import MAX_FRAMES, MAX_SIZE, frames_to_video, load_vae
from ..vae.video_vae import pixel_tiling

VAE = "SPACETIME_VAE"
VAE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SMALLEST_STRIDE = 8  # pixels a latent pixel covers in every Wan VAE (Wan 2.1: 8, Wan 2.2: 16)


class SpacetimeVAELoader:
    CATEGORY = "Spacetime/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (VAE,)
    RETURN_NAMES = ("vae",)
    DESCRIPTION = (
        "Loads a Wan causal video VAE from models/vae: wan_2.1_vae.safetensors (Wan 2.1, 2.2 A14B) or "
        "wan2.2_vae.safetensors (Wan 2.2 TI2V 5B); the version is read from the file's tensors."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae_name": (
                    host.model_filenames("vae"),
                    {"tooltip": "A Wan VAE in ComfyUI's models/vae folder."},
                ),
                "dtype": (
                    list(VAE_DTYPES),
                    {
                        "default": "fp32",
                        "tooltip": "fp32 decodes best (Wan's advice); bf16 halves the memory of the weights and "
                        "activations at a small quality cost; fp16 can overflow.",
                    },
                ),
            }
        }

    def load(self, vae_name, dtype):
        chosen = dtype_choice(VAE_DTYPES, dtype, "dtype")
        return (load_vae(host.model_path("vae", vae_name), chosen, device=host.offload_device()),)


class SpacetimeEmptyLatentVideo:
    CATEGORY = "Spacetime/latent"
    FUNCTION = "generate"
    RETURN_TYPES = ("LATENT",)
    DESCRIPTION = "An empty (all-zero) latent video of the given size, shaped by the VAE's strides."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": (
                    VAE,
                    {
                        "tooltip": "Sets the latent channels and strides (Wan 2.1: 16 channels, 4x8x8; "
                        "Wan 2.2: 48 channels, 4x16x16)."
                    },
                ),
                "width": (
                    "INT",
                    {
                        "default": 832,
                        "min": 16,
                        "max": MAX_SIZE,
                        "step": 16,
                        "tooltip": "Pixels; a multiple of 16 for Wan 2.1 (VAE stride 8 x patch 2), of 32 for "
                        "Wan 2.2 TI2V 5B (VAE stride 16 x patch 2).",
                    },
                ),
                "height": (
                    "INT",
                    {
                        "default": 480,
                        "min": 16,
                        "max": MAX_SIZE,
                        "step": 16,
                        "tooltip": "Pixels; a multiple of 16 for Wan 2.1, of 32 for Wan 2.2 TI2V 5B.",
                    },
                ),
                "frames": (
                    "INT",
                    {
                        "default": 81,
                        "min": 1,
                        "max": MAX_FRAMES,
                        "step": 4,
                        "tooltip": "4k+1 frames (1, 5, ..., 81): the first frame is encoded alone, then groups of four. 81 frames at 16 fps is 5 s.",
                    },
                ),
                "batch_size": (
                    "INT",
                    {"default": 1, "min": 1, "max": 64, "tooltip": "Videos generated together."},
                ),
            }
        }

    def generate(self, vae, width, height, frames, batch_size):
        shape = vae.latent_shape(frames, height, width, batch_size)
        return ({"samples": torch.zeros(shape, device=host.intermediate_device())},)


class SpacetimeVAEDecode:
    CATEGORY = "Spacetime/latent"
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The frames (B·T images), ready for Video Combine.",)
    DESCRIPTION = (
        "Decodes a latent video to frames, one latent frame at a time (memory does not grow with length); "
        "a Long Video latent window by window, as Video Combine does."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"vae": (VAE,), "latent": ("LATENT", {"tooltip": "Raw VAE latents B×C×T×H×W."})},
            "optional": {
                "tile_size": (
                    "INT",
                    {
                        "default": 0, "min": 0, "max": MAX_SIZE, "step": 8,
                        "tooltip": "Decode in square tiles of this many pixels, a multiple of the VAE's stride "
                        "(Wan 2.1: 8, Wan 2.2: 16). 0: whole frames, or tiles chosen by themselves when a whole "
                        "frame would not fit in memory. Tiles bound the memory of large frames (2048x2048 "
                        "images, 1080p); larger tiles blend better.",
                    },
                ),
                "overlap": (
                    "INT",
                    {"default": 64, "min": 0, "max": MAX_SIZE, "step": 8, "tooltip": "Pixels shared by neighbouring tiles, blended linearly."},
                ),
            },
        }  # fmt: skip

    @classmethod
    def VALIDATE_INPUTS(cls, tile_size=None, overlap=None):
        """The tiles, checked when ComfyUI validates the prompt, before the sampling upstream of this node: as
        multiples of 8, every VAE's stride (Wan 2.2's 16 is checked as it decodes; so are linked inputs)."""
        if tile_size is None or overlap is None:
            return True
        if not (0 <= tile_size <= MAX_SIZE and 0 <= overlap <= MAX_SIZE):
            return f"tile_size={tile_size} and overlap={overlap} must be from 0 to {MAX_SIZE} pixels."
        try:
            pixel_tiling(tile_size, overlap if tile_size else 0, SMALLEST_STRIDE)
        except ValueError as error:
            return str(error)
        return True

    def decode(self, vae, latent, tile_size=0, overlap=64):
        latent_samples(latent)
        tick = host.progress_ticker(decode_steps(latent), "VAE decode")
        overlap = overlap if tile_size else 0
        # every item's frames, in order, as the decoder hands them over (a Long Video latent window by window)
        chunks = decode_long_video(latent, lambda item: vae.decode_frames(item, tick, tile_size, overlap))
        return (torch.cat([frames.to(host.intermediate_device()) for frames in chunks]),)


class SpacetimeVAEEncode:
    CATEGORY = "Spacetime/latent"
    FUNCTION = "encode"
    RETURN_TYPES = ("LATENT",)
    DESCRIPTION = (
        "Encodes frames (an IMAGE batch, one video) to a latent video; the frame count must be 4k+1."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": (VAE,),
                "images": (
                    "IMAGE",
                    {"tooltip": "The frames of one video, 4k+1 of them (a single image works)."},
                ),
            }
        }

    def encode(self, vae, images):
        check_image(images)
        if images.shape[-1] != 3:
            channels = images.shape[-1]
            hint = " Drop the alpha channel with 'Split Image with Alpha' first." if channels == 4 else ""
            raise ValueError(
                f"images of shape {tuple(images.shape)} ({channels} channels): expected RGB frames T×H×W×3.{hint}"
            )
        tick = host.progress_ticker(1 + (images.shape[0] - 1) // vae.temporal_stride, "VAE encode")
        latent = vae.encode(frames_to_video(images), progress=tick)
        return ({"samples": latent.to(host.intermediate_device())},)
