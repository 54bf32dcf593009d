"""Storyboards: a long video laid out as timed prompts, one shot per line (Sora's storyboard).

    0 | a red circle moving left on a blue background
    4 | a green square moving up on a blue background
    8-16 | a yellow star turning on a blue background

A line is `START[-END] | prompt`, or `START[-END] | prompt | image: REF` for a shot that starts from an
image (REF: on the node, the image's number in its `images` input, from 1; on the command line, a file,
relative to the storyboard's folder). Times are seconds (`4`, `4.5`, `4s`, `1:30`) or frames (`64f`); END
defaults to the next line's START, and the last line's to the video's end. Blank lines and lines starting
with `#` are skipped. The shots must cover the video from frame 0 to its end, with no gap or overlap.

How Long Video follows it: the DiT's velocity for each latent frame is the weighted mean of its velocity
under each shot's prompt (the prompts of one window run as one batch, with the negative prompt once), the
weight moving from one shot to the next linearly over `transition` frames centred on the change. Guidance
is linear, so this is classifier-free guidance towards a prompt that changes along the window; a window
inside one shot runs exactly as a single-prompt window does (one prompt, one pass). The blend of
predictions, not of text embeddings, is Gen-L-Video's (Wang et al. 2023): each pass sees the whole window
under one prompt the model knows, and the frames between move from one to the other in one denoising.

A shot's image is a known frame of the video, as Image to Video's: the video's first frame for a shot at 0,
else held still over the latent frame nearest the end of the shot's transition (its start + transition / 2:
`image_frame`, `image_latent_frame`) that its window makes between new frames of its own
(Windows.held_frame), which that window pins (or gives an image-to-video model through its condition). The
prompts blend over the transition as for any change, and the frames before the image have the whole
transition to move from the last shot into it (why not at the shot's start, nor at a window's first or last
new frame, which the window before never sees or the window after starts from still:
docs/benchmarks.md#storyboards-with-tiny-world).

Key frames (Script.key_frames; on in the node and on the command line): a later shot without an image gets
one made for it, the first frame of a window of its prompt alone (same seed and settings), held where its
image would be. Without one, a shot continues the scene it is given, and Tiny World never makes an object
appear in a scene that has none (no training clip shows one entering); with one, each shot shows its own
subject as a video of its prompt alone does (docs/benchmarks.md#storyboards-with-tiny-world). The cost is
one window's sampling a shot.

Axes: K shots a window sees, T latent frames, S text tokens, E text width.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..samplers.guidance import SHOT_KEY, Timeline

if TYPE_CHECKING:
    from .long_video import Windows

IMAGE_FIELD = re.compile(
    r"^(?:(?P<prompt>.*?)\s*\|\s*)?image\s*:\s*(?P<image>.*?)$", re.IGNORECASE | re.DOTALL
)
TIME = re.compile(r"^(?:(?P<minutes>\d+):(?P<seconds>\d+(?:\.\d+)?)|(?P<value>\d+(?:\.\d+)?)(?P<unit>s|f)?)$")
DEFAULT_TRANSITION = 1.0  # seconds over which one shot's prompt gives way to the next
MAX_TRANSITION = 30.0  # seconds: the node's widget's maximum
MAX_SHOTS = 256  # a storyboard's prompts are encoded in one batch
MAX_STORYBOARD_BYTES = 1 << 20  # a storyboard file: a short text


@dataclass(frozen=True)
class Shot:
    """One line of a storyboard: its prompt, the video frames [start, end) it covers (end None: up to the
    next shot, or the video's end), where it was written (`line`, 1-based) for messages, and the image it
    starts from as written (`image`: a number or a file name; None: no image)."""

    start: int
    end: int | None
    prompt: str
    line: int
    image: str | None = None

    def options(self, transition: float, fps: float | None) -> dict:
        """What a timed CONDITIONING entry carries under SHOT_KEY (transition in frames)."""
        return {
            "start": self.start, "end": self.end, "line": self.line, "transition": transition, "fps": fps,
            "image_ref": self.image,
        }  # fmt: skip

    @classmethod
    def from_options(cls, options, prompt: str = "") -> Shot:
        try:
            return cls(options["start"], options["end"], prompt, options["line"], options.get("image_ref"))
        except (KeyError, TypeError):
            raise ValueError(
                f"a storyboard shot's timing {options!r} lacks start, end or line: connect Storyboard "
                "(Spacetime)'s positive output as it comes."
            ) from None


@dataclass(frozen=True)
class Script:
    """A storyboard as written: its shots (parse_storyboard), the transition between them in frames, the
    frame rate its times were read at (for messages in seconds), the images the shots start from (one
    per shot, None for a shot without; each an IMAGE 1×H×W×C in 0..1; empty: no shot has one), and whether
    each later shot without an image gets a key frame of its own prompt instead (`key_frames`)."""

    shots: tuple[Shot, ...]
    transition: float = 0.0
    fps: float | None = None
    images: tuple[torch.Tensor | None, ...] = ()
    key_frames: bool = False

    def __post_init__(self):
        if not (math.isfinite(self.transition) and self.transition >= 0):
            raise ValueError(f"transition={self.transition!r} frames: expected 0 or more.")
        if self.images and len(self.images) != len(self.shots):
            raise ValueError(
                f"{len(self.images)} shot images for {len(self.shots)} shots: expected one per shot."
            )
        for shot, image in zip(self.shots, self.images, strict=False):
            if (shot.image is None) != (image is None):
                raise ValueError(
                    f"storyboard line {shot.line}: its image {shot.image!r} was not found "
                    f"({'none given' if image is None else 'given to a shot that names none'})."
                )

    def image(self, index: int) -> torch.Tensor | None:
        """Shot `index`'s image (None: it has none)."""
        return self.images[index] if self.images else None


def parse_time(text: str, fps: float, line: int) -> int:
    """A time as written in a storyboard -> video frames (seconds are rounded to the nearest frame)."""
    match = TIME.match(text.strip().lower())
    if match is None:
        raise ValueError(
            f"storyboard line {line}: cannot read the time {text.strip()!r}: write seconds (4, 4.5, 4s, 1:30) "
            "or frames (64f)."
        )
    if match["unit"] == "f":
        if "." in match["value"]:
            raise ValueError(f"storyboard line {line}: {text.strip()!r} is not a whole number of frames.")
        return int(match["value"])
    seconds = (
        float(match["value"]) if match["value"] else 60 * int(match["minutes"]) + float(match["seconds"])
    )
    return round(seconds * fps)


def read_storyboard(path: Path, name: str) -> str:
    """The text of a storyboard file (`name`: how the user gave it, for the errors): UTF-8, at most
    MAX_STORYBOARD_BYTES."""
    if not path.is_file():
        raise FileNotFoundError(f"{name} {path}: no such file.")
    if path.stat().st_size > MAX_STORYBOARD_BYTES:
        raise ValueError(
            f"{name} {path} is {path.stat().st_size} bytes; a storyboard is a short text file (at most "
            f"{MAX_STORYBOARD_BYTES // 1024} KiB)."
        )
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{name} {path} is not UTF-8 text: save it as UTF-8.") from None


def parse_storyboard(text: str, fps: float) -> list[Shot]:
    """The shots of a storyboard text (see the module's docstring), in order, each checked against the next:
    the first starts at 0, and each ends where the next starts. The last may leave its end open."""
    if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps={fps!r}: expected a positive number of frames per second (Wan: 16).")
    shots = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        times, bar, prompt = line.partition("|")
        prompt, image = split_image(prompt.strip(), number)
        if not bar or not prompt:
            raise ValueError(
                f"storyboard line {number}: {line[:80]!r} has no prompt: write `START[-END] | prompt`, e.g. "
                "`0-4 | a red circle moving left` (a shot from an image: `4 | it rolls away | image: 1`)."
            )
        start_text, dash, end_text = times.strip().partition("-")
        start = parse_time(start_text, fps, number)
        end = parse_time(end_text, fps, number) if dash else None
        if end is not None and end <= start:
            raise ValueError(
                f"storyboard line {number}: the shot ends ({end_text.strip()}) before it starts."
            )
        shots.append(Shot(start, end, prompt, number, image))
    if not shots:
        raise ValueError("the storyboard has no shots: write one per line, `START[-END] | prompt`.")
    if len(shots) > MAX_SHOTS:
        raise ValueError(
            f"the storyboard has {len(shots)} shots; at most {MAX_SHOTS} are taken: split it into several videos."
        )
    if shots[0].start != 0:
        raise ValueError(
            f"storyboard line {shots[0].line}: the first shot starts at frame {shots[0].start}; the video starts "
            "at 0: start the first shot at 0."
        )
    for shot, after in itertools.pairwise(shots):
        if after.start <= shot.start:
            raise ValueError(
                f"storyboard line {after.line}: starts at frame {after.start}, not after line {shot.line}'s start "
                f"(frame {shot.start}): write the shots in the order they play."
            )
        if shot.end is not None and shot.end != after.start:
            kind = "overlaps" if shot.end > after.start else "leaves a gap before"
            raise ValueError(
                f"storyboard line {shot.line}: ends at frame {shot.end}, which {kind} line {after.line} (starting "
                f"at frame {after.start}): end it where the next shot starts, or leave its end out."
            )
    return [replace(shot, end=after.start) for shot, after in itertools.pairwise(shots)] + [shots[-1]]


def split_image(text: str, line: int) -> tuple[str, str | None]:
    """A line's text after its times -> (prompt, the image it names or None): `prompt | image: REF`. A `|`
    inside a prompt is kept when no `image:` follows it."""
    match = IMAGE_FIELD.match(text)
    if match is None:
        return text, None
    if not match["image"]:
        raise ValueError(
            f"storyboard line {line}: `image:` names no image: write its number on the node (image: 1), or a "
            "file on the command line (image: fox.png)."
        )
    return match["prompt"] or "", match["image"]


def find_images(
    shots: Sequence[Shot], find: Callable[[Shot], torch.Tensor]
) -> tuple[torch.Tensor | None, ...]:
    """Each shot's image, `find(shot)` for a shot that names one, None for the others; () when none does."""
    if all(shot.image is None for shot in shots):
        return ()
    return tuple(None if shot.image is None else find(shot) for shot in shots)


def shot_images(shots: Sequence[Shot], images: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Each shot's image from an IMAGE batch (the Storyboard node's `images`), as `image: N` names it (from
    1); () when no shot names one."""

    def find(shot: Shot) -> torch.Tensor:
        count = 0 if images is None else len(images)
        if not shot.image.isdigit() or not 1 <= int(shot.image) <= count:
            given = "no images are connected" if images is None else f"images holds {count}"
            raise ValueError(
                f"storyboard line {shot.line}: image {shot.image!r}: {given}. Name an image by its number in the "
                "images input, from 1 (connect Load Image, or a batch of images, to images)."
            )
        return images[int(shot.image) - 1 :][:1]

    return find_images(shots, find)


def read_shot_images(shots: Sequence[Shot], folder: Path) -> tuple[torch.Tensor | None, ...]:
    """Each shot's image from the file `image: FILE` names (relative to `folder`, the storyboard's), as an
    IMAGE 1×H×W×C in 0..1 (turned upright by its EXIF orientation, as ComfyUI's Load Image does); () when no
    shot names one."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    def find(shot: Shot) -> torch.Tensor:
        path = folder / Path(shot.image).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"storyboard line {shot.line}: image {shot.image!r}: no such file {path} (a file name is read from "
                "the storyboard's folder)."
            )
        try:
            with Image.open(path) as opened:
                picture = ImageOps.exif_transpose(opened)
                picture = picture.convert("RGBA" if "A" in picture.getbands() else "RGB")
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
            raise ValueError(
                f"storyboard line {shot.line}: cannot read the image {path} ({error}): give a PNG, JPEG or WebP."
            ) from None
        pixels = torch.frombuffer(bytearray(picture.tobytes()), dtype=torch.uint8)
        return pixels.view(1, picture.height, picture.width, -1).float() / 255

    return find_images(shots, find)


def rewrite_storyboard(text: str, rewrite: Callable[[str], str]) -> str:
    """The storyboard with each shot's prompt replaced by `rewrite(prompt)` (written on one line), its times,
    comments and blank lines kept as written. The storyboard is checked first (parse_storyboard)."""
    parse_storyboard(text, fps=16.0)  # its errors name the line; the times' values do not matter here
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            times, _, rest = raw.partition("|")
            prompt, image = split_image(rest.strip(), 0)
            raw = f"{times.rstrip()} | {' '.join(rewrite(prompt).split())}"
            raw += f" | image: {image}" if image is not None else ""
        lines.append(raw)
    return "\n".join(lines)


def storyboard_frames(shots: Sequence[Shot], stride: int = 4) -> int | None:
    """The video length a storyboard asks for: its last shot's end, rounded up to stride·k + 1 frames (None
    when the last shot's end is left open)."""
    end = shots[-1].end
    return None if end is None else 1 + stride * -(-(end - 1) // stride)


def fit_shots(shots: Sequence[Shot], frames: int, fps: float | None = None) -> list[Shot]:
    """The shots of a video of `frames` frames: the last one's open end becomes the video's end. A shot that
    starts at or past the end, or a last shot that ends before it (up to the 4k+1 rounding) is refused."""

    def when(frame: int) -> str:
        return f"frame {frame}" + (f" ({frame / fps:g} s at {fps:g} fps)" if fps else "")

    for shot in shots:
        if shot.start >= frames:
            raise ValueError(
                f"storyboard line {shot.line} starts at {when(shot.start)}, past the video's {frames} frames: "
                "make the video longer, or move the shot earlier."
            )
    last = shots[-1]
    if last.end is not None and last.end > frames:
        raise ValueError(
            f"storyboard line {last.line} ends at {when(last.end)}, past the video's {frames} frames: make the "
            "video longer, or end the shot earlier."
        )
    if last.end is not None and frames - last.end >= 4:
        raise ValueError(
            f"the storyboard ends at {when(last.end)} (line {last.line}) but the video runs {frames} frames: "
            "leave the last shot's end out, or set the video's length to the storyboard's."
        )
    return [*shots[:-1], replace(last, end=frames)]


def image_latent_frame(start: int, stride: int) -> int:
    """The latent frame an image held from video frame `start` is in: 0 (the video's first frame) for 0, else
    the latent frame whose `stride` frames lie nearest `start` and the ones after it (latent frame j ≥ 1
    holds frames stride·(j − 1) + 1 .. stride·j)."""
    return 0 if start == 0 else math.floor((start + stride - 1) / stride + 0.5)


def latent_frame_times(first: int, count: int, stride: int) -> torch.Tensor:
    """The video time (in frames) of latent frames first .. first + count - 1: latent frame 0 is frame 0,
    each later one the middle of its group of `stride` frames."""
    index = torch.arange(first, first + count, dtype=torch.float64)
    return torch.where(index == 0, 0.0, stride * index - (stride - 1) / 2)


def shot_weights(starts: Sequence[int], times: torch.Tensor, transition: float) -> torch.Tensor:
    """Each shot's weight at each time (K×T, summing to 1 per time), for shots starting at `starts` (the
    first at 0): at each change the weight moves from one shot to the next linearly over `transition`
    frames centred on it (0: at once)."""
    rises = []
    for change in starts[1:]:
        if transition > 0:
            rises.append(((times - change) / transition + 0.5).clamp(0.0, 1.0))
        else:
            rises.append((times >= change).to(times.dtype))
    ones, zeros = torch.ones_like(times), torch.zeros_like(times)
    rises = [ones, *rises, zeros]  # shot k's weight: rise into it - rise into the next
    return torch.stack([rises[k] - rises[k + 1] for k in range(len(starts))])


@dataclass(frozen=True)
class Storyboard:
    """A Script with its prompts encoded (K×S×E, one per shot)."""

    script: Script
    contexts: torch.Tensor

    @property
    def shots(self) -> tuple[Shot, ...]:
        return self.script.shots

    @property
    def transition(self) -> float:
        return self.script.transition

    @property
    def fps(self) -> float | None:
        return self.script.fps

    def __post_init__(self):
        if self.contexts.ndim != 3 or self.contexts.shape[0] != len(self.shots):
            raise ValueError(
                f"{len(self.shots)} shots with contexts of shape {tuple(self.contexts.shape)}: expected one "
                "context per shot (K×S×E)."
            )

    @classmethod
    def from_conditioning(cls, conditioning) -> Storyboard | None:
        """The storyboard a timed CONDITIONING holds (Storyboard (Spacetime)'s output), or None for any other
        CONDITIONING."""
        if not isinstance(conditioning, list) or not conditioning:
            return None
        entries = [entry for entry in conditioning if isinstance(entry, list | tuple) and len(entry) > 1]
        timed = [entry for entry in entries if isinstance(entry[1], dict) and SHOT_KEY in entry[1]]
        if not timed:
            return None
        if len(timed) != len(conditioning):
            raise ValueError(
                "this CONDITIONING mixes a storyboard's shots with other prompts (Conditioning Combine?): "
                "connect Storyboard (Spacetime)'s positive output as it comes."
            )
        shots = tuple(Shot.from_options(entry[1][SHOT_KEY]) for entry in timed)
        images = tuple(entry[1][SHOT_KEY].get("image") for entry in timed)
        length = max(entry[0].shape[1] for entry in timed)
        contexts = torch.cat(
            [torch.nn.functional.pad(e[0], (0, 0, 0, length - e[0].shape[1])) for e in timed]
        )
        options = timed[0][1][SHOT_KEY]
        key_frames = bool(options.get("key_frames", False))
        script = Script(shots, float(options["transition"]), options.get("fps"), images, key_frames)
        return cls(script, contexts)

    def conditioning(self) -> list:
        """As a timed CONDITIONING: one entry per shot, its timing and its image (None: none) under SHOT_KEY."""
        return [
            [
                context[None],
                {
                    "pooled_output": None,
                    SHOT_KEY: {
                        **shot.options(self.transition, self.fps),
                        "image": self.script.image(index),
                        "key_frames": self.script.key_frames,
                    },
                },
            ]
            for index, (shot, context) in enumerate(zip(self.shots, self.contexts, strict=True))
        ]

    def image_frame(self, shot: Shot) -> int:
        """The video frame a shot's image is meant for: 0 for a shot at 0, else the end of its transition."""
        return 0 if shot.start == 0 else shot.start + round(self.transition / 2)

    def held_latent_frame(self, shot: Shot, windows: Windows, frames: int) -> int:
        """The latent frame a shot's image (or key frame) is held at in a video of `frames` latent frames made
        in `windows`: the one nearest the end of its transition (image_frame, image_latent_frame) that a
        window makes between new frames of its own (Windows.held_frame)."""
        return windows.held_frame(image_latent_frame(self.image_frame(shot), windows.stride), frames)

    def image_frames(self, windows: Windows, frames: int) -> dict[int, int]:
        """The latent frame each shot's image is held at -> the shot's index (held_latent_frame)."""
        found = {}
        for index, shot in enumerate(self.shots):
            if shot.image is None:
                continue
            frame = self.held_latent_frame(shot, windows, frames)
            if frame in found:
                raise ValueError(
                    f"storyboard lines {self.shots[found[frame]].line} and {shot.line} would hold their images "
                    f"over the same {windows.stride} frames: start shots with images further apart (at least "
                    f"{windows.stride * (windows.window - windows.overlap)} frames, one window's new frames)."
                )
            found[frame] = index
        return found

    def key_frames(self, windows: Windows, frames: int) -> dict[int, int]:
        """With Script.key_frames, where each later shot without an image gets its key frame: the latent frame
        its image would be held at (held_latent_frame) -> the shot's index; a frame past the video's end or
        taken by an image or an earlier key frame gets none."""
        if not self.script.key_frames:
            return {}
        taken, found = self.image_frames(windows, frames), {}
        for index, shot in enumerate(self.shots[1:], start=1):
            frame = self.held_latent_frame(shot, windows, frames)
            if shot.image is None and frame < frames and frame not in taken and frame not in found:
                found[frame] = index
        return found

    def fitted(self, frames: int) -> Storyboard:
        """The storyboard of a video of `frames` frames (fit_shots)."""
        shots = tuple(fit_shots(self.shots, frames, self.fps))
        return Storyboard(replace(self.script, shots=shots), self.contexts)

    def window(self, first: int, count: int, stride: int) -> Timeline:
        """The shots latent frames first .. first + count - 1 see (those with any weight there), in order."""
        weights = self._weights(first, count, stride)
        seen = weights.amax(dim=1) > 0
        return Timeline(self.contexts[seen], weights[seen])

    def seen(self, first: int, count: int, stride: int) -> list[int]:
        """The indices of the shots those latent frames see (Storyboard.window's)."""
        weights = self._weights(first, count, stride)
        return [index for index, weight in enumerate(weights.amax(dim=1)) if weight > 0]

    def _weights(self, first: int, count: int, stride: int) -> torch.Tensor:
        times = latent_frame_times(first, count, stride)
        return shot_weights([shot.start for shot in self.shots], times, self.transition)
