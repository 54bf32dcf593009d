"""Frames (ComfyUI IMAGE: B×H×W×C floats in 0..1) to a video file in the output folder.

Rules, each stated once:
- values outside 0..1 are clamped; NaN or infinite values are an error;
- 4:2:0 formats (H.264, H.265, VP9) need even sizes: an odd width or height is padded by one
  pixel on the right or bottom, repeating the edge pixels (nothing is cropped away);
- ping-pong appends the frames in reverse without repeating either end frame, so the clip loops;
- loop_count repeats the frames in video files; GIF and WebP store it in their loop field
  instead (0 there loops forever, as browsers expect of animations); PNG sequences ignore it;
- the invisible watermark (on unless asked otherwise) is added to the frames as written, after
  ping-pong and repeats, so the file's own frame order carries the mark's timing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..host import progress_ticker
from ..inputs import check_image
from ..provenance.credentials import Generation, ensure_identity, require_c2pa, sign_mp4
from ..provenance.watermark import Marker
from .formats import X264_PRESETS, VideoFormat, Writer, format_for_path, get_format
from .output import atomic_file, atomic_output, check_new_path, check_target, resolve_target
from .writers import (
    GIF_MAX_FRAME_RATE,
    GIF_MIN_FRAME_RATE,
    WEBP_MAX_DURATION_MS,
    WRITERS,
    EncodeJob,
)

MIN_FRAME_RATE = 0.001  # the slowest rate written exactly (rates are fractions with denominators up to 1000)
MAX_FRAME_RATE = 1000.0
MAX_LOOP_COUNT = 100
# Rates users type for NTSC video mean k*1000/1001 (23.976 is 24000/1001).
_NTSC_BASES = (24, 30, 48, 60, 120, 240)


@dataclass(frozen=True)
class FrameStream:
    """Frames that arrive chunk by chunk (IMAGE tensors F×H×W×3 in 0..1), e.g. from VideoVAE.decode_frames:
    written as they come, so a long video never sits in memory whole. Played once (no ping-pong or
    repeats, which need the frames kept)."""

    count: int
    height: int
    width: int
    chunks: Iterable[torch.Tensor]


@dataclass(frozen=True)
class SavedVideo:
    path: Path  # the file, or the folder of a PNG sequence
    subfolder: str  # relative to the output folder, as ComfyUI's UI expects
    format: VideoFormat


def frame_rate_fraction(frame_rate: float) -> Fraction:
    """The exact rate to write: NTSC rates snap to k*1000/1001, others to a fraction within 1/1000."""
    for base in _NTSC_BASES:
        ntsc = Fraction(base * 1000, 1001)
        if abs(frame_rate - float(ntsc)) < 5e-4:
            return ntsc
    return Fraction(frame_rate).limit_denominator(1000)


def validate_frames(images: torch.Tensor) -> None:
    """Refuse what cannot be encoded, saying what was received and how to fix it (values outside 0..1 are
    clamped as they are written)."""
    check_image(images, "images", clamped=True)
    channels = images.shape[-1]
    if channels != 3:
        hint = (
            " To drop the alpha channel, pass the frames through 'Split Image with Alpha'."
            if channels == 4
            else ""
        )
        raise ValueError(f"images has {channels} channels; Video Combine expects RGB frames (B×H×W×3).{hint}")


def validate_settings(fmt: VideoFormat, frame_rate: float, crf: int, preset: str, loop_count: int) -> None:
    if not (isinstance(frame_rate, (int, float)) and math.isfinite(frame_rate) and frame_rate > 0):
        raise ValueError(
            f"frame_rate={frame_rate!r} must be a positive number of frames per second, such as 16 or 23.976."
        )
    if not MIN_FRAME_RATE <= frame_rate <= MAX_FRAME_RATE:
        raise ValueError(
            f"frame_rate={frame_rate:g} is outside {MIN_FRAME_RATE:g}..{MAX_FRAME_RATE:g} frames per second; "
            "use a rate in that range."
        )
    if fmt.writer is Writer.GIF and not GIF_MIN_FRAME_RATE <= frame_rate <= GIF_MAX_FRAME_RATE:
        why = (
            "browsers play delays under 20 ms as 100 ms"
            if frame_rate > GIF_MAX_FRAME_RATE
            else "a GIF frame shows for at most 655 s"
        )
        raise ValueError(
            f"frame_rate={frame_rate:g} is too {'fast' if frame_rate > GIF_MAX_FRAME_RATE else 'slow'} for a "
            f"GIF: {why}. Use {GIF_MIN_FRAME_RATE:g} to {GIF_MAX_FRAME_RATE:g} fps for GIF, or choose "
            "video/h264-mp4."
        )
    if fmt.max_crf is not None and not 0 <= crf <= fmt.max_crf:
        raise ValueError(
            f"crf={crf} is outside 0..{fmt.max_crf} for {fmt.name}; lower is better quality (19 is a good default)."
        )
    if fmt.codec in ("libx264", "libx265") and preset not in X264_PRESETS:
        raise ValueError(
            f"preset={preset!r} is not an encoder preset; expected one of: {', '.join(X264_PRESETS)}."
        )
    if not 0 <= loop_count <= MAX_LOOP_COUNT:
        raise ValueError(
            f"loop_count={loop_count} must be 0 or more, up to {MAX_LOOP_COUNT} (the number of extra repeats)."
        )


def frame_order(count: int, pingpong: bool, repeats: int) -> list[int]:
    """Indices of the frames to write: forward, then (ping-pong) back without the end frames, repeated."""
    order = list(range(count))
    if pingpong and count > 2:
        order += list(range(count - 2, 0, -1))
    return order * repeats


def _streamed(stream: FrameStream) -> Iterator[torch.Tensor]:
    """The stream's frames one by one, each checked as validate_frames checks a whole clip."""
    count = 0
    for chunk in stream.chunks:
        if chunk.ndim != 4 or tuple(chunk.shape[1:]) != (stream.height, stream.width, 3):
            raise ValueError(
                f"a streamed chunk of shape {tuple(chunk.shape)}; expected frames ×{stream.height}×{stream.width}×3."
            )
        validate_frames(chunk)
        count += len(chunk)
        if count > stream.count:
            break
        yield from chunk
    if count != stream.count:
        more = "more than" if count > stream.count else f"only {count} of"
        raise ValueError(f"the stream promised {stream.count} frames and gave {more} them.")


def to_uint8_frames(
    frames: Iterable[torch.Tensor], padding: tuple[int, int], marker: Marker | None = None
) -> Iterator[np.ndarray]:
    """RGB uint8 frames one at a time (no second copy of the whole clip), clamped, marked (with a
    `marker`), rounded and padded by (bottom, right) pixels that repeat the edge."""
    bottom, right = padding
    for position, frame in enumerate(frames):
        frame = frame.detach().float().clamp(0.0, 1.0)
        if marker is not None:
            frame = marker(frame, position)
        rgb = frame.mul(255.0).round().to(torch.uint8).cpu().numpy()
        if bottom or right:
            rgb = np.pad(rgb, ((0, bottom), (0, right), (0, 0)), mode="edge")
        yield np.ascontiguousarray(rgb)


def _not_json(value, where: str = "") -> tuple[str, str] | None:
    """(where, what) of the first value in `value` that JSON cannot hold; None when all can."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                return where or "the top level", f"a {type(key).__name__} key"
            found = _not_json(item, f"{where}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        return next(filter(None, (_not_json(item, f"{where}[{i}]") for i, item in enumerate(value))), None)
    if value is None or isinstance(value, (str, int, float, bool)):
        return None
    return where or "the top level", f"a {type(value).__name__}"


def metadata_entries(prompt: dict | None, extra_pnginfo: dict | None) -> dict[str, str]:
    """ComfyUI's metadata: `prompt` (the API graph) and each extra_pnginfo key (`workflow`), as JSON."""
    entries: dict[str, str] = {}
    given = ([("prompt", prompt)] if prompt is not None else []) + list((extra_pnginfo or {}).items())
    for key, value in given:
        try:
            entries[key] = json.dumps(value)
        except (TypeError, ValueError) as error:
            where, what = _not_json(value) or ("", str(error))
            raise ValueError(
                f"the {key!r} metadata holds {what}{' at ' + where if where else ''}, which cannot be written "
                "as JSON: pass plain values (text, numbers, lists, dicts), or turn save_metadata off."
            ) from None
    return entries


@dataclass(frozen=True)
class Encoding:
    """How the frames are encoded: quality (`crf`, lower is better), encoder speed (`preset`), extra plays of
    an animated image or repeats of a video (`loop_count`), and forward-then-backward (`pingpong`)."""

    crf: int = 19
    preset: str = "medium"
    loop_count: int = 0
    pingpong: bool = False


@dataclass(frozen=True)
class Provenance:
    """What the file says of how it was made: ComfyUI's `metadata` (the workflow and prompt, as JSON), the
    pack's invisible `watermark` (provenance/watermark.py), and C2PA Content Credentials (`credentials`,
    provenance/credentials.py) signed into an MP4 as the last step."""

    metadata: dict[str, str] | None = None
    watermark: bool = True
    credentials: Generation | None = None


def check_output(
    format: str,
    frame_rate: float,
    encoding: Encoding = Encoding(),
    video: tuple[int, int, int] | None = None,
    signed: bool = False,
    output_dir: Path | None = None,
    filename_prefix: str | None = None,
    path: Path | None = None,
) -> VideoFormat:
    """Every output option checked, without writing anything: the format and its settings, the codec's
    rules for the `video` (frames written, height, width) when known, Content Credentials (`signed`), and
    where it goes: the filename prefix in the output folder, or exactly `path` (`format` None: the one its
    extension names). `generate` calls it before any model is loaded, Video Combine when ComfyUI validates
    its widgets and again before encoding."""
    fmt = get_format(format) if path is None else format_for_path(path, format)
    if signed and fmt.container != "mp4":
        raise ValueError(
            f"Content Credentials are signed into MP4 files only, and the format is {fmt.name}: choose "
            "video/h264-mp4 or video/h265-mp4, or set content_credentials to off."
        )
    if signed:
        require_c2pa()
    validate_settings(fmt, frame_rate, encoding.crf, encoding.preset, encoding.loop_count)
    count, height, width = video if video is not None else (0, 0, 0)
    if video is not None and min(width, height) < fmt.min_side:
        # H.264 takes any size from 1x1: the way out when the format is another one (H.265 needs 64x64)
        other = " or choose video/h264-mp4" if min(width, height) >= 1 else ""
        raise ValueError(
            f"{fmt.name} needs frames of at least {fmt.min_side}x{fmt.min_side} pixels, got {width}x{height}; "
            f"upscale the frames{other}."
        )
    milliseconds = count * 1000 / frame_rate
    if fmt.writer is Writer.WEBP and milliseconds > WEBP_MAX_DURATION_MS:
        raise ValueError(
            f"{count} frames at {frame_rate:g} fps last {milliseconds / 3.6e6:.0f} hours, longer than an "
            f"animated WebP holds ({WEBP_MAX_DURATION_MS / 3.6e6:.0f}): raise the frame rate or choose "
            "video/h264-mp4."
        )
    if path is not None:
        check_new_path(Path(path))
    elif filename_prefix is not None:
        check_target(filename_prefix, output_dir, width, height, fmt.extension)
    return fmt


def combine_video(
    images: torch.Tensor | FrameStream,
    frame_rate: float,
    output_dir: Path,
    filename_prefix: str | Path = "spacetime/video",
    format: str = "video/h264-mp4",
    encoding: Encoding = Encoding(),
    provenance: Provenance = Provenance(),
    node_id: str | None = None,
) -> SavedVideo:
    """Write frames as a video in `output_dir` under ComfyUI's naming (`filename_prefix` a str), or as exactly
    the file `filename_prefix` when it is a Path (the command line's -o: it must not exist, and its extension
    must be the format's), atomically; return what was written. Every setting is checked before the first
    frame is encoded."""
    path = filename_prefix if isinstance(filename_prefix, Path) else None
    crf, preset, loop_count, pingpong = encoding.crf, encoding.preset, encoding.loop_count, encoding.pingpong
    metadata, watermark, credentials = provenance.metadata, provenance.watermark, provenance.credentials
    if isinstance(images, FrameStream):
        if pingpong or loop_count:
            raise ValueError(
                "a streamed video is written as its frames arrive, once: ping-pong and loop_count need the "
                "frames kept in memory. Turn them off, or decode to frames first."
            )
        count, height, width = images.count, images.height, images.width
    else:
        validate_frames(images)
        count, height, width, _ = images.shape
    fmt = get_format(format) if path is None else format_for_path(path, format)
    animated_image = fmt.writer in (Writer.GIF, Writer.WEBP)
    repeats = 1 if animated_image or fmt.writer is Writer.PNG_SEQUENCE else loop_count + 1
    written = len(frame_order(count, pingpong, 1)) * repeats
    signed = credentials is not None
    video = (written, height, width)
    check_output(fmt.name, frame_rate, encoding, video, signed, output_dir, filename_prefix, path)
    order = frame_order(count, pingpong, repeats)
    if signed:  # fail before encoding, not after
        ensure_identity()
    padding = (height % 2, width % 2) if fmt.chroma_subsampled else (0, 0)
    size = (width + padding[1], height + padding[0])
    tick = progress_ticker(len(order), f"Writing {fmt.name}", node_id)  # cancel stops within a frame
    job = EncodeJob(
        format=fmt,
        size=size,
        frame_rate=frame_rate_fraction(frame_rate),
        frame_count=len(order),
        crf=crf,
        preset=preset,
        loop_count=loop_count if animated_image else 0,
        metadata=metadata or {},
        progress=tick,
    )
    is_folder = fmt.writer is Writer.PNG_SEQUENCE
    if path is None:
        target = resolve_target(filename_prefix, output_dir, width, height, fmt.extension)
        output, subfolder = atomic_output(target, fmt.extension, is_folder), target.subfolder
    else:
        output, subfolder = atomic_file(Path(path), fmt.extension, is_folder), ""
    with output as pending:
        marker = Marker(height, width, len(order)) if watermark else None
        frames = _streamed(images) if isinstance(images, FrameStream) else (images[index] for index in order)
        WRITERS[fmt.writer](pending.temporary, to_uint8_frames(frames, padding, marker), job)
        if credentials is not None:
            sign_mp4(pending.temporary, credentials)
    return SavedVideo(path=pending.final, subfolder=subfolder, format=fmt)
