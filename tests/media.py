"""Decoding written media back and measuring it (shared by the tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import Interpolation
from PIL import Image

PACK_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Decoded:
    frames: np.ndarray  # T×H×W×3 uint8 RGB
    codec: str
    pix_fmt: str
    frame_rate: float | None  # frames / duration; None for PNG frames, which carry no rate
    metadata: dict[str, str] = field(default_factory=dict)
    loop: int | None = None


def _rate_from_pts(timestamps: list[float], count: int, last_duration: float) -> float:
    duration = timestamps[-1] - timestamps[0] + last_duration
    return count / duration


def decode(path: Path) -> Decoded:
    """Decode a written file (or PNG-sequence folder) back to RGB frames with PyAV.

    Animated WebP goes through Pillow (libwebp): FFmpeg's WebP decoder reads no animated files.
    """
    path = Path(path)
    if path.suffix == ".webp":
        image = Image.open(path)
        frames, durations = [], []
        for index in range(image.n_frames):
            image.seek(index)
            frames.append(np.asarray(image.convert("RGB")))
            durations.append(image.info["duration"])
        metadata = {}
        for value in image.getexif().values():
            if isinstance(value, str) and ":" in value:
                key, _, rest = value.partition(":")
                metadata[key] = rest
        rate = 1000 * len(frames) / sum(durations) if sum(durations) else None  # a still has no rate
        return Decoded(np.stack(frames), "webp", image.mode, rate, metadata, image.info.get("loop"))
    if path.is_dir():
        container = av.open(str(path / "frame_%05d.png"), format="image2")
    else:
        container = av.open(str(path))
    with container:
        stream = container.streams.video[0]
        accurate = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
        frames, times, durations = [], [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24", interpolation=accurate))
            times.append(float(frame.time))
            durations.append(float(frame.duration * frame.time_base) if frame.duration else 0.0)
        if path.is_dir():
            rate = None
        elif path.suffix == ".gif":
            rate = _rate_from_pts(times, len(frames), durations[-1])
        else:
            rate = float(stream.average_rate)
        return Decoded(
            np.stack(frames),
            stream.codec_context.name,
            stream.codec_context.pix_fmt or "",
            rate,
            dict(container.metadata),
        )


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    mse = np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def to_uint8(images) -> np.ndarray:
    """An IMAGE tensor as the writer quantises it (clamp, x255, round)."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
