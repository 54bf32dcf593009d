"""SpacetimeVideoCombine: frames to a video file in the output folder, carrying its workflow."""

from __future__ import annotations

from .. import host
from ..editing import decode_long_video, decode_steps
from ..inputs import latent_samples
from ..provenance.credentials import describe_graph
from ..video import FORMATS, Encoding, Provenance, combine_video, metadata_entries
from ..video.combine import MAX_FRAME_RATE, MAX_LOOP_COUNT, MIN_FRAME_RATE, FrameStream, check_output
from ..video.formats import X264_PRESETS, Writer
from ..video.output import check_target
from .vae import VAE

PREVIEW_FORMAT = "video/h264-mp4"
CREDENTIALS = ("off", "sign", "sign with prompt text")


def _frames(images, latent, vae):
    """What to write: the IMAGE frames, or (no images) a latent decoded as it is written. A function, so a
    stream can be made twice (the file, then a preview copy)."""
    if images is not None:
        return lambda: images
    if latent is None or vae is None:
        given = "only latent" if latent is not None else "only vae" if vae is not None else "nothing"
        raise ValueError(
            f"Video Combine got {given}: connect images (frames), or both latent and vae (a latent video to "
            "decode as it is written)."
        )
    samples = latent_samples(latent)
    batch, _, length, height, width = samples.shape
    vae.check_latent(samples)  # now, before the file is opened

    def stream() -> FrameStream:
        # a Long Video latent is decoded window by window, each join's step spread over the frames after it
        tick = host.progress_ticker(decode_steps(latent), "VAE decode")
        frames = decode_long_video(latent, lambda item: vae.decode_frames(item, tick))
        stride = vae.spatial_stride
        return FrameStream(batch * vae.frames_for(length), height * stride, width * stride, frames)

    return stream


class SpacetimeVideoCombine:
    """Write IMAGE frames as a video (MP4, WebM, GIF, WebP, lossless MKV or PNG frames)."""

    CATEGORY = "Spacetime/video"
    FUNCTION = "combine"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Full path of the written file (or of the folder, for a PNG sequence).",)
    DESCRIPTION = (
        "Encodes frames to a video in ComfyUI's output folder, with the workflow and prompt embedded "
        "so that dropping the file onto ComfyUI restores the graph (MP4, WebM, WebP, PNG). Adds an "
        "invisible watermark unless turned off, and can sign MP4 files with C2PA Content Credentials."
    )

    @classmethod
    def INPUT_TYPES(cls):
        format_help = "\n".join(f"{f.name}: {f.description}" for f in FORMATS.values())
        return {
            "required": {
                "frame_rate": (
                    "FLOAT",
                    {
                        "default": 16.0,
                        "min": MIN_FRAME_RATE,
                        "max": MAX_FRAME_RATE,
                        "step": 0.001,
                        "tooltip": "Frames per second; any positive value. 23.976, 29.97 and 59.94 are written "
                        "as the exact NTSC rates (24000/1001, ...). Wan models are trained at 16 fps.",
                    },
                ),
                "loop_count": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": MAX_LOOP_COUNT,
                        "tooltip": "Extra repeats. Video files repeat the frames this many more times. GIF and WebP "
                        "store it as their loop setting instead, where 0 loops forever. "
                        "PNG sequences ignore it.",
                    },
                ),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "spacetime/video",
                        "tooltip": "Name inside ComfyUI's output folder; slashes make subfolders. Files are numbered "
                        "prefix_00001_.mp4, ... %year%, %month%, %day%, %hour%, %minute%, %second%, %width% "
                        "and %height% expand (and the frontend's %date:yyyy-MM-dd%). Paths outside the "
                        "output folder are refused.",
                    },
                ),
                "format": (list(FORMATS), {"default": "video/h264-mp4", "tooltip": format_help}),
                "pingpong": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Play forward then backward (without repeating the end frames) so the clip loops.",
                    },
                ),
                "crf": (
                    "INT",
                    {
                        "default": 19,
                        "min": 0,
                        "max": 63,
                        "tooltip": "Quality for H.264, H.265 (0..51) and VP9 (0..63): lower is better and larger. "
                        "19 is visually near-transparent for H.264. Other formats ignore it.",
                    },
                ),
                "preset": (
                    list(X264_PRESETS),
                    {
                        "default": "medium",
                        "tooltip": "H.264/H.265 speed preset: slower presets give smaller files at the same quality.",
                    },
                ),
                "save_metadata": (
                    "BOOLEAN",
                    {
                        "default": True,
                        "tooltip": "Embed the workflow and the prompt (as ComfyUI's own SaveVideo does) so the file "
                        "can be dropped onto ComfyUI. ComfyUI's --disable-metadata turns this off too.",
                    },
                ),
                "watermark": (
                    "BOOLEAN",
                    {
                        "default": True,
                        "tooltip": "Add the pack's invisible watermark (a faint luma pattern), made to survive H.264 "
                        "re-encoding, resizing, cropping and GIF conversion; Detect Watermark and `python -m "
                        "spacetime verify FILE` find it. Turn off only for footage that must stay bit-exact.",
                    },
                ),
                "content_credentials": (
                    list(CREDENTIALS),
                    {
                        "default": "off",
                        "tooltip": "Sign MP4 files with C2PA Content Credentials (needs c2pa-python): made by "
                        "ComfyUI-Spacetime as AI-generated media, the model files, and a SHA-256 of the prompt. "
                        "'sign with prompt text' also writes the prompt itself. The signing identity is yours "
                        "(user/spacetime_c2pa/signer.pem + signer.key) or a local one made on first use.",
                    },
                ),
            },
            "optional": {
                "images": (
                    "IMAGE",
                    {
                        "tooltip": "Frames to write, in order (an IMAGE batch, one frame per item). Or leave it and connect latent and vae."
                    },
                ),
                "latent": (
                    "LATENT",
                    {
                        "tooltip": "Instead of images: a latent video, decoded with `vae` as it is written, so a "
                        "long video (Long Video) never sits in memory as frames. Played once: no ping-pong or loops."
                    },
                ),
                "vae": (VAE, {"tooltip": "The VAE that decodes `latent`."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(
        cls,
        frame_rate=None,
        loop_count=None,
        filename_prefix=None,
        format=None,
        crf=None,
        preset=None,
        content_credentials=None,
    ):
        """The output options, checked when ComfyUI validates the prompt, before any node of it runs: a mistake
        here throws no sampling away. (An input connected to another node is absent here and is checked when
        this node runs.)"""
        options = {"crf": crf, "preset": preset, "loop_count": loop_count}
        try:
            if content_credentials not in (None, *CREDENTIALS):
                raise ValueError(
                    f"content_credentials is {content_credentials!r}; choose one of {', '.join(CREDENTIALS)}."
                )
            if format is None:  # connected: what the other options mean depends on it
                if filename_prefix is not None:
                    check_target(filename_prefix, host.output_directory())
                return True
            check_output(
                format,
                16.0 if frame_rate is None else frame_rate,
                Encoding(**{name: value for name, value in options.items() if value is not None}),
                signed=content_credentials not in (None, "off"),
                output_dir=host.output_directory(),
                filename_prefix=filename_prefix,
            )
        except ValueError as error:
            return str(error)
        return True

    def combine(
        self,
        images=None,  # first, as before it became optional: callers that pass it by position keep working
        frame_rate=16.0,
        loop_count=0,
        filename_prefix="spacetime/video",
        format=PREVIEW_FORMAT,
        pingpong=False,
        crf=19,
        preset="medium",
        save_metadata=True,
        watermark=True,
        content_credentials="off",
        latent=None,
        vae=None,
        prompt=None,
        extra_pnginfo=None,
        unique_id=None,
    ):
        metadata = (
            metadata_entries(prompt, extra_pnginfo) if save_metadata and not host.metadata_disabled() else {}
        )
        if content_credentials not in CREDENTIALS:
            raise ValueError(
                f"content_credentials is {content_credentials!r}; choose one of {', '.join(CREDENTIALS)}."
            )
        credentials = (
            None
            if content_credentials == "off"
            else describe_graph(prompt, include_prompt=content_credentials == "sign with prompt text")
        )
        frames = _frames(images, latent, vae)
        saved = combine_video(
            frames(),
            frame_rate,
            host.output_directory(),
            filename_prefix,
            format,
            node_id=unique_id,
            encoding=Encoding(crf=crf, preset=preset, loop_count=loop_count, pingpong=pingpong),
            provenance=Provenance(metadata=metadata, watermark=watermark, credentials=credentials),
        )
        preview = {"filename": saved.path.name, "subfolder": saved.subfolder, "type": "output"}
        temp = host.temp_directory()
        if not saved.format.browser_plays and temp is not None:
            # The browser cannot play this format: show an H.264 copy from the temp folder instead.
            copy = combine_video(
                frames(),
                frame_rate,
                temp,
                "spacetime_preview",
                PREVIEW_FORMAT,
                node_id=unique_id,
                encoding=Encoding(crf=23, preset="veryfast", pingpong=pingpong),
                provenance=Provenance(watermark=watermark),
            )
            preview = {"filename": copy.path.name, "subfolder": copy.subfolder, "type": "temp"}
        # GIFs show as animated images; a true `animated` flag would route them to a <video> element.
        animated = saved.format.writer is not Writer.GIF
        return {"ui": {"images": [preview], "animated": (animated,)}, "result": (str(saved.path),)}
