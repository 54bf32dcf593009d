"""The Sora editing suite: placing known frames in a latent (image to video, video to video, extend,
connect, loop), putting a decoded clip back together with its sources, and long videos window by window."""

from .assembly import DEFAULT_BLEND, assemble, spread_joins, spread_jump
from .long_video import WINDOWS_KEY, Codec, LongVideo, Windows, decode_long_video, decode_steps
from .placement import (
    FIT_RULES,
    OPENINGS,
    ClipPlan,
    EditLatent,
    EncodeClips,
    clip_encoder,
    connect,
    extend,
    fit_frames,
    image_to_video,
    rgb_frames,
    strength_sigmas,
    video_to_video,
)

__all__ = [
    "DEFAULT_BLEND",
    "FIT_RULES",
    "OPENINGS",
    "WINDOWS_KEY",
    "ClipPlan",
    "Codec",
    "EditLatent",
    "EncodeClips",
    "LongVideo",
    "Windows",
    "assemble",
    "clip_encoder",
    "connect",
    "decode_long_video",
    "decode_steps",
    "extend",
    "fit_frames",
    "image_to_video",
    "rgb_frames",
    "spread_joins",
    "spread_jump",
    "strength_sigmas",
    "video_to_video",
]  # fmt: skip
