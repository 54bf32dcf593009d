"""Frames from a video or animation file, for the detector: PyAV for video containers, Pillow for GIF
and WebP (ffmpeg does not decode animated WebP), PNG files from a folder (a PNG sequence)."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageSequence

from .watermark import SEGMENT

MAX_FRAMES = 16 * SEGMENT  # the mark is judged on the first 8 s at 16 fps: more adds little


def read_frames(path: str | Path, max_frames: int = MAX_FRAMES) -> torch.Tensor:
    """IMAGE frames T×H×W×3 in 0..1 from the start of `path` (at most `max_frames`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: give a video, GIF, WebP or a folder of PNG frames.")
    if path.is_dir():
        files = sorted(path.glob("*.png"))[:max_frames]
        if not files:
            raise ValueError(
                f"{path} is a folder without PNG frames; give a video file or a PNG sequence folder."
            )
        frames = [np.asarray(Image.open(file).convert("RGB")) for file in files]
        sizes = [f"{frame.shape[1]}x{frame.shape[0]}" for frame in frames]
        if len(set(sizes)) > 1:
            odd = next(index for index, size in enumerate(sizes) if size != sizes[0])
            raise ValueError(
                f"{path} holds PNG files of different sizes ({files[0].name} is {sizes[0]}, "
                f"{files[odd].name} is {sizes[odd]}): a PNG sequence is one video's frames, all of one "
                "size; give the folder of a single sequence."
            )
    elif path.suffix.lower() in (".gif", ".webp", ".png"):
        with Image.open(path) as image:
            frames, durations = [], []
            for frame in islice(ImageSequence.Iterator(image), max_frames):
                frames.append(np.asarray(frame.convert("RGB")))
                durations.append(frame.info.get("duration") or 0)
        frames = expand_held_frames(frames, durations)[:max_frames]
    else:
        frames = _video_frames(path, max_frames)
    if not frames:
        raise ValueError(f"{path} holds no frames.")
    return torch.from_numpy(np.stack(frames)).float() / 255.0


def expand_held_frames(frames: list[np.ndarray], durations: list[float]) -> list[np.ndarray]:
    """Animations store a run of identical frames as one frame shown longer (Pillow's GIF and WebP
    writers merge them). Repeat each frame for as many frame times as it is shown, so frame indices
    match the video's again. The frame time is the one, near the shortest duration, that puts every
    frame's start closest to a whole number of frames (GIF rounds delays to hundredths of a second,
    so 16 fps is shown as 60, 60, 70, 60, ... ms)."""
    if not frames or min(durations, default=0) <= 0:
        return frames
    shortest = min(durations)
    starts = np.cumsum([0.0, *durations])
    guesses = np.linspace(0.9 * shortest, 1.25 * shortest, 701)
    misfit = [float(np.mean((starts / b - np.round(starts / b)) ** 2)) for b in guesses]
    base = float(guesses[int(np.argmin(misfit))])
    expanded, start = [], 0.0
    for frame, duration in zip(frames, durations, strict=True):
        repeats = max(1, round((start + duration) / base) - round(start / base))
        expanded += [frame] * repeats
        start += duration
    return expanded


def _video_frames(path: Path, max_frames: int) -> list[np.ndarray]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream.")
            frames = []
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == max_frames:
                    break
            return frames
    except av.error.FFmpegError as error:
        raise ValueError(f"{path} could not be read as a video ({error}).") from None
