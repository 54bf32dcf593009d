"""The output formats of Video Combine, in one registry: the node's dropdown is its keys."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class Writer(Enum):
    PYAV = "pyav"  # an ffmpeg codec in a container, through PyAV
    GIF = "gif"  # Pillow, one shared palette with dithering
    WEBP = "webp"  # Pillow, animated WebP
    PNG_SEQUENCE = "png-sequence"  # one PNG per frame in a folder


X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast",
    "medium", "slow", "slower", "veryslow", "placebo",
)  # fmt: skip


@dataclass(frozen=True)
class VideoFormat:
    """How one output format is written."""

    name: str
    extension: str  # without the dot; "" for a folder of frames
    writer: Writer
    description: str
    container: str | None = None  # ffmpeg muxer name
    codec: str | None = None  # ffmpeg encoder name
    pix_fmt: str | None = None
    max_crf: int | None = None  # None: the format has no crf
    min_side: int = 1  # smallest width and height the encoder handles safely
    browser_plays: bool = True  # False: the node previews a separate H.264 copy
    lossless: bool = False
    comfyui_loads_workflow: bool = True  # dropping the file onto ComfyUI restores the graph

    def __post_init__(self):
        if self.writer is Writer.PYAV and not (self.container and self.codec and self.pix_fmt):
            raise ValueError(f"format {self.name!r}: a PyAV format needs container, codec and pix_fmt")

    @property
    def chroma_subsampled(self) -> bool:
        """4:2:0 formats need even width and height."""
        return bool(self.pix_fmt and self.pix_fmt.startswith("yuv420"))

    def codec_options(self, crf: int, preset: str, frame_count: int) -> dict[str, str]:
        """Encoder options for PyAV formats."""
        if self.codec == "libx264":
            return {"crf": str(crf), "preset": preset}
        if self.codec == "libx265":
            params = "log-level=error"
            if frame_count < 3:
                # x265 leaves the first packet's dts uninitialised when a clip is shorter than its
                # B-frame lookahead (shorter clips intermittently failed to mux).
                params += ":bframes=0"
            return {"crf": str(crf), "preset": preset, "x265-params": params}
        if self.codec == "libvpx-vp9":
            # Constant quality: crf with a zero bitrate target; row-mt uses every core.
            return {"crf": str(crf), "b": "0", "row-mt": "1", "deadline": "good", "cpu-used": "2"}
        if self.codec == "ffv1":
            return {"level": "3", "g": "1", "slicecrc": "1"}
        return {}


FORMATS: dict[str, VideoFormat] = {
    f.name: f
    for f in (
        VideoFormat(
            "video/h264-mp4", "mp4", Writer.PYAV,
            "H.264 in MP4, yuv420p, faststart: plays in every browser and editor.",
            container="mp4", codec="libx264", pix_fmt="yuv420p", max_crf=51,
        ),
        VideoFormat(
            "video/h265-mp4", "mp4", Writer.PYAV,
            "H.265/HEVC in MP4 (hvc1 tag): smaller files than H.264 at the same quality; "
            "not every browser plays it.",
            container="mp4", codec="libx265", pix_fmt="yuv420p", max_crf=51, browser_plays=False,
            min_side=64,  # x265 corrupts its heap on frames smaller than one 64x64 block
        ),
        VideoFormat(
            "video/vp9-webm", "webm", Writer.PYAV,
            "VP9 in WebM, yuv420p: open format, plays in browsers.",
            container="webm", codec="libvpx-vp9", pix_fmt="yuv420p", max_crf=63,
        ),
        VideoFormat(
            "video/ffv1-mkv", "mkv", Writer.PYAV,
            "FFV1 in Matroska, RGB, lossless: for editing and archiving (large files). "
            "ComfyUI cannot load a workflow from .mkv.",
            container="matroska", codec="ffv1", pix_fmt="bgr0", browser_plays=False, lossless=True,
            comfyui_loads_workflow=False,
        ),
        VideoFormat(
            "image/gif", "gif", Writer.GIF,
            "Animated GIF with one shared 256-colour palette and dithering. "
            "ComfyUI cannot load a workflow from a GIF.",
            comfyui_loads_workflow=False,
        ),
        VideoFormat(
            "image/webp", "webp", Writer.WEBP,
            "Animated WebP (lossy, quality 90): small, plays in browsers.",
        ),
        VideoFormat(
            "image/png-sequence", "", Writer.PNG_SEQUENCE,
            "A folder of numbered PNG frames, lossless, each carrying the workflow.",
            browser_plays=False, lossless=True,
        ),
    )
}  # fmt: skip


def get_format(name: str) -> VideoFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"Unknown video format {name!r}; expected one of: {', '.join(FORMATS)}.") from None


def format_for_path(path: str | Path, name: str | None = None) -> VideoFormat:
    """The format a file named `path` is written in: `name`, whose extension the path must carry (none for
    a PNG-sequence folder), or when None the format its extension names (.mp4 is H.264)."""
    extension = Path(path).suffix.lower().removeprefix(".")
    if name is not None:
        fmt = get_format(name)
        if extension != fmt.extension:
            expected = f"end in .{fmt.extension}" if fmt.extension else "have no extension (it is a folder)"
            raise ValueError(
                f"{path} does not match the format {fmt.name}: its name must {expected}. Change the name, or "
                "leave the format out to choose it from the extension."
            )
        return fmt
    by_extension: dict[str, VideoFormat] = {}
    for fmt in FORMATS.values():
        if fmt.extension:
            by_extension.setdefault(fmt.extension, fmt)  # the first of a kind: .mp4 is H.264
    if extension not in by_extension:
        raise ValueError(
            f"{path}: the format cannot be told from the extension {'.' + extension if extension else '(none)'}; "
            f"use one of {', '.join('.' + e for e in by_extension)}, or name the format (a folder of PNG "
            "frames: image/png-sequence and a name without an extension)."
        )
    return by_extension[extension]
