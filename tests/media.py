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


def mp4_boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[str, int, int]]:
    """ISO-BMFF boxes (type, payload start, payload end) between start and end."""
    end = len(data) if end is None else end
    boxes = []
    while start + 8 <= end:
        size = int.from_bytes(data[start : start + 4], "big")
        kind = data[start + 4 : start + 8].decode("latin-1")
        header = 8
        if size == 1:
            size, header = int.from_bytes(data[start + 8 : start + 16], "big"), 16
        elif size == 0:
            size = end - start
        boxes.append((kind, start + header, start + size))
        start += size
    return boxes


def mp4_metadata_keys(data: bytes) -> list[str]:
    """The key names of moov/udta/meta/keys: where ComfyUI's frontend looks for prompt and workflow."""

    def child(kind: str, start: int, end: int, skip: int = 0) -> tuple[int, int]:
        for name, payload_start, payload_end in mp4_boxes(data, start + skip, end):
            if name == kind:
                return payload_start, payload_end
        raise KeyError(kind)

    moov = child("moov", 0, len(data))
    udta = child("udta", *moov)
    meta = child("meta", *udta)
    version_flags = 0 if data[meta[0] + 4 : meta[0] + 8] == b"hdlr" else 4  # QuickTime meta has none
    keys_start, _ = child("keys", *meta, skip=version_flags)
    count = int.from_bytes(data[keys_start + 4 : keys_start + 8], "big")
    names, position = [], keys_start + 8
    for _ in range(count):
        size = int.from_bytes(data[position : position + 4], "big")
        names.append(data[position + 4 : position + size].decode())
        position += size
    child("ilst", *meta, skip=version_flags)
    return names
