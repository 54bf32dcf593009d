"""Frames from a video or animation file, for the detector and the evaluator: PyAV for video containers,
Pillow for GIF and WebP (ffmpeg does not decode animated WebP) and single images, and the images of a
folder in name order (a PNG sequence).

A small file can describe a huge video (a solid 12000×12000 PNG is a few hundred KB; an animated WebP can
show a frame for hours), so reading is bounded before anything is decoded: a frame's size is checked
from its header, frames are read one at a time from the start and only as many as asked for, a frame
shown for longer is repeated only up to that count, and the reader keeps either frames scaled down to a
pixel budget (the detector's) or at most a given number of pixels in all (the evaluator's). Both limits
on what is decoded at full size can be raised through the environment.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from itertools import islice, pairwise
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageSequence

from .watermark import SEGMENT

MAX_FRAMES = 16 * SEGMENT  # the mark is judged on the first 8 s at 16 fps: more adds little
# The detector's frames are scaled down to this many pixels (16:9 at 483x271): the mark lies below 16 cycles
# per side, and the detector resamples a side to 64 pixels anyway.
DETECT_PIXELS = 2**17
# Limits on what is decoded at full size, each raised by its environment variable: one frame (8192x8192;
# 8K UHD is 33 M), and all the frames the evaluator keeps, where a frame under 64x64 counts as 64x64 (so
# that the count of frames is bounded too).
FRAME_PIXELS_ENV, MAX_FRAME_PIXELS = "SPACETIME_MAX_FRAME_PIXELS", 8192 * 8192
VIDEO_PIXELS_ENV, MAX_VIDEO_PIXELS = "SPACETIME_MAX_VIDEO_PIXELS", 2**28
MIN_FRAME_PIXELS = 64 * 64
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # read by Pillow, alone or as a folder's frames


def pixel_limit(variable: str, default: int) -> int:
    """A limit from the environment, or its default."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) == 0:
        raise ValueError(f"{variable}={text!r}: give a number of pixels above 0 (the default is {default}).")
    return int(text)


def read_frames(path: str | Path, max_frames: int = MAX_FRAMES) -> torch.Tensor:
    """IMAGE frames T×H×W×3 in 0..1 from the start of `path` (at most `max_frames`), each scaled down to at
    most DETECT_PIXELS pixels, for the detector."""
    frames = list(iter_frames(path, max_frames, DETECT_PIXELS))
    if not frames:
        raise ValueError(f"{path} holds no frames.")
    return torch.from_numpy(np.stack(frames)).float().div_(255.0)


def read_video(path: str | Path) -> np.ndarray:
    """uint8 frames T×H×W×3 of the whole of `path` at its own size, for the evaluator: refused once they
    pass $SPACETIME_MAX_VIDEO_PIXELS pixels in all (frames under 64×64 count as 64×64)."""
    limit = pixel_limit(VIDEO_PIXELS_ENV, MAX_VIDEO_PIXELS)
    frames, total = [], 0
    for frame in iter_frames(path, limit // MIN_FRAME_PIXELS + 1):
        total += max(MIN_FRAME_PIXELS, frame.shape[0] * frame.shape[1])
        if total > limit:
            raise ValueError(
                f"{path} holds more than {limit} pixels in its first {len(frames) + 1} frames of "
                f"{frame.shape[1]}x{frame.shape[0]} (frames under 64x64 count as 64x64), more than is read "
                f"at full size: cut or scale it down, or set {VIDEO_PIXELS_ENV} to a larger number of pixels."
            )
        frames.append(frame)
    if not frames:
        raise ValueError(f"{path} holds no frames.")
    return np.stack(frames)


def iter_frames(path: str | Path, count: int, pixels: int | None = None) -> Iterator[np.ndarray]:
    """uint8 RGB frames H×W×3 from the start of `path`, at most `count`, all of one size: each checked
    against $SPACETIME_MAX_FRAME_PIXELS before it is decoded, and scaled down to at most `pixels` pixels
    when given (the aspect ratio kept)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: give a video, GIF, WebP or a folder of PNG frames.")
    limit = pixel_limit(FRAME_PIXELS_ENV, MAX_FRAME_PIXELS)
    if path.is_dir():
        files = sorted(file for file in path.iterdir() if file.suffix.lower() in IMAGE_SUFFIXES)[:count]
        if not files:
            raise ValueError(
                f"{path} is a folder without PNG (or JPEG, WebP) frames; give a video file or a PNG sequence "
                "folder."
            )
        first = None
        for file in files:
            with _open_image(file, limit) as image:
                if first is None:
                    first, size = image.size, _fit(image.size, pixels)
                elif image.size != first:
                    raise ValueError(
                        f"{path} holds images of different sizes ({files[0].name} is {_size(first)}, "
                        f"{file.name} is {_size(image.size)}): a PNG sequence is one video's frames, all "
                        "of one size; give the folder of a single sequence."
                    )
                yield _rgb(file, image, size)
    elif path.suffix.lower() in (".gif", *IMAGE_SUFFIXES):
        with _open_image(path, limit) as image:
            size = _fit(image.size, pixels)
            durations = [_duration(path, frame) for frame in islice(ImageSequence.Iterator(image), count)]
            repeats = held_repeats(durations, count)
            for frame, times in zip(ImageSequence.Iterator(image), repeats, strict=False):  # one at a time
                rgb = _rgb(path, frame, size)
                for _ in range(times):
                    yield rgb
    else:
        yield from _video_frames(path, count, pixels, limit)


def held_repeats(durations: list[float], count: int) -> list[int]:
    """How many times to repeat each frame of an animation, so that frame indices match the video's again:
    animations store a run of identical frames as one frame shown longer (Pillow's GIF and WebP writers
    merge them). Each frame is repeated for as many frame times as it is shown, up to `count` frames in
    all (one frame may be shown for hours). The frame time is the one, near the shortest duration, that
    puts every frame's start closest to a whole number of frames (GIF rounds delays to hundredths of a
    second, so 16 fps is shown as 60, 60, 70, 60, ... ms)."""
    if min(durations, default=0) <= 0:
        return [1] * min(len(durations), count)
    shortest = min(durations)
    starts = np.cumsum([0.0, *durations])
    guesses = np.linspace(0.9 * shortest, 1.25 * shortest, 701)
    misfit = [float(np.mean((starts / b - np.round(starts / b)) ** 2)) for b in guesses]
    base = float(guesses[int(np.argmin(misfit))])
    repeats = []
    for start, end in pairwise(starts):
        times = min(max(1, round(end / base) - round(start / base)), count - sum(repeats))
        if times == 0:
            break
        repeats.append(times)
    return repeats


def _fit(size: tuple[int, int], pixels: int | None) -> tuple[int, int]:
    """`size` (width, height) scaled down to at most `pixels` pixels, the aspect ratio kept."""
    width, height = size
    if pixels is None or width * height <= pixels:
        return size
    scale = math.sqrt(pixels / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _too_large(path: Path, size: tuple[int, int], limit: int) -> ValueError:
    return ValueError(
        f"{path} has frames of {_size(size)} pixels ({size[0] * size[1]}), more than the {limit} a frame "
        f"may have to be read (8192x8192): scale it down, or set {FRAME_PIXELS_ENV} to a larger number of "
        "pixels to read it anyway."
    )


def _open_image(path: Path, limit: int) -> Image.Image:
    """Open an image (its header only) and check its size before anything is decoded."""
    try:
        with warnings.catch_warnings():  # the size is checked here, against the pack's own limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"{path} could not be read as an image ({error}).") from None
    if image.size[0] * image.size[1] > limit:
        image.close()
        raise _too_large(path, image.size, limit)
    return image


def _duration(path: Path, frame: Image.Image) -> float:
    """How long an animation's frame is shown, in ms (0 when unknown); WebP says so once it is decoded."""
    try:
        frame.load()
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} could not be decoded ({error}).") from None
    return frame.info.get("duration") or 0


def _rgb(path: Path, image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """The frame decoded as RGB, scaled to `size`, with a damaged file named."""
    try:
        rgb = image.convert("RGB")
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} could not be decoded ({error}).") from None
    return np.asarray(rgb if rgb.size == size else rgb.resize(size, Image.Resampling.BOX))


def _video_frames(path: Path, count: int, pixels: int | None, limit: int) -> Iterator[np.ndarray]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream.")
            stream = container.streams.video[0]
            declared = (stream.codec_context.width, stream.codec_context.height)
            if declared[0] * declared[1] > limit:
                raise _too_large(path, declared, limit)
            size = None
            for frame in islice(container.decode(stream), count):
                if frame.width * frame.height > limit:
                    raise _too_large(path, (frame.width, frame.height), limit)
                size = size or _fit((frame.width, frame.height), pixels)
                yield frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="AREA")
    except av.error.FFmpegError as error:
        raise ValueError(f"{path} could not be read as a video ({error}).") from None
