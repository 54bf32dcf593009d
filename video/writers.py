"""Encoders: RGB uint8 frames (H×W×3) to one file or folder, metadata embedded as ComfyUI reads it.

Metadata is a dict of JSON strings (`prompt`, `workflow`, ...), written per format the way
ComfyUI's own save nodes write it: MP4 `keys`/`ilst` entries (`use_metadata_tags`), Matroska
tags, WebP EXIF ("prompt:{json}" in 0x0110, then one tag per other key from 0x010F down), PNG
text chunks.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc, Interpolation
from PIL import Image, PngImagePlugin

from .formats import VideoFormat, Writer

# Accurate rounding keeps gradients free of banding in the RGB -> YUV step.
_RGB_TO_YUV = Interpolation.BICUBIC | Interpolation.ACCURATE_RND
_WEBP_QUALITY = 90
GIF_TICK_MS = 10  # GIF delays are whole hundredths of a second
GIF_MAX_FRAME_RATE = 50.0  # browsers replace delays under 20 ms by 100 ms
GIF_MIN_FRAME_RATE = 0.002  # a GIF delay is 16-bit hundredths of a second: at most 655 s a frame
WEBP_MAX_DURATION_MS = 2**31 - 1  # libwebp counts an animation's time in 32-bit milliseconds
_GIF_PALETTE_SAMPLES = 64  # frames sampled to build the shared palette
_EXIF_PROMPT_TAG = 0x0110  # ComfyUI's SaveAnimatedWEBP: Model = "prompt:{json}"
_EXIF_FIRST_EXTRA_TAG = 0x010F  # then Make = "workflow:{json}", counting down


Frames = Iterable[np.ndarray]


@dataclass(frozen=True)
class EncodeJob:
    """Everything a writer needs besides the frames and the path."""

    format: VideoFormat
    size: tuple[int, int]  # width, height of every frame
    frame_rate: Fraction
    frame_count: int
    crf: int
    preset: str
    loop_count: int  # GIF/WebP loop field: 0 = forever, N = N extra plays
    metadata: dict[str, str]  # key -> JSON text
    progress: Callable[[], None]  # called once per written frame


def write_pyav(path: Path, frames: Frames, job: EncodeJob) -> None:
    """Encode with an ffmpeg codec; 4:2:0 formats are converted and tagged as BT.709, limited range."""
    fmt, (width, height) = job.format, job.size
    options = {"movflags": "+faststart+use_metadata_tags"} if fmt.container == "mp4" else {}
    with av.open(str(path), mode="w", format=fmt.container, options=options) as container:
        for key, value in job.metadata.items():
            container.metadata[key] = value
        stream = container.add_stream(fmt.codec, rate=job.frame_rate)
        stream.width, stream.height, stream.pix_fmt = width, height, fmt.pix_fmt
        stream.options = fmt.codec_options(job.crf, job.preset, job.frame_count)
        if fmt.codec == "libx265":
            stream.codec_tag = "hvc1"  # Apple players and Safari need hvc1, ffmpeg defaults to hev1
        yuv = fmt.pix_fmt.startswith("yuv")
        if yuv:
            context = stream.codec_context
            context.colorspace, context.color_range = Colorspace.ITU709, ColorRange.MPEG
            context.color_primaries, context.color_trc = ColorPrimaries.BT709, ColorTrc.BT709
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if yuv:
                frame = frame.reformat(
                    format=fmt.pix_fmt,
                    dst_colorspace=Colorspace.ITU709,
                    dst_color_range=ColorRange.MPEG,
                    interpolation=_RGB_TO_YUV,
                )
            frame.pts = index
            container.mux(stream.encode(frame))
            job.progress()
        container.mux(stream.encode(None))


def _shared_palette(frames: list[np.ndarray]) -> Image.Image:
    """One 256-colour palette for the whole clip, from a montage of sampled frames (median cut)."""
    step = max(1, len(frames) // _GIF_PALETTE_SAMPLES)
    montage = np.concatenate(frames[::step], axis=0)
    return Image.fromarray(montage).quantize(
        colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )


def frame_durations_ms(count: int, frame_rate: Fraction, tick_ms: int) -> list[int]:
    """Per-frame delays in whole ticks whose running sum tracks i/frame_rate, so the average rate is
    exact even where one delay cannot be (GIF counts hundredths: 23.976 fps is 40,40,50,40,... ms)."""
    boundaries = [round(i * 1000 / frame_rate / tick_ms) * tick_ms for i in range(count + 1)]
    return [b - a for a, b in itertools.pairwise(boundaries)]


def _save_animation(
    path: Path, images: list[Image.Image], job: EncodeJob, format: str, tick_ms: int, **options
):
    """Pillow's animated save, with per-frame delays that keep the average rate exact."""
    durations = frame_durations_ms(len(images), job.frame_rate, tick_ms)
    images[0].save(
        path, format=format, save_all=True, append_images=images[1:], loop=job.loop_count, duration=durations,
        **options,
    )  # fmt: skip


def write_gif(path: Path, frames: Frames, job: EncodeJob) -> None:
    """Animated GIF: a shared palette and Floyd-Steinberg dithering (no per-frame colour flicker)."""
    rgb_frames = list(frames)
    palette = _shared_palette(rgb_frames)
    images = []
    for rgb in rgb_frames:
        images.append(Image.fromarray(rgb).quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG))
        job.progress()
    metadata = job.metadata
    extra = {"comment": json.dumps({k: json.loads(v) for k, v in metadata.items()})} if metadata else {}
    _save_animation(path, images, job, "GIF", GIF_TICK_MS, disposal=1, optimize=False, **extra)


def _webp_exif(metadata: dict[str, str]) -> Image.Exif:
    exif = Image.Exif()
    tag = _EXIF_FIRST_EXTRA_TAG
    for key, value in metadata.items():
        if key == "prompt":
            exif[_EXIF_PROMPT_TAG] = f"prompt:{value}"
        else:
            exif[tag] = f"{key}:{value}"
            tag -= 1
    return exif


def write_webp(path: Path, frames: Frames, job: EncodeJob) -> None:
    """Animated WebP through Pillow, the workflow in EXIF as ComfyUI's SaveAnimatedWEBP writes it."""
    images = []
    for rgb in frames:
        images.append(Image.fromarray(rgb))
        job.progress()
    extra = {"exif": _webp_exif(job.metadata).tobytes()} if job.metadata else {}
    _save_animation(path, images, job, "WEBP", 1, quality=_WEBP_QUALITY, method=4, **extra)


def png_frame_name(index: int) -> str:
    return f"frame_{index:05}.png"


def write_png_sequence(folder: Path, frames: Frames, job: EncodeJob) -> None:
    """Numbered PNG frames; each carries the metadata as text chunks, as ComfyUI's SaveImage does."""
    info = PngImagePlugin.PngInfo()
    for key, value in job.metadata.items():
        info.add_text(key, value)
    for index, rgb in enumerate(frames):
        Image.fromarray(rgb).save(
            folder / png_frame_name(index), format="PNG", pnginfo=info, compress_level=4
        )
        job.progress()


WRITERS = {
    Writer.PYAV: write_pyav,
    Writer.GIF: write_gif,
    Writer.WEBP: write_webp,
    Writer.PNG_SEQUENCE: write_png_sequence,
}
