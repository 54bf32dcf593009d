"""Node classes: each declares its inputs and calls one library function."""

from .. import host
from .conditioning import SpacetimeImageCondition
from .dit import SpacetimeDiTLoader, SpacetimePatchifier, SpacetimeUnpatchify
from .editing import (
    SpacetimeConnectVideos,
    SpacetimeExtendVideo,
    SpacetimeImageToVideo,
    SpacetimeJoinEditedClip,
    SpacetimeLongVideo,
    SpacetimeLoopVideo,
    SpacetimeVideoToVideo,
)
from .image_encoder import SpacetimeImageEncode, SpacetimeImageEncoderLoader
from .lora import SpacetimeLoRALoader
from .prompting import SpacetimePromptGuard, SpacetimeShotPrompt
from .provenance import SpacetimeDetectWatermark
from .sampling import SpacetimeDiTDenoiser, SpacetimeScheduler
from .text import SpacetimeStoryboard, SpacetimeTextEncode, SpacetimeTextEncoderLoader
from .tiny_world import SpacetimeTinyWorldLoader
from .vae import SpacetimeEmptyLatentVideo, SpacetimeVAEDecode, SpacetimeVAEEncode, SpacetimeVAELoader
from .video_combine import SpacetimeVideoCombine

host.register_pack_folders()  # Tiny World's LoRA among ComfyUI's loras

NODE_CLASS_MAPPINGS = {
    "SpacetimeTinyWorldLoader": SpacetimeTinyWorldLoader,
    "SpacetimeDiTLoader": SpacetimeDiTLoader,
    "SpacetimeLoRALoader": SpacetimeLoRALoader,
    "SpacetimePatchifier": SpacetimePatchifier,
    "SpacetimeUnpatchify": SpacetimeUnpatchify,
    "SpacetimeTextEncoderLoader": SpacetimeTextEncoderLoader,
    "SpacetimeTextEncode": SpacetimeTextEncode,
    "SpacetimeStoryboard": SpacetimeStoryboard,
    "SpacetimeImageEncoderLoader": SpacetimeImageEncoderLoader,
    "SpacetimeImageEncode": SpacetimeImageEncode,
    "SpacetimeVAELoader": SpacetimeVAELoader,
    "SpacetimeEmptyLatentVideo": SpacetimeEmptyLatentVideo,
    "SpacetimeVAEEncode": SpacetimeVAEEncode,
    "SpacetimeVAEDecode": SpacetimeVAEDecode,
    "SpacetimeScheduler": SpacetimeScheduler,
    "SpacetimeDiTDenoiser": SpacetimeDiTDenoiser,
    "SpacetimeVideoCombine": SpacetimeVideoCombine,
    "SpacetimeImageToVideo": SpacetimeImageToVideo,
    "SpacetimeVideoToVideo": SpacetimeVideoToVideo,
    "SpacetimeExtendVideo": SpacetimeExtendVideo,
    "SpacetimeConnectVideos": SpacetimeConnectVideos,
    "SpacetimeLoopVideo": SpacetimeLoopVideo,
    "SpacetimeImageCondition": SpacetimeImageCondition,
    "SpacetimeJoinEditedClip": SpacetimeJoinEditedClip,
    "SpacetimeLongVideo": SpacetimeLongVideo,
    "SpacetimeShotPrompt": SpacetimeShotPrompt,
    "SpacetimePromptGuard": SpacetimePromptGuard,
    "SpacetimeDetectWatermark": SpacetimeDetectWatermark,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "SpacetimeTinyWorldLoader": "Tiny World Loader (Spacetime)",
    "SpacetimeDiTLoader": "DiT Loader (Spacetime)",
    "SpacetimeLoRALoader": "LoRA Loader (Spacetime)",
    "SpacetimePatchifier": "Patchifier (Spacetime)",
    "SpacetimeUnpatchify": "Unpatchify (Spacetime)",
    "SpacetimeTextEncoderLoader": "Text Encoder Loader (Spacetime)",
    "SpacetimeTextEncode": "Text Encode (Spacetime)",
    "SpacetimeStoryboard": "Storyboard (Spacetime)",
    "SpacetimeImageEncoderLoader": "Image Encoder Loader (Spacetime)",
    "SpacetimeImageEncode": "Image Encode (Spacetime)",
    "SpacetimeVAELoader": "VAE Loader (Spacetime)",
    "SpacetimeEmptyLatentVideo": "Empty Latent Video (Spacetime)",
    "SpacetimeVAEEncode": "VAE Encode (Spacetime)",
    "SpacetimeVAEDecode": "VAE Decode (Spacetime)",
    "SpacetimeScheduler": "Scheduler (Spacetime)",
    "SpacetimeDiTDenoiser": "DiT Denoiser (Spacetime)",
    "SpacetimeVideoCombine": "Video Combine (Spacetime)",
    "SpacetimeImageToVideo": "Image to Video (Spacetime)",
    "SpacetimeVideoToVideo": "Video to Video (Spacetime)",
    "SpacetimeExtendVideo": "Extend Video (Spacetime)",
    "SpacetimeConnectVideos": "Connect Videos (Spacetime)",
    "SpacetimeLoopVideo": "Loop Video (Spacetime)",
    "SpacetimeImageCondition": "Image Condition (Spacetime)",
    "SpacetimeJoinEditedClip": "Join Edited Clip (Spacetime)",
    "SpacetimeLongVideo": "Long Video (Spacetime)",
    "SpacetimeShotPrompt": "Shot Prompt (Spacetime)",
    "SpacetimePromptGuard": "Prompt Guard (Spacetime)",
    "SpacetimeDetectWatermark": "Detect Watermark (Spacetime)",
}
