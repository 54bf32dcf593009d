"""Causal video VAEs (Wan 2.1 and 2.2), latent formats and frame conversions."""

from ..latent_formats import LATENT_FORMATS, WAN21, WAN22, LatentFormat
from .loader import load_vae
from .video_vae import MAX_FRAMES, MAX_SIZE, VideoVAE, frames_to_video, video_to_frames
from .wan21 import Wan21VAE, Wan21VAEConfig
from .wan22 import Wan22VAE, Wan22VAEConfig

__all__ = [
    "LATENT_FORMATS", "MAX_FRAMES", "MAX_SIZE", "WAN21", "WAN22", "LatentFormat", "VideoVAE", "Wan21VAE",
    "Wan21VAEConfig", "Wan22VAE", "Wan22VAEConfig", "frames_to_video", "load_vae", "video_to_frames",
]  # fmt: skip
