"""An edit's clip as the image condition of Wan's image-to-video models, built Wan's own way: the clip
with its known frames in place and grey (0.5) elsewhere, encoded as one video, and a mask of the known
frames in groups of a latent frame's frames (the first latent frame's group is frame 0, four times), as
Wan's I2V / FLF2V references and core's WanImageToVideo / WanFirstLastFrameToVideo build them.

Axes: B batch, F pixel frames, T latent frames, M a latent frame's frames (the VAE's temporal stride),
H W height and width.
"""

from __future__ import annotations

import copy

import torch

from ..samplers.image_condition import ImageCondition
from .placement import ClipPlan, EncodeClips

UNKNOWN = 0.5  # the grey an unknown frame is encoded as (0 in the VAE's -1..1)


def condition_known(plan: ClipPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of the plan's frames an image-to-video model is given (F bools) and those frames of each clip
    (B×K×H×W×3): the known frames, or for video to video the source's first frame."""
    if plan.sources is not None:
        return plan.known, plan.sources
    if plan.reference is None:
        raise ValueError(
            f"this plan ({plan.describe()}) holds no frame to condition an image-to-video model on."
        )
    known = torch.zeros(plan.frames, dtype=torch.bool)
    known[0] = True
    return known, plan.reference[None]


def condition_clips(plan: ClipPlan) -> list[torch.Tensor]:
    """Each clip of the plan's batch (F×H×W×3 in 0..1): its known frames, grey where unknown."""
    known, sources = condition_known(plan)
    height, width = sources.shape[2:4]
    clips = []
    for item in range(plan.batch):
        clip = torch.full((plan.frames, height, width, 3), UNKNOWN)
        clip[known] = sources[item].float()
        clips.append(clip)
    return clips


def known_mask(known: torch.Tensor, stride: int, size: tuple[int, int], batch: int = 1) -> torch.Tensor:
    """Which of a clip's frames are known (F bools) -> B×M×T×H×W, 1 where known: channel m of latent frame
    t is frame 1 + stride·(t − 1) + m (the first latent frame holds frame 0 alone: all its channels are
    frame 0's), at the latent's size."""
    frames = len(known)
    if (frames - 1) % stride:
        raise ValueError(f"a clip of {frames} frames does not fill whole latent frames ({stride}k+1 frames).")
    index = torch.cat([torch.zeros(stride, dtype=torch.long), torch.arange(1, frames)]).view(-1, stride)
    mask = known[index].float().T  # M×T
    return mask[None, :, :, None, None].expand(batch, -1, -1, *size).contiguous()


def image_condition(plan: ClipPlan, encode: EncodeClips, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The plan's clip as an image-to-video model's condition: (raw latent B×C×T×H×W of condition_clips,
    known_mask at its size)."""
    ClipPlan.check(plan)
    latent = torch.cat([latent.float().cpu() for latent in encode(condition_clips(plan))])
    known, _ = condition_known(plan)
    return latent, known_mask(known, stride, tuple(latent.shape[3:]), plan.batch)


def opening_condition(
    known: torch.Tensor, latent_frames: int, stride: int, encode, held: dict | None = None
) -> ImageCondition:
    """An image-to-video model's condition for a clip of `latent_frames` that opens with the frames `known`
    (a video B×3×P×H×W in -1..1), grey after them except where `held` (latent frame ≥ 1 -> a video
    B×3×1×H×W) holds a frame still over a latent frame's `stride` frames: the clip encoded (`encode`: video
    -> raw latent) and the mask of the known frames."""
    frames = 1 + stride * (latent_frames - 1)
    video = known.new_zeros(*known.shape[:2], frames, *known.shape[3:])  # 0: grey in -1..1
    video[:, :, : known.shape[2]] = known
    flags = torch.arange(frames) < known.shape[2]
    for frame, image in (held or {}).items():
        first = 1 + stride * (frame - 1)
        video[:, :, first : first + stride] = image
        flags[first : first + stride] = True
    latent = encode(video).float().cpu()
    return ImageCondition(latent, known_mask(flags, stride, tuple(latent.shape[3:]), known.shape[0]))


def first_and_last(start, end):
    """CLIP image features of a first and a last image side by side (FLF2V takes both; core's
    WanFirstLastFrameToVideo joins them the same way): a copy of `start` with the two images' tokens."""
    joined = copy.copy(start)
    joined.penultimate_hidden_states = torch.cat(
        [start.penultimate_hidden_states, end.penultimate_hidden_states], dim=-2
    )
    return joined
