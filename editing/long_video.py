"""Long videos by chained extension: the first window is generated from the prompt; each next one opens
with the last frames of the window before, decoded and encoded again as the opening of a clip, and adds
new frames. Memory is that of one window, whatever the length: the DiT never sees more than `window`
latent frames, the VAE never more than one window, and the latent video itself is small.

Why decode and encode again: a causal video VAE's first latent frame holds one frame alone and every later
one a group of `stride` frames, so every clip a model is trained on opens with a single-frame latent;
given the previous window's last latent frames as they are (groups) at a window's start, the model fills
the window with stripes one DiT patch wide. The opening is the last 1 + stride·(overlap − 1) frames, which
fill `overlap` latent frames as a clip opens.

The result is one latent video (each window's new latent frames on the end of the last) and the openings.
It is decoded window by window (decode_long_video): each window's new frames after its own opening, whose
frames are left out, as the DiT made them to follow (decoded after the latent frames of the window before
instead, the first new frames come out tinted). `LongVideo.frames` decodes each window once, for the next
window's opening and for its own frames; the Long Video node's graph decodes twice, in the node for the
openings (`LongVideo.latent`) and in Video Combine for the frames.

Colour drift: chained windows can drift in tone (each continues from the last, errors add up). After each
window, the per-channel mean of its new latent frames is moved towards the first window's: not at all at
the join (the model continues the frames it was given, so a jump there would be a seam), rising linearly
over the window towards `correction`. Under a storyboard each shot has its own reference (the first window
inside it: another shot's colours are not drift), and a window two shots share is left as it is made. The
jump at each join (between the last frame of one window and the first new frame of the next) is spread
over the frames after it (assembly.spread_joins).

Axes: B batch, C latent channels, T latent frames, F pixel frames.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial

import torch

from .. import host
from ..dit import SpacetimePatches
from ..host import Progress
from ..image_encoders import encode_images
from ..samplers.denoiser import Sampling, denoise
from ..samplers.guidance import Guider
from ..samplers.noise import MAX_SEED
from ..vae import VideoVAE, frames_to_video, video_to_frames
from ..video.combine import FrameStream
from .assembly import DEFAULT_BLEND, spread_joins
from .condition import opening_condition
from .placement import LEAD_IN_LATENT_FRAMES, fit_frames, inside_latent, rgb_frames
from .storyboard import Storyboard

Encode = Callable[[torch.Tensor], torch.Tensor]  # video B×3×F×H×W in -1..1 -> raw latent B×C×T×h×w
Decode = Callable[[torch.Tensor], torch.Tensor]  # raw latent B×C×T×h×w -> video B×3×F×H×W in -1..1
FrameChunks = Callable[[torch.Tensor], Iterator[torch.Tensor]]  # raw latent 1×C×T×h×w -> IMAGE chunks
WINDOWS_KEY = "spacetime_windows"  # in a LATENT: windows_entry(...), how Long Video made it
MAX_LONG_FRAMES = 16 * 60 * 60 + 1  # an hour at 16 fps
log = logging.getLogger(__name__)


def check_windows(frames: int, window: int, overlap: int) -> None:
    if window < 2 or not 1 <= overlap < window:
        raise ValueError(
            f"window={window}, overlap={overlap} latent frames: expected a window of at least 2 and an overlap "
            "of at least 1 and less than the window (e.g. window 5, overlap 2 for Tiny World; 21 and 4 for Wan)."
        )
    if frames < 1:
        raise ValueError(f"{frames} latent frames: expected at least 1.")


def window_count(frames: int, window: int, overlap: int) -> int:
    """Windows needed for `frames` latent frames."""
    check_windows(frames, window, overlap)
    return 1 if frames <= window else 1 + -(-(frames - window) // (window - overlap))


def window_joins(frames: int, window: int, overlap: int) -> list[int]:
    """Latent frames at which each window after the first begins its new frames (the joins)."""
    count = window_count(frames, window, overlap)
    return [window + index * (window - overlap) for index in range(count - 1)]


def join_frames(frames: int, window: int, overlap: int, stride: int) -> list[int]:
    """The video frames at which each window after the first begins its new frames."""
    return [1 + (join - 1) * stride for join in window_joins(frames, window, overlap)]


def window_seed(seed: int, index: int) -> int:
    """Window `index`'s seed: seed + index, wrapping past MAX_SEED to 0, so every seed a widget takes works
    for any number of windows."""
    return (seed + index) % (MAX_SEED + 1)


def latent_windows(window_frames: int, overlap_frames: int, stride: int) -> tuple[int, int]:
    """A window of `window_frames` video frames (4k+1) continuing from `overlap_frames` (a multiple of 4,
    rounded down) -> (window, overlap) in latent frames."""
    return (window_frames - 1) // stride + 1, overlap_frames // stride


def opening_frames(overlap: int, stride: int) -> int:
    """Video frames an opening of `overlap` latent frames holds: 1, then `stride` for each further one."""
    return 1 + stride * (overlap - 1)


@dataclass(frozen=True)
class Windows:
    """How a long video is cut: `window` latent frames made at once, each window after the first continuing
    from `overlap` of them; the VAE's temporal `stride`; and the colour-drift `correction` (0 off, 1 full)."""

    window: int
    overlap: int
    stride: int
    correction: float = 1.0

    def __post_init__(self):
        check_windows(1, self.window, self.overlap)
        if not 0.0 <= self.correction <= 1.0:
            raise ValueError(f"correction={self.correction}: expected 0 (off) .. 1 (full).")

    @classmethod
    def from_frames(cls, window_frames: int, overlap_frames: int, stride: int, correction: float = 1.0):
        """Windows given in video frames (a window of 4k+1, an overlap rounded down to a multiple of 4)."""
        if window_frames < 1 or (window_frames - 1) % stride:
            below = 1 + max(0, (window_frames - 1) // stride) * stride
            raise ValueError(
                f"window_frames={window_frames} must be {stride}k+1 (the length the model was trained at, e.g. "
                f"81 for Wan, 17 for Tiny World): use {below} or {below + stride}."
            )
        return cls(*latent_windows(window_frames, overlap_frames, stride), stride, correction)

    def count(self, frames: int) -> int:
        return window_count(frames, self.window, self.overlap)

    def join_frames(self, frames: int) -> list[int]:
        return join_frames(frames, self.window, self.overlap, self.stride)

    @property
    def opening_frames(self) -> int:
        return opening_frames(self.overlap, self.stride)

    def held_frame(self, frame: int, frames: int) -> int:
        """Where a frame meant for latent frame `frame` of a video of `frames` latent frames is held (a
        storyboard shot's image or key frame): the nearest latent frame its window makes between new frames of
        its own, neither the first it adds nor (of 3 or more) the last, so the window that reaches the held
        frame also moves on from it; ties go later. Frame 0 (the video's first), frames past the video's end
        and frames with no such latent frame within a window's new frames of them stay where they are."""
        if frame == 0 or frame >= frames:
            return frame
        starts = [0, *window_joins(frames, self.window, self.overlap), frames]
        edges = set(starts[1:-1])  # each later window's first new frame
        edges |= {end - 1 for first, end in itertools.pairwise(starts) if end - first >= 3}
        reach = self.window - self.overlap
        near = range(max(1, frame - reach), min(frames, frame + reach + 1))
        inner = [latent for latent in near if latent not in edges] or [frame]
        return min(inner, key=lambda latent: (abs(latent - frame), -latent))


def windows_entry(frames: int, window: int, overlap: int, stride: int, openings: torch.Tensor) -> dict:
    """What a LATENT carries under WINDOWS_KEY for its decode: the windows (in latent frames, and the VAE's
    temporal stride), their openings (raw, B×C×(count − 1)·overlap×h×w) and the latent length they belong to
    (a node that trims or joins latents keeps the key but changes the length: the windows no longer apply)."""
    return {
        "latent_frames": frames,
        "window": window,
        "overlap": overlap,
        "stride": stride,
        "openings": openings,
    }


def latent_windows_entry(latent: dict) -> dict | None:
    """The windows a LATENT names, if they still belong to its samples; else None. An entry for these
    samples that lacks what windows_entry writes is refused."""
    entry = latent.get(WINDOWS_KEY)
    samples = latent["samples"]
    if not isinstance(entry, dict) or entry.get("latent_frames") != samples.shape[2]:
        return None
    unusable = [key for key in ("window", "overlap", "stride") if not _whole_positive(entry.get(key))]
    if not isinstance(entry.get("openings"), torch.Tensor):
        unusable.append("openings")
    if unusable:
        raise ValueError(
            f"the latent's {WINDOWS_KEY!r} has no usable {', '.join(unusable)} (what Long Video writes there): "
            "connect Long Video's latent as it comes, or remove that key to decode the latent as one video."
        )
    count = window_count(samples.shape[2], entry["window"], entry["overlap"])
    expected = (*samples.shape[:2], (count - 1) * entry["overlap"], *samples.shape[3:])
    return entry if tuple(entry["openings"].shape) == expected else None  # else resized or batched anew


def _whole_positive(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def decode_long_video(
    latent: dict, decode_frames: FrameChunks, blend: int = DEFAULT_BLEND
) -> Iterator[torch.Tensor]:
    """A LATENT's IMAGE frames (chunks F×H×W×3 in 0..1), one batch item after the other, decoded as they are
    asked for by `decode_frames` (the VAE's, one latent frame at a time). A Long Video latent goes window by
    window: each later window's new latent frames after its opening, whose frames are left out, and the
    jump at each join spread over the `blend` frames after it. Any other latent is decoded as it is."""
    samples, entry = latent["samples"], latent_windows_entry(latent)
    for item in range(samples.shape[0]):
        video = samples[item : item + 1]
        if entry is None:
            yield from decode_frames(video)
            continue
        at = join_frames(video.shape[2], entry["window"], entry["overlap"], entry["stride"])
        openings = entry["openings"][item : item + 1]
        windows = _window_frames(video, openings, entry["window"], entry["overlap"], decode_frames)
        yield from spread_joins(windows, at, blend)


def _window_frames(
    video: torch.Tensor, openings: torch.Tensor, window: int, overlap: int, decode_frames: FrameChunks
) -> Iterator[torch.Tensor]:
    """One Long Video's frames, window by window (see decode_long_video)."""
    yield from decode_frames(video[:, :, :window])
    for index, start in enumerate(window_joins(video.shape[2], window, overlap)):
        opening = openings[:, :, index * overlap : (index + 1) * overlap]
        new = video[:, :, start : start + window - overlap]
        for position, frames in enumerate(decode_frames(torch.cat([opening.to(new), new], dim=2))):
            if position >= overlap:  # not the opening's frames (its latent frames: 1 frame, then stride each)
                yield frames


def decode_steps(latent: dict) -> int:
    """Latent frames `decode_long_video` passes through (a progress bar's total)."""
    samples, entry = latent["samples"], latent_windows_entry(latent)
    extra = 0 if entry is None else entry["openings"].shape[2]
    return samples.shape[0] * (samples.shape[2] + extra)


def match_mean(new: torch.Tensor, reference: torch.Tensor, amount: float | torch.Tensor) -> torch.Tensor:
    """Move the per-channel mean of `new` (B×C×T×H×W) `amount` of the way towards `reference`'s; `amount`
    may be one value or one per frame (T)."""
    amount = torch.as_tensor(amount, dtype=new.dtype).reshape(1, 1, -1, 1, 1)
    dims = (2, 3, 4)
    shift = reference.mean(dims, keepdim=True) - new.mean(dims, keepdim=True)
    return new + amount * shift


@dataclass(frozen=True)
class Codec:
    """The VAE's encode and decode as a long video uses them (with whatever progress and tiling the caller
    wants), and for Wan 2.1 I2V the CLIP features of a window's first frame (`image_features`: a video
    B×3×1×H×W in -1..1 -> B×I×E)."""

    encode: Encode
    decode: Decode
    image_features: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class LongVideoWindow:
    """One window as long_video_windows makes it."""

    opening: torch.Tensor | None  # the raw latent frames it opens with; None for the first window
    new: torch.Tensor  # its new raw latent frames, colour-corrected (B×C×T×H×W)
    decode: Decode = field(repr=False)
    _video: torch.Tensor | None = field(default=None, repr=False)

    @property
    def latent(self) -> torch.Tensor:
        return self.new if self.opening is None else torch.cat([self.opening.to(self.new), self.new], dim=2)

    def video(self) -> torch.Tensor:
        """The whole window decoded (its opening too), once: the next window's opening is cut from it, and
        `LongVideo.frames` writes the window's new frames from the same decode."""
        if self._video is None:
            self._video = self.decode(self.latent)
        return self._video

    def release(self) -> None:
        self._video = None


def long_video_windows(
    guider: Guider,
    sampling: Sampling,
    shape: tuple[int, ...],
    windows: Windows,
    codec: Codec,
    step_callback: Callable[[], None] | None = None,
    storyboard: Storyboard | None = None,
    images: dict[int, torch.Tensor] | None = None,
) -> Iterator[LongVideoWindow]:
    """The windows of a raw latent video of `shape` (B×C×T×H×W, T as long as wanted), each as it is made;
    window k uses the sampling's seed + k (window_seed: wrapping past 2**64 - 1 to 0). Each window after the
    first opens with the last frames of the one before, decoded (LongVideoWindow.video, which the caller may
    use too: it is decoded once) and encoded again. `images` (latent frame -> a video B×3×1×H×W in -1..1):
    under 0, the video's first frame, which the first window opens with; under a later latent frame, a frame
    held still over it (a storyboard shot's image), known to the window that makes it as its opening is (that
    window also sees the shot before, through its opening, so it is not colour-corrected). Known frames are
    pinned, or given through the image condition of an image-to-video model. With a `storyboard` (fitted to
    the video), each window is guided by the shots its latent frames see (Storyboard.window), and the guider's
    own prompt is not used."""
    batch, channels, frames, height, width = shape
    pins = dict(images or {})
    start = pins.pop(0, None)
    window = windows.window
    count = windows.count(frames)
    fmt, patch = guider.dit.latent_format, guider.dit.config.patch_size
    made = 0  # latent frames made so far
    previous = None  # the window before
    references = {}  # the colour correction's: each shot's first window's new frames (one shot: the first's)
    for index in range(count):
        opening = known = head = None  # the opening's latent; the window's known frames; their latent
        if previous is not None:
            known = previous.video()[:, :, -windows.opening_frames :]  # encoded as a clip's start
            opening = head = codec.encode(known).float().cpu()
            previous.release()  # the caller took its frames before asking for this window
        elif start is not None:
            known, head = start, codec.encode(start).float().cpu()  # the first frame, kept in the video
        opened = 0 if opening is None else opening.shape[2]
        new = min(window - opened, frames - made)
        latent = torch.zeros(batch, channels, opened + new, height, width)
        held = {opened + j - made: image for j, image in pins.items() if made <= j < made + new}
        mask = None
        if head is not None or held:
            mask = torch.ones(batch, 1, latent.shape[2], height, width)
        if head is not None:
            latent[:, :, : head.shape[2]] = head
            mask[:, :, : head.shape[2]] = 0.0
        for frame, image in held.items():
            latent[:, :, frame : frame + 1] = held_latent(image, windows.stride, codec.encode)
            mask[:, :, frame] = 0.0
        window_guider, shot = guider, 0
        if storyboard is not None:
            timeline = storyboard.window(made - opened, opened + new, windows.stride)
            seen = storyboard.seen(made - opened, opened + new, windows.stride)
            shot = seen[0] if len(seen) == 1 else None  # a window two shots share is not corrected
            several = timeline.contexts.shape[0] > 1
            positive = timeline.contexts[:1]
            window_guider = replace(guider, positive=positive, timeline=timeline if several else None)
        if guider.dit.config.concat_condition:  # known frames through the condition, not pinned
            condition = opening_condition(known, latent.shape[2], windows.stride, codec.encode, held)
            if guider.dit.config.image_dim:
                condition = replace(condition, features=codec.image_features(known[:, :, :1]))
            window_guider = replace(window_guider, image=condition)
        patches = SpacetimePatches.from_latent(latent, patch, fmt, mask)
        patches = denoise(
            window_guider, patches, sampling.reseeded(window_seed(sampling.seed, index)), step_callback
        )
        generated = patches.to_latent().float().cpu()[:, :, opened:]
        if shot is not None and shot not in references:
            references[shot] = generated
        elif shot is not None:
            ramp = torch.arange(generated.shape[2]) / generated.shape[2]  # 0 at the join
            generated = match_mean(generated, references[shot], windows.correction * ramp)
        made += generated.shape[2]
        previous = LongVideoWindow(opening, generated, codec.decode)
        yield previous


def held_latent(image: torch.Tensor, stride: int, encode: Encode) -> torch.Tensor:
    """A frame (video B×3×1×H×W in -1..1) held still over one latent frame inside a clip, encoded as known
    frames mid-clip are (placement.inside_clip: after a still lead-in, dropped again) -> B×C×1×h×w."""
    video = image.expand(-1, -1, 1 + (LEAD_IN_LATENT_FRAMES + 1) * stride, -1, -1)
    return inside_latent(encode(video)).float().cpu()


def key_frame(
    guider: Guider, sampling: Sampling, shape: tuple[int, ...], decode: Decode, tick: Callable[[], None]
) -> torch.Tensor:
    """The first frame (a video B×3×1×H×W in -1..1) of a clip of raw latent `shape` (B×C×T×H×W) that
    `guider` makes from noise: a storyboard shot's key frame, made from its prompt alone."""
    dit = guider.dit
    patches = SpacetimePatches.from_latent(torch.zeros(shape), dit.config.patch_size, dit.latent_format)
    latent = denoise(guider, patches, sampling, tick).to_latent().float().cpu()
    return decode(latent[:, :, :1])


def long_video_latent(made_windows: Iterable[LongVideoWindow]) -> tuple[torch.Tensor, torch.Tensor]:
    """The windows long_video_windows makes, gathered: the raw latent video (their new frames, end to end)
    and the openings of the windows after the first (B×C×(count − 1)·overlap×H×W), which decode_long_video
    needs."""
    news, openings = [], []
    for made in made_windows:
        news.append(made.new)
        if made.opening is not None:
            openings.append(made.opening)
    latent = torch.cat(news, dim=2)
    return latent, torch.cat(openings, dim=2) if openings else latent[:, :, :0]


def check_model(dit, start: bool, image_encoder: bool) -> None:
    """What Long Video runs: any model that takes known frames pinned, and image-to-video models from a
    `start` image (Wan 2.1 I2V with an image encoder for each window's first frame); not FLF2V."""
    config = dit.config
    if config.image_tokens:
        raise ValueError(
            f"Long Video does not run Wan 2.1 FLF2V ({config.name} reads a first and a last frame, and a "
            "window's last frame is what it makes): use Wan 2.2 I2V A14B or Wan 2.1 I2V."
        )
    if config.image_dim and not image_encoder:
        raise ValueError(
            f"{config.name} reads the CLIP features of each window's first frame: connect Long Video's "
            "image_encoder input (Image Encoder Loader with clip_vision_h.safetensors)."
        )
    if config.concat_condition and not start:
        raise ValueError(
            f"{config.name} is an image-to-video model: its long video starts from an image. Connect Long "
            "Video's image input (Load Image, or an image generator's output)."
        )


@dataclass(frozen=True)
class LongVideo:
    """A video longer than one window, as the Long Video node (`latent`) and `generate` (`frames`) make it:
    `frames` (4k+1) of height×width by `guider` and `sampling` in `windows`, through `vae`, from the `start`
    image if given; a storyboard's key frames (Storyboard.key_frames) are made before the first window."""

    guider: Guider
    sampling: Sampling
    vae: VideoVAE
    size: tuple[int, int, int]  # frames, height, width
    windows: Windows
    start: torch.Tensor | None = None  # the first frame, a video B×3×1×H×W in -1..1
    image_encoder: object | None = None  # Wan 2.1 I2V: the CLIP vision encoder
    storyboard: Storyboard | None = None  # timed prompts, instead of the guider's one
    # the known frames by latent frame: the first frame (0) and the storyboard's images (long_video_windows)
    images: dict[int, torch.Tensor] = field(init=False)
    # the storyboard's key frames to make: latent frame -> shot index (Storyboard.key_frames)
    key_frame_shots: dict[int, int] = field(init=False)

    def __post_init__(self):
        frames, height, width = self.size
        if self.storyboard is not None:
            object.__setattr__(self, "storyboard", self.storyboard.fitted(frames))
        images = self._shot_images()
        if self.start is not None:
            if 0 in images:
                raise ValueError(
                    f"storyboard line {self.storyboard.shots[0].line} starts the video from an image, and Long "
                    "Video's image input gives another: keep one of the two."
                )
            images[0] = self.start
        object.__setattr__(self, "start", images.get(0))
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "key_frame_shots", self._planned_key_frames())
        check_model(self.guider.dit, self.start is not None, self.image_encoder is not None)
        self.vae.latent_shape(frames, height, width)
        self.vae.check_size(1 + (self.windows.window - 1) * self.vae.temporal_stride, height, width)
        shape = self.shape
        self.guider.dit.check_latent(torch.zeros(1, shape[1], self.windows.window, shape[3], shape[4]))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.vae.latent_shape(*self.size)

    @property
    def count(self) -> int:
        return self.windows.count(self.shape[2])

    def latent(self, progress: Progress) -> dict:
        """The LATENT (raw samples, and the windows and their openings under WINDOWS_KEY for the decode). The
        progress bar counts each window's steps and each decode for the next window's opening (and the
        storyboard's key frames, made first)."""
        count, windows = self.count, self.windows
        work = self.sampling.steps * count + (count - 1) * windows.window + self._key_frame_work
        tick = progress("Long video", work)
        codec = Codec(self.vae.encode, lambda latent: self.vae.decode(latent, tick), self._image_features)
        made_windows = long_video_windows(
            self.guider,
            self.sampling,
            self.shape,
            windows,
            codec,
            tick,
            storyboard=self.storyboard,
            images={**self._key_frames(codec.decode, tick), **self.images},
        )
        latent, openings = long_video_latent(made_windows)
        entry = windows_entry(self.shape[2], windows.window, windows.overlap, windows.stride, openings)
        return {"samples": latent, WINDOWS_KEY: entry}

    def frames(self, progress: Progress, tile: int = 0, overlap: int = 0) -> FrameStream:
        """The video's frames as they are made, for combine_video: each window is decoded once (in spatial
        tiles of `tile` pixels overlapping by `overlap`, when set), for the next window's opening and for its
        own new frames; memory stays that of one window whatever the length, and the frames are those the
        LATENT of `latent` decodes to (decode_long_video)."""
        shape, count, windows, vae = self.shape, self.count, self.windows, self.vae
        decoded = shape[2] + (count - 1) * windows.overlap  # latent frames through the decoder
        work = self.sampling.steps * count + decoded + self._key_frame_work
        tick = progress(f"Long video, {count} windows", work)
        decode = partial(vae.decode, progress=tick, tile=tile, overlap=overlap)
        codec = Codec(vae.encode, decode, self._image_features)
        made_windows = long_video_windows(
            self.guider,
            self.sampling,
            shape,
            windows,
            codec,
            tick,
            storyboard=self.storyboard,
            images={**self._key_frames(decode, tick), **self.images},
        )

        def new_frames():  # the opening's frames are left out; a window's video is held until the next is made
            for made in made_windows:
                start = 0 if made.opening is None else windows.opening_frames
                for first in range(start, made.video().shape[2], windows.stride):
                    yield video_to_frames(made.video()[:, :, first : first + windows.stride])

        frames = spread_joins(new_frames(), windows.join_frames(shape[2]))
        return FrameStream(self.size[0], self.size[1], self.size[2], frames)

    def _planned_key_frames(self) -> dict[int, int]:
        """Storyboard.key_frames for this video; none for an image-to-video model, which makes no frame from
        a prompt alone (said on the console)."""
        if self.storyboard is None:
            return {}
        planned = self.storyboard.key_frames(self.windows, self.shape[2])
        if planned and self.guider.dit.config.concat_condition:
            log.info("%s makes no frame from a prompt alone: the storyboard's shots without an image get no key "
                     "frame (give them images).", self.guider.dit.config.name)  # fmt: skip
            return {}
        return planned

    @property
    def _key_frame_work(self) -> int:
        """The key frames' share of the progress bar: each one's steps and its decoded frame."""
        return len(self.key_frame_shots) * (self.sampling.steps + 1)

    def _key_frames(self, decode: Decode, tick: Callable[[], None]) -> dict[int, torch.Tensor]:
        """The storyboard's key frames by the latent frame each is held at: the first frame of one window
        made from the shot's prompt alone, with the video's seed and settings."""
        shape = (*self.shape[:2], min(self.windows.window, self.shape[2]), *self.shape[3:])
        made = {}
        for frame, index in self.key_frame_shots.items():
            guider = replace(self.guider, positive=self.storyboard.contexts[index : index + 1], timeline=None)
            made[frame] = key_frame(guider, self.sampling, shape, decode, tick)
        return made

    def _shot_images(self) -> dict[int, torch.Tensor]:
        """The storyboard's images (cropped to the video's size, as videos 1×3×1×H×W in -1..1) by the latent
        frame each is held at (Storyboard.image_frames; 0: the video's first frame)."""
        if self.storyboard is None:
            return {}
        frames, height, width = self.size
        stride, latent_frames = self.windows.stride, self.shape[2]
        images = {}
        for frame, index in self.storyboard.image_frames(self.windows, latent_frames).items():
            shot = self.storyboard.shots[index]
            if frame >= latent_frames:
                held = self.storyboard.image_frame(shot)
                raise ValueError(
                    f"storyboard line {shot.line} starts from an image, held from frame {held} (the end of its "
                    f"transition), too near the video's end ({frames} frames) to hold it for {stride} frames: "
                    "start the shot earlier, shorten the transition, or make the video longer."
                )
            name = f"storyboard line {shot.line}'s image"
            image = rgb_frames(self.storyboard.script.image(index), name)[:1]
            images[frame] = frames_to_video(fit_frames(image, width, height, "crop"))
        return images

    def _image_features(self, video: torch.Tensor) -> torch.Tensor:
        """CLIP features (B×I×E) of a video's frames B×3×1×H×W in -1..1, squeezed to the encoder's size as
        Wan reads them."""
        images = video_to_frames(video)
        with host.on_compute_device(self.image_encoder) as device:
            features = encode_images(self.image_encoder, images, crop=False, device=device)
        return features.penultimate_hidden_states.cpu()
