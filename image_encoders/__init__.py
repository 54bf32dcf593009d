"""Image encoders: the CLIP vision encoder Wan 2.1's image-to-video models read."""

from .clip_vision import VIT_H_14, CLIPVisionConfig, CLIPVisionEncoder
from .features import CLIP_MEAN, CLIP_STD, ImageFeatures, encode_images, preprocess
from .loader import load_image_encoder

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "VIT_H_14",
    "CLIPVisionConfig",
    "CLIPVisionEncoder",
    "ImageFeatures",
    "encode_images",
    "load_image_encoder",
    "preprocess",
]
