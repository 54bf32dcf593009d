"""Image encoder: SpacetimeImageEncoderLoader and SpacetimeImageEncode (CLIP vision features for Wan 2.1's
image-to-video and first-last-frame models)."""

from __future__ import annotations

from .. import host
from ..image_encoders import encode_images, load_image_encoder
from ..inputs import check_image
from ..ops import COMPUTE_DTYPES, WEIGHT_DTYPES, loader_dtypes

IMAGE_ENCODER = "SPACETIME_IMAGE_ENCODER"
CROPS = {"center": True, "none": False}


class SpacetimeImageEncoderLoader:
    CATEGORY = "Spacetime/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (IMAGE_ENCODER,)
    RETURN_NAMES = ("image_encoder",)
    DESCRIPTION = (
        "Loads the CLIP vision encoder Wan 2.1's image-to-video (I2V 14B) and first-last-frame (FLF2V 14B) "
        "models read beside the text: clip_vision_h.safetensors (OpenCLIP ViT-H/14) from models/clip_vision."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image_encoder_name": (
                    host.model_filenames("clip_vision"),
                    {
                        "tooltip": "A CLIP vision file in ComfyUI's models/clip_vision folder. Wan needs "
                        "clip_vision_h.safetensors (ViT-H/14); clip_vision_l and clip_vision_g are refused."
                    },
                ),
                "weight_dtype": (
                    list(WEIGHT_DTYPES),
                    {
                        "default": "default",
                        "tooltip": "How weights are kept in memory. default: as stored (clip_vision_h is fp16, "
                        "1.3 GB). fp8_e4m3fn halves that, at a small cost in accuracy.",
                    },
                ),
                "compute_dtype": (
                    list(COMPUTE_DTYPES),
                    {"default": "auto", "tooltip": "Matmul precision. auto: bf16 on GPUs, fp32 on the CPU."},
                ),
            }
        }

    def load(self, image_encoder_name, weight_dtype, compute_dtype):
        weights, compute = loader_dtypes(weight_dtype, compute_dtype)
        path = host.model_path("clip_vision", image_encoder_name)
        return (load_image_encoder(path, weights, compute, device=host.offload_device()),)


class SpacetimeImageEncode:
    CATEGORY = "Spacetime/conditioning"
    FUNCTION = "encode"
    RETURN_TYPES = ("CLIP_VISION_OUTPUT",)
    RETURN_NAMES = ("clip_vision_output",)
    OUTPUT_TOOLTIPS = (
        "The image's CLIP features in core's CLIP_VISION_OUTPUT format: Wan reads penultimate_hidden_states "
        "(B×257×1280 for ViT-H/14). Plugs into core's WanImageToVideo as well as ours.",
    )
    DESCRIPTION = "Encodes images with the CLIP vision encoder, as Wan 2.1's image-to-video models read them."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image_encoder": (IMAGE_ENCODER, {"tooltip": "From Image Encoder Loader (Spacetime)."}),
                "image": (
                    "IMAGE",
                    {"tooltip": "The start (or end) frame; each image of a batch is encoded."},
                ),
                "crop": (
                    list(CROPS),
                    {
                        "default": "none",
                        "tooltip": "none: the whole image is squeezed to 224×224, as Wan's reference does; "
                        "keep it for Wan. center: the centre square only (core's CLIP Vision Encode default); "
                        "the encoder then never sees the sides of a wide frame.",
                    },
                ),
            }
        }

    def encode(self, image_encoder, image, crop):
        check_image(image, "image")
        host.throw_if_interrupted()
        with host.on_compute_device(image_encoder) as device:
            features = encode_images(image_encoder, image, crop=CROPS[crop], device=device)
        return (features.to(host.intermediate_device()),)
