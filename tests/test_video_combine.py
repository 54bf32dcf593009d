"""Video Combine: every format decodes back with the right frames, size, rate, pixel format,
fidelity and metadata; bad input is refused with a message that names the fix."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spacetime.video import FORMATS, Encoding, Provenance, combine_video
from spacetime.video.combine import frame_order, frame_rate_fraction
from spacetime.video.patterns import moving_pattern

from media import decode, mp4_boxes, mp4_metadata_keys, psnr, to_uint8

METADATA = {
    "prompt": json.dumps({"3": {"class_type": "SpacetimeVideoCombine", "inputs": {"fps": 16}}}),
    "workflow": json.dumps(
        {"nodes": [{"id": 3, "type": "SpacetimeVideoCombine"}], "links": [], "note": "{ü}"}
    ),
}

# format -> (codec as PyAV names it, pixel format, minimum PSNR in dB; inf = exact)
EXPECTED = {
    "video/h264-mp4": ("h264", "yuv420p", 35.0),
    "video/h265-mp4": ("hevc", "yuv420p", 35.0),
    "video/vp9-webm": ("vp9", "yuv420p", 35.0),
    "video/ffv1-mkv": ("ffv1", "bgr0", math.inf),
    "image/gif": ("gif", "bgra", 24.0),
    "image/webp": ("webp", "RGBA", 32.0),  # Pillow decodes animated WebP as (opaque) RGBA
    "image/png-sequence": ("png", "rgb24", math.inf),
}
# GIF counts delays in hundredths of a second, WebP in milliseconds; over a whole clip the
# average rate is exact to within one tick.
RATE_TOLERANCE = {"image/gif": 1.5e-2, "image/webp": 1e-3}


def test_every_format_is_covered():
    assert set(EXPECTED) == set(FORMATS)


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    return moving_pattern(9, 96, 128)


@pytest.mark.parametrize("name", list(FORMATS))
def test_format_round_trip(name: str, clip: torch.Tensor, output_dir: Path):
    codec, pix_fmt, min_psnr = EXPECTED[name]
    saved = combine_video(
        clip, 16.0, output_dir, "clips/test", name, provenance=Provenance(metadata=METADATA, watermark=False)
    )

    assert saved.path.parent == output_dir.resolve() / "clips"
    assert saved.path.name == "test_00001_" + (
        f".{FORMATS[name].extension}" if FORMATS[name].extension else ""
    )
    decoded = decode(saved.path)
    assert decoded.codec == codec
    assert decoded.pix_fmt == pix_fmt
    assert decoded.frames.shape == (9, 96, 128, 3)
    if name != "image/png-sequence":
        assert decoded.frame_rate == pytest.approx(16.0, rel=RATE_TOLERANCE.get(name, 1e-6))
    quality = psnr(to_uint8(clip), decoded.frames)
    if math.isinf(min_psnr):
        np.testing.assert_array_equal(decoded.frames, to_uint8(clip))
    else:
        assert quality >= min_psnr, f"{name}: PSNR {quality:.2f} dB"


def test_h264_default_crf_keeps_35db_on_natural_content(output_dir: Path):
    clip = moving_pattern(17, 256, 256)
    saved = combine_video(clip, 16.0, output_dir, "h264", "video/h264-mp4")
    decoded = decode(saved.path)
    assert decoded.frames.shape == (17, 256, 256, 3)
    assert psnr(to_uint8(clip), decoded.frames) >= 35.0


def test_h264_is_browser_ready(clip: torch.Tensor, output_dir: Path):
    """yuv420p in a profile every browser decodes, tagged BT.709 so colours are not shifted."""
    import av

    saved = combine_video(clip, 16.0, output_dir, "web", "video/h264-mp4")
    with av.open(str(saved.path)) as container:
        context = container.streams.video[0].codec_context
        assert context.pix_fmt == "yuv420p"
        assert (int(context.colorspace), int(context.color_primaries), int(context.color_trc)) == (1, 1, 1)
        assert context.profile in ("High", "Main", "Constrained Baseline", "Baseline")


def test_h265_carries_the_hvc1_tag_apple_players_need(clip: torch.Tensor, output_dir: Path):
    saved = combine_video(clip, 16.0, output_dir, "hevc", "video/h265-mp4")
    assert b"hvc1" in saved.path.read_bytes()[:4096] or b"hvc1" in saved.path.read_bytes()


@pytest.mark.parametrize("name", ["video/h264-mp4", "video/h265-mp4", "video/vp9-webm", "video/ffv1-mkv"])
def test_container_metadata_round_trips_as_separate_entries(name: str, clip: torch.Tensor, output_dir: Path):
    saved = combine_video(clip, 16.0, output_dir, "meta", name, provenance=Provenance(metadata=METADATA))
    metadata = {key.lower(): value for key, value in decode(saved.path).metadata.items()}
    assert json.loads(metadata["prompt"]) == json.loads(METADATA["prompt"])
    assert json.loads(metadata["workflow"]) == json.loads(METADATA["workflow"])


@pytest.mark.parametrize("name", ["video/h264-mp4", "video/h265-mp4"])
def test_mp4_metadata_sits_where_comfyui_reads_it(name: str, clip: torch.Tensor, output_dir: Path):
    """ComfyUI's frontend reads moov/udta/meta keys+ilst (mdta keys) from the first 64 MiB."""
    data = combine_video(
        clip, 16.0, output_dir, "meta", name, provenance=Provenance(metadata=METADATA)
    ).path.read_bytes()
    assert {"mdtaprompt", "mdtaworkflow"} <= set(mp4_metadata_keys(data))
    top_level = [kind for kind, _, _ in mp4_boxes(data)]
    assert top_level.index("moov") < top_level.index("mdat")


def test_webp_metadata_is_exif_as_comfyui_writes_it(clip: torch.Tensor, output_dir: Path):
    saved = combine_video(
        clip, 16.0, output_dir, "meta", "image/webp", provenance=Provenance(metadata=METADATA)
    )
    exif = Image.open(saved.path).getexif()
    assert exif[0x0110] == "prompt:" + METADATA["prompt"]
    assert exif[0x010F] == "workflow:" + METADATA["workflow"]


def test_png_frames_each_carry_the_workflow(clip: torch.Tensor, output_dir: Path):
    saved = combine_video(
        clip, 16.0, output_dir, "meta", "image/png-sequence", provenance=Provenance(metadata=METADATA)
    )
    frames = sorted(saved.path.iterdir())
    assert len(frames) == 9
    for frame in (frames[0], frames[-1]):
        text = Image.open(frame).text
        assert text["workflow"] == METADATA["workflow"] and text["prompt"] == METADATA["prompt"]


def test_gif_keeps_the_metadata_in_its_comment(clip: torch.Tensor, output_dir: Path):
    saved = combine_video(
        clip, 16.0, output_dir, "meta", "image/gif", provenance=Provenance(metadata=METADATA)
    )
    comment = json.loads(Image.open(saved.path).info["comment"])
    assert comment == {key: json.loads(value) for key, value in METADATA.items()}


@pytest.mark.parametrize("name", ["video/h264-mp4", "image/webp", "image/png-sequence"])
def test_no_metadata_means_none_written(name: str, clip: torch.Tensor, output_dir: Path):
    saved = combine_video(clip, 16.0, output_dir, "bare", name, provenance=Provenance(metadata={}))
    path = saved.path if saved.path.is_file() else next(saved.path.iterdir())
    assert b"workflow" not in path.read_bytes()


@pytest.mark.parametrize(
    "rate,exact", [(23.976, (24000, 1001)), (29.97, (30000, 1001)), (12.5, (25, 2)), (16, (16, 1))]
)
def test_frame_rate_fraction(rate: float, exact: tuple[int, int]):
    fraction = frame_rate_fraction(rate)
    assert (fraction.numerator, fraction.denominator) == exact


@pytest.mark.parametrize("name", ["video/h264-mp4", "video/vp9-webm", "image/gif", "image/webp"])
def test_fractional_frame_rate(name: str, output_dir: Path):
    clip = moving_pattern(24, 32, 48)
    decoded = decode(combine_video(clip, 23.976, output_dir, "ntsc", name).path)
    assert decoded.frame_rate == pytest.approx(24000 / 1001, rel=RATE_TOLERANCE.get(name, 1e-6))


@pytest.mark.parametrize("name", ["video/h264-mp4", "video/h265-mp4", "video/vp9-webm"])
def test_odd_sizes_are_padded_to_even_by_repeating_the_edge(name: str, output_dir: Path):
    clip = moving_pattern(3, 65, 97)
    decoded = decode(combine_video(clip, 8.0, output_dir, "odd", name).path)
    assert decoded.frames.shape == (3, 66, 98, 3)
    assert psnr(to_uint8(clip), decoded.frames[:, :65, :97]) >= 30.0
    # The added row and column repeat the last ones.
    assert np.abs(decoded.frames[:, :65, 97].astype(int) - decoded.frames[:, :65, 96]).mean() < 6
    assert np.abs(decoded.frames[:, 65, :97].astype(int) - decoded.frames[:, 64, :97]).mean() < 6


def test_h265_refuses_frames_smaller_than_its_block(output_dir: Path):
    """Regression: x265 corrupted the heap (and killed the process) on 48x40 frames."""
    with pytest.raises(ValueError, match="at least 64x64"):
        combine_video(moving_pattern(2, 40, 48), 16.0, output_dir, "tiny", "video/h265-mp4")


@pytest.mark.parametrize("name", ["video/ffv1-mkv", "image/png-sequence", "image/gif", "image/webp"])
def test_odd_sizes_are_kept_where_the_format_allows(name: str, output_dir: Path):
    clip = moving_pattern(2, 33, 47)
    assert decode(combine_video(clip, 8.0, output_dir, "odd", name).path).frames.shape == (2, 33, 47, 3)


@pytest.mark.parametrize("name", list(FORMATS))
def test_one_frame(name: str, output_dir: Path):
    clip = moving_pattern(1, 64, 64)
    assert decode(combine_video(clip, 16.0, output_dir, "single", name).path).frames.shape[0] == 1


@pytest.mark.parametrize("count", [1, 2])
def test_h265_short_clips_always_mux(count: int, output_dir: Path):
    """Regression: x265 left the first dts uninitialised for 1-2 frame clips ("pts/dts pair unsupported")."""
    for attempt in range(6):
        saved = combine_video(
            moving_pattern(count, 64, 64), 16.0, output_dir, f"short{attempt}", "video/h265-mp4"
        )
        assert decode(saved.path).frames.shape[0] == count


def test_values_outside_0_1_are_clamped(output_dir: Path):
    clip = torch.stack([torch.full((16, 16, 3), -0.5), torch.full((16, 16, 3), 1.7)])
    decoded = decode(
        combine_video(
            clip, 16.0, output_dir, "clamp", "video/ffv1-mkv", provenance=Provenance(watermark=False)
        ).path
    )
    assert decoded.frames[0].max() == 0 and decoded.frames[1].min() == 255


def test_pingpong_plays_back_without_repeating_the_ends(output_dir: Path):
    clip = torch.stack([torch.full((8, 8, 3), i / 10) for i in range(4)])
    decoded = decode(
        combine_video(
            clip,
            16.0,
            output_dir,
            "pp",
            "video/ffv1-mkv",
            encoding=Encoding(pingpong=True),
            provenance=Provenance(watermark=False),
        ).path
    )
    levels = decoded.frames[:, 0, 0, 0].tolist()
    assert levels == [round(255 * i / 10) for i in (0, 1, 2, 3, 2, 1)]


def test_loop_count_repeats_video_frames(output_dir: Path):
    clip = moving_pattern(3, 16, 16)
    decoded = decode(
        combine_video(
            clip,
            16.0,
            output_dir,
            "loop",
            "video/ffv1-mkv",
            encoding=Encoding(loop_count=2),
            provenance=Provenance(watermark=False),
        ).path
    )
    assert decoded.frames.shape[0] == 9
    np.testing.assert_array_equal(decoded.frames[6:], to_uint8(clip))


@pytest.mark.parametrize("name", ["image/gif", "image/webp"])
@pytest.mark.parametrize("loop_count", [0, 3])
def test_loop_count_is_the_animation_loop_field(name: str, loop_count: int, output_dir: Path):
    clip = moving_pattern(3, 16, 16)
    saved = combine_video(clip, 16.0, output_dir, "loop", name, encoding=Encoding(loop_count=loop_count))
    image = Image.open(saved.path)
    assert image.n_frames == 3
    assert image.info["loop"] == loop_count


def test_frame_order():
    assert frame_order(4, pingpong=False, repeats=2) == [0, 1, 2, 3, 0, 1, 2, 3]
    assert frame_order(4, pingpong=True, repeats=1) == [0, 1, 2, 3, 2, 1]
    assert frame_order(1, pingpong=True, repeats=1) == [0]


@pytest.mark.parametrize(
    "images,message",
    [
        (torch.zeros(0, 16, 16, 3), "0 frames"),
        (torch.zeros(16, 16, 3), "batch"),
        (torch.zeros(2, 16, 16, 4), "Split Image with Alpha"),
        (torch.zeros(2, 16, 16, 3, dtype=torch.uint8), "floats"),
        (
            torch.tensor([0.5, math.nan, math.inf]).view(1, 1, 1, 3).expand(2, 4, 4, 3).contiguous(),
            "NaN or infinite",
        ),
    ],
)
def test_bad_frames_are_refused_with_the_fix(images, message: str, output_dir: Path):
    with pytest.raises((ValueError, TypeError), match=message):
        combine_video(images, 16.0, output_dir, "bad", "video/h264-mp4")
    assert list(output_dir.rglob("*.mp4")) == []


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"frame_rate": 0.0}, "positive"),
        ({"frame_rate": -24.0}, "positive"),
        ({"frame_rate": math.nan}, "positive"),
        ({"frame_rate": 60.0, "format": "image/gif"}, "too fast for a GIF"),
        ({"crf": 52}, "outside 0..51"),
        ({"preset": "warp"}, "not an encoder preset"),
        ({"format": "video/avi"}, "Unknown video format"),
        ({"loop_count": -1}, "0 or more"),
    ],
)
def test_bad_settings_are_refused_with_the_fix(kwargs: dict, message: str, output_dir: Path):
    arguments = {"frame_rate": 16.0, "format": "video/h264-mp4"} | kwargs
    encoding = Encoding(
        **{name: arguments.pop(name) for name in ("crf", "preset", "loop_count") if name in arguments}
    )
    with pytest.raises(ValueError, match=message):
        combine_video(
            moving_pattern(2, 16, 16),
            output_dir=output_dir,
            filename_prefix="bad",
            encoding=encoding,
            **arguments,
        )
