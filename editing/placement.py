"""Frame conditioning: the editing operations as placements of known frames in a latent video.

Every edit generates one clip whose latent holds known frames (pinned, core's `noise_mask` = 0) and new
ones (denoised, mask 1):

    image to video   [image] [new ...]
    extend forward   [tail of the clip] [new ...]
    extend backward  [new ...] [head of the clip]
    connect          [tail of clip A] [new ...] [head of clip B]
    loop             [tail of the clip] [new ...] [head of the same clip]

A causal video VAE (Wan's) puts pixel frame 0 alone in latent frame 0 and every later group of 4 pixel
frames in one latent frame. Known frames must fill whole latent frames: a head of 4m+1 frames is
encoded as a video of its own; a tail that starts mid-clip (4m frames) is encoded after a still lead-in
(its first frame held), which stands in for the unknown frames before it, and the lead-in is dropped.
Each edit encodes all its known clips in one call (`EncodeClips`), so one progress bar covers them.
The ClipPlan it returns tells `assembly.assemble` how the decoded clip goes back together.

Axes: F pixel frames, T latent frames, B batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..host import Progress
from ..inputs import check_image
from ..vae import VideoVAE, frames_to_video

FIT_RULES = ("crop", "pad", "stretch")
LEAD_IN_LATENT_FRAMES = 2  # still latent frames encoded before known frames that start mid-clip
# Clips of frames (each F×H×W×3 in 0..1, F = stride·k + 1) -> their raw latents (each 1×C×T×h×w), encoded
# in one call so that one progress bar covers them all (clip_encoder).
EncodeClips = Callable[[list[torch.Tensor]], list[torch.Tensor]]


def rgb_frames(images: torch.Tensor, name: str) -> torch.Tensor:
    """An IMAGE (B×H×W×C floats in 0..1, checked) as RGB: an alpha channel is composited over black
    (transparent pixels become black, as most video players show them); 1 channel is grey."""
    check_image(images, name)
    channels = images.shape[-1]
    images = images.float()
    if channels == 4:
        return images[..., :3] * images[..., 3:]
    if channels == 1:
        return images.expand(-1, -1, -1, 3)
    if channels != 3:
        raise ValueError(f"{name} has {channels} channels; expected RGB (3), RGBA (4) or grey (1).")
    return images


def fit_frames(images: torch.Tensor, width: int, height: int, rule: str) -> torch.Tensor:
    """Bring frames B×H×W×3 to height×width: `crop` scales to cover and cuts the centre out, `pad` scales
    to fit inside and fills the borders with black, `stretch` scales each axis on its own (kornia,
    bilinear, antialiased when shrinking)."""
    from kornia.geometry.transform import resize

    if rule not in FIT_RULES:
        raise ValueError(f"fit {rule!r}: expected one of {', '.join(FIT_RULES)}.")
    source_height, source_width = images.shape[1:3]
    if (source_height, source_width) == (height, width):
        return images
    x = images.permute(0, 3, 1, 2)
    if rule == "stretch":
        size = (height, width)
    else:
        pick = max if rule == "crop" else min
        scale = pick(height / source_height, width / source_width)
        size = (max(1, round(source_height * scale)), max(1, round(source_width * scale)))
        if rule == "crop":  # rounding must not leave a gap
            size = (max(size[0], height), max(size[1], width))
    x = resize(x, size, interpolation="bilinear", antialias=True).clamp(0.0, 1.0)
    if rule == "crop":
        top, left = (size[0] - height) // 2, (size[1] - width) // 2
        x = x[:, :, top : top + height, left : left + width]
    elif rule == "pad":
        top, left = (height - size[0]) // 2, (width - size[1]) // 2
        x = F.pad(x, (left, width - size[1] - left, top, height - size[0] - top))
    return x.permute(0, 2, 3, 1).contiguous()


@dataclass(frozen=True)
class ClipPlan:
    """How a generated clip (SPACETIME_CLIP_PLAN) goes back together with its sources, for `assemble`.

    known: F bool, which frames of the generated clip were given; sources: B×K×H×W×3, those K frames of
    each of the B clips; before / after: frames of one video joined on before / after the generated clip;
    drop_tail: generated frames left out at the end (a loop's copy of its own first frames, or the
    frames video to video added to reach stride·k+1); held: copies of the first frame just after it (an
    image held still to open the clip), left out of the result; reference: video to video's first source
    frame (1×H×W×3), which an image-to-video model is conditioned on (redrawn like the rest, not put back)."""

    known: torch.Tensor
    sources: torch.Tensor | None = None
    batch: int = 1
    before: torch.Tensor | None = None
    after: torch.Tensor | None = None
    drop_tail: int = 0
    operation: str = "edit"
    held: int = 0
    reference: torch.Tensor | None = None

    @property
    def frames(self) -> int:
        return int(self.known.numel())

    @property
    def kept(self) -> list[int]:
        """The generated clip's frames that the result keeps, in order (not the held copies of the first
        frame, nor the dropped tail)."""
        return [0, *range(1 + self.held, self.frames - self.drop_tail)]

    @staticmethod
    def check(plan) -> None:
        """`plan` is a ClipPlan, as a node takes it from its SPACETIME_CLIP_PLAN input."""
        if not isinstance(plan, ClipPlan):
            raise TypeError(
                "plan must be the SPACETIME_CLIP_PLAN of an editing node (Image to Video, Extend Video, Connect "
                f"Videos, Loop Video, Video to Video), got {type(plan).__name__}."
            )

    def describe(self) -> str:
        parts = [
            f"{self.operation}: {self.batch}x{self.frames} frames generated ({int(self.known.sum())} known)"
        ]
        if self.before is not None:
            parts.append(f"{len(self.before)} source frames before")
        if self.after is not None:
            parts.append(f"{len(self.after)} after")
        if self.held:
            parts.append(f"{self.held} held copies of the first frame left out")
        return ", ".join(parts)


@dataclass(frozen=True)
class EditLatent:
    latent: torch.Tensor  # raw B×C×T×h×w, zeros where new
    noise_mask: torch.Tensor | None  # B×1×T×h×w, core's meaning: 1 denoise, 0 keep; None: all denoised
    plan: ClipPlan


def clip_encoder(vae: VideoVAE, progress: Progress) -> EncodeClips:
    """The VAE's encoder for an edit's clips, with one progress bar over all of them (a tick per latent
    frame encoded, so it ends exactly at its total)."""

    def encode(clips: list[torch.Tensor]) -> list[torch.Tensor]:
        tick = progress("VAE encode", sum(vae.latent_shape(*clip.shape[:3])[2] for clip in clips))
        return [vae.encode(frames_to_video(clip), progress=tick) for clip in clips]

    return encode


def head_clip(frames: torch.Tensor, stride: int) -> torch.Tensor:
    """Frames that open a clip (stride·m + 1 of them), encoded as they are -> m + 1 latent frames."""
    _check_count(frames, stride, 1, "a clip's opening frames")
    return frames


def inside_clip(frames: torch.Tensor, stride: int) -> torch.Tensor:
    """Frames that start mid-clip on a latent frame boundary (stride·m of them), as they are encoded: after a
    still lead-in, their first frame held for 1 + 2·stride frames, which stands in for the unknown frames
    before them. `inside_latent` drops the lead-in's latent frames again."""
    _check_count(frames, stride, 0, "frames that start mid-clip")
    lead_in = frames[:1].expand(1 + LEAD_IN_LATENT_FRAMES * stride, -1, -1, -1)
    return torch.cat([lead_in, frames])


def inside_latent(latent: torch.Tensor) -> torch.Tensor:
    """The latent of `inside_clip`'s frames without the lead-in's: m latent frames."""
    return latent[:, :, 1 + LEAD_IN_LATENT_FRAMES :]


def _check_count(frames: torch.Tensor, stride: int, remainder: int, what: str) -> None:
    if len(frames) < max(1, remainder) or (len(frames) - remainder) % stride:
        raise ValueError(f"{what}: {len(frames)} frames; expected {stride}k+{remainder}.")


def edit_latent(
    encode: EncodeClips,
    stride: int,
    latent_size: tuple[int, int, int],
    new: int,
    head: torch.Tensor | None = None,
    tail: torch.Tensor | None = None,
    operation: str = "edit",
) -> EditLatent:
    """One generated clip: `head` (stride·m+1 known frames, or None), `new` latent frames to generate, then
    `tail` (stride·m known frames, or None). latent_size: (channels, h, w) of a latent frame. What the plan
    joins on around the clip is added with `joined`."""
    if new < 1:
        raise ValueError(f"{operation}: {new} new latent frames; at least 1 is needed.")
    clips = [head_clip(head, stride)] if head is not None else []
    if tail is not None:
        clips.append(inside_clip(tail, stride))
    latent, mask, known = _place(stride, latent_size, new, (head, tail), encode(clips))
    given = [frames for frames in (head, tail) if frames is not None]
    sources = torch.cat(given).float()[None] if given else None
    return EditLatent(latent, mask, ClipPlan(known, sources, 1, operation=operation))


def joined(edit: EditLatent, **surroundings) -> EditLatent:
    """The edit with what its plan joins on around the generated clip (ClipPlan's before, after, drop_tail)."""
    return replace(edit, plan=replace(edit.plan, **surroundings))


def _place(
    stride: int,
    latent_size: tuple[int, int, int],
    new: int,
    given: tuple[torch.Tensor | None, torch.Tensor | None],
    latents: list[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The latent (known latent frames around `new` zero ones), its noise mask and which frames are known,
    from the given (head, tail) frames and their encoded clips (`latents`, in that order)."""
    head, tail = given
    parts, known = [], []
    channels, height, width = latent_size
    if head is not None:
        parts.append(latents[0])
        known += [True] * len(head)
    parts.append(torch.zeros(1, channels, new, height, width))
    known += [False] * (new * stride if head is not None else 1 + (new - 1) * stride)
    if tail is not None:
        parts.append(inside_latent(latents[-1]))
        known += [True] * len(tail)
    latent = torch.cat([part.float().cpu() for part in parts], dim=2)
    mask = torch.ones(1, 1, latent.shape[2], height, width)
    if head is not None:
        mask[:, :, : parts[0].shape[2]] = 0.0
    if tail is not None:
        mask[:, :, latent.shape[2] - parts[-1].shape[2] :] = 0.0
    return latent, mask, torch.tensor(known)


OPENINGS = ("image", "held")  # how an image opens its video (image_to_video)


def image_to_video(
    encode: EncodeClips,
    stride: int,
    latent_size: tuple[int, int, int],
    images: torch.Tensor,
    frames: int,
    opening: str = "image",
) -> EditLatent:
    """Each image (already fitted to the video size) opens its own video of `frames` (stride·k+1) frames.
    opening "image": the image alone is the first latent frame (as Wan's own image to video). "held": the
    image held still for 1 + stride frames fills the first two latent frames, as a Long Video window opens
    with frames it continues, and its stride copies are left out of the result: the DiT starts from a still
    image and makes one more latent frame, which smooths the step from the image to the first new frame."""
    if frames < 1 + stride or (frames - 1) % stride:
        raise ValueError(
            f"frames={frames}: image to video needs {stride}k+1 frames with k >= 1 ({1 + stride}, "
            f"{1 + 2 * stride}, ...)."
        )
    if opening not in OPENINGS:
        raise ValueError(f"opening {opening!r}: expected one of {', '.join(OPENINGS)}.")
    held = stride if opening == "held" else 0
    heads = [image[None].expand(1 + held, -1, -1, -1) for image in images]
    latents = encode([head_clip(head, stride) for head in heads])
    new = (frames - 1) // stride
    placed = [
        _place(stride, latent_size, new, (head, None), [latent])
        for head, latent in zip(heads, latents, strict=True)
    ]
    latent, mask, known = zip(*placed, strict=True)
    plan = ClipPlan(known[0], torch.stack(heads).float(), len(heads), operation="image to video", held=held)
    return EditLatent(torch.cat(latent), torch.cat(mask), plan)


def head_overlap(requested: int, available: int, stride: int, what: str) -> int:
    """Known frames that open a generated clip: the largest stride·m+1 <= requested."""
    used = 1 + (max(1, requested) - 1) // stride * stride
    if available < used:
        raise ValueError(
            f"{what} has {available} frames, fewer than the overlap of {used}: lower the overlap to at most "
            f"{1 + (available - 1) // stride * stride} or give a longer clip."
        )
    return used


def tail_overlap(requested: int, available: int, stride: int, what: str) -> int:
    """Known frames that close a generated clip: the largest stride·m <= requested (at least stride)."""
    used = max(stride, requested // stride * stride)
    if available < used:
        raise ValueError(
            f"{what} has {available} frames, fewer than the overlap of {used} it needs at its start (a "
            f"multiple of {stride} when the known frames close the generated clip): give a clip of at least "
            f"{used} frames."
        )
    return used


def new_latent_frames(frames: int, stride: int, opens_clip: bool, name: str = "new_frames") -> int:
    """Latent frames for at least `frames` (`name`, at least 1) new pixel frames (1 + stride·(n-1) when they
    open the clip, stride·n otherwise)."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"{name}={frames!r} must be a whole number of new frames, at least 1.")
    return 1 + math.ceil((frames - 1) / stride) if opens_clip else math.ceil(frames / stride)


def extend(
    encode: EncodeClips,
    stride: int,
    latent_size: tuple[int, int, int],
    clip: torch.Tensor,
    new_frames: int,
    overlap: int,
    backward: bool = False,
) -> EditLatent:
    """Continue `clip` past its end (or before its start, `backward`) by at least `new_frames` frames,
    generating from its last (first) `overlap` frames; the plan joins the rest of the clip on."""
    if not backward:
        used = head_overlap(overlap, len(clip), stride, "the clip")
        new = new_latent_frames(new_frames, stride, False)
        edit = edit_latent(
            encode, stride, latent_size, new, head=clip[len(clip) - used :], operation="extend forward"
        )
        return joined(edit, before=clip[: len(clip) - used])
    used = tail_overlap(overlap, len(clip), stride, "the clip")
    new = new_latent_frames(new_frames, stride, True)
    edit = edit_latent(encode, stride, latent_size, new, tail=clip[:used], operation="extend backward")
    return joined(edit, after=clip[used:])


def connect(
    encode: EncodeClips,
    stride: int,
    latent_size: tuple[int, int, int],
    first: torch.Tensor,
    second: torch.Tensor,
    bridge_frames: int,
    overlap: int,
    loop: bool = False,
) -> EditLatent:
    """The bridge from the end of `first` to the start of `second`, and the plan that joins all three. With
    `loop` (first is second), the result ends where the clip begins, so it plays on seamlessly."""
    if first.shape[1:] != second.shape[1:]:
        raise ValueError(
            f"the two clips differ in size: {first.shape[2]}x{first.shape[1]} and {second.shape[2]}x"
            f"{second.shape[1]} (width x height). Bring both to one size first (e.g. core's Upscale Image)."
        )
    head = head_overlap(overlap, len(first), stride, "the first clip" if not loop else "the clip")
    tail = tail_overlap(overlap, len(second), stride, "the second clip")
    if loop and head + tail > len(first):
        raise ValueError(
            f"a loop of a {len(first)}-frame clip with an overlap of {overlap} would reuse frames at both ends: "
            f"give a clip of at least {head + tail} frames or lower the overlap."
        )
    new = new_latent_frames(bridge_frames, stride, False, "bridge_frames")
    operation = "loop" if loop else "connect"
    edit = edit_latent(encode, stride, latent_size, new, first[len(first) - head :], second[:tail], operation)
    if loop:  # the bridge's last frames are the clip's first: left out, the result plays on into its start
        return joined(edit, before=first[: len(first) - head], drop_tail=tail)
    return joined(edit, before=first[: len(first) - head], after=second[tail:])


def strength_sigmas(sigmas: torch.Tensor, strength: float) -> torch.Tensor:
    """Video to video: the schedule scaled to start at noise level `strength` (0 < strength <= 1) with the
    same number of steps; the source latent is noised to that level, so higher strength redraws more."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(
            f"strength={strength}: expected a value in 0..1 (above 0; 1 redraws everything, small values "
            "keep the source)."
        )
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).flatten()
    return sigmas * (strength / float(sigmas[0]))


def pad_to_stride(frames: torch.Tensor, stride: int) -> tuple[torch.Tensor, int]:
    """Frames padded to stride·k+1 by repeating the last one, and how many were added."""
    extra = (-(len(frames) - 1)) % stride
    return torch.cat([frames, frames[-1:].expand(extra, -1, -1, -1)]) if extra else frames, extra


def video_to_video(encode: EncodeClips, stride: int, frames: torch.Tensor) -> EditLatent:
    """The source video's latent, to be redrawn from a noise level (see `strength_sigmas`); frames are padded
    to stride·k+1 by repeating the last one, and the plan drops those again."""
    padded, extra = pad_to_stride(frames, stride)
    (latent,) = encode([padded])
    latent = latent.float().cpu()
    known = torch.zeros(len(padded), dtype=torch.bool)
    plan = ClipPlan(known, drop_tail=extra, operation="video to video", reference=padded[:1].float())
    return EditLatent(latent, None, plan)
