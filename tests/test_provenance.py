"""Provenance: the invisible watermark (embedding, detection through H.264, resizing, cropping and GIF,
its false-positive control, the nodes and `verify`), and C2PA Content Credentials (sign, read back,
trust, tampering)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from spacetime.nodes.provenance import SpacetimeDetectWatermark
from spacetime.provenance import watermark
from spacetime.provenance.frames import read_frames
from spacetime.provenance.watermark import THRESHOLD, detect, embed, mark_levels, segment_signs
from spacetime.training.world import render, sample_scene
from spacetime.video import Encoding, Provenance, combine_video
from spacetime.video.patterns import moving_pattern

from media import mp4_metadata_keys, psnr, to_uint8


def world_clip(seed, frames: int = 32, size: int = 128) -> torch.Tensor:
    """A Tiny World clip (moving shapes on textured backgrounds, camera pans) as IMAGE frames."""
    scene = sample_scene(np.random.default_rng(seed))
    return torch.from_numpy(render(scene, frames, size, size)).float() / 255


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    return world_clip(3)


def written(frames: torch.Tensor, folder: Path, fmt: str = "video/h264-mp4", **encoding) -> torch.Tensor:
    """Frames after a round trip through a file the pack writes (unmarked: the mark is added by the test)."""
    saved = combine_video(
        frames,
        16.0,
        folder,
        "clip",
        fmt,
        encoding=Encoding(**encoding),
        provenance=Provenance(watermark=False),
    )
    return read_frames(saved.path)


def test_mark_is_invisible_by_psnr(clip):
    marked = embed(clip)
    assert psnr(to_uint8(clip), to_uint8(marked)) >= 40.0
    luma = torch.tensor(watermark.LUMA)
    chroma_change = ((marked - clip) - ((marked - clip) @ luma)[..., None]).abs().max()
    assert chroma_change < 1e-6  # the same offset on R, G and B: luma only


def test_signs_come_in_keyed_quads_eased_at_each_switch():
    signs = segment_signs(64)
    segments = signs[:: watermark.SEGMENT]
    assert set(np.abs(signs)) == {1.0}
    for quad in segments.reshape(-1, 4):  # static content and steady change cancel over a quad
        assert quad.sum() == 0 and (quad * np.arange(4)).sum() == 0
    levels = mark_levels(64)
    assert np.abs(np.diff(levels)).max() < 1.0  # no step: a ±1 switch takes RAMP frames
    steady = np.ones(64, bool)
    for boundary in range(watermark.SEGMENT, 64 + watermark.RAMP, watermark.SEGMENT):
        steady[max(0, boundary - watermark.RAMP // 2) : boundary + watermark.RAMP // 2] = False
    np.testing.assert_array_equal(levels[steady], signs[steady])
    assert not np.allclose(watermark.key_phases("another key"), watermark.key_phases())


def test_found_raw_and_not_without_the_mark(clip):
    assert detect(embed(clip)).score > 20.0
    assert detect(clip).score < THRESHOLD


def test_found_after_h264_at_crf_28(clip, tmp_path: Path):
    marked = written(embed(clip), tmp_path, crf=28)
    unmarked = written(clip, tmp_path, crf=28)
    assert detect(marked).detected and detect(marked).score > 2 * THRESHOLD
    assert not detect(unmarked).detected


def test_moving_objects_residue_is_turned_down(tmp_path: Path, monkeypatch):
    # the watermark benchmark's clip (seed 1, index 10): two stars crossing a black checkerboard; at crf 28
    # what is left of them in the signed sum drowned the mark until loud places were turned down
    marked = written(embed(world_clip((1, 10))), tmp_path, crf=28)
    found = detect(marked)
    monkeypatch.setattr(watermark, "_quieted", lambda image: image - image.mean())
    plain = detect(marked)
    assert found.detected and found.score > plain.score + 3, (found, plain)


def test_found_after_halving_the_size(clip, tmp_path: Path):
    small = F.interpolate(embed(clip).permute(0, 3, 1, 2), scale_factor=0.5, mode="bilinear", antialias=True)
    found = detect(written(small.permute(0, 2, 3, 1), tmp_path))
    assert found.detected and found.crop == 1.0


@pytest.mark.parametrize("top, left", [(0, 0), (12, 5), (13, 13)])
def test_found_after_cropping_a_tenth(clip, top: int, left: int, tmp_path: Path):
    marked = embed(clip)[:, top : top + 114, left : left + 114]
    found = detect(written(marked, tmp_path))
    assert found.detected
    assert found.crop == pytest.approx(114 / 128, abs=0.021)  # the scale guess nearest the real one


def test_found_after_gif_conversion(clip, tmp_path: Path):
    assert detect(written(embed(clip), tmp_path, "image/gif")).detected


@pytest.mark.parametrize("fps", [16.0, 23.976])
def test_gif_frames_merged_by_the_writer_are_expanded_back(fps: float, tmp_path: Path):
    """Pillow stores identical frames as one longer frame: a still picture's marked GIF has 11 frames for
    32. The reader repeats them by their delays (whole hundredths of a second), so the timing holds."""
    still = world_clip(11, frames=1).expand(32, -1, -1, -1).contiguous()
    saved = combine_video(still, fps, tmp_path, "still", "image/gif")
    frames = read_frames(saved.path)
    assert frames.shape[0] == 32
    assert detect(frames).detected


def test_a_single_image_or_a_short_clip_is_marked_too(tmp_path: Path):
    still = world_clip(5, frames=1, size=256)
    assert detect(embed(still)).detected and not detect(still).detected
    short = world_clip(6, frames=9)
    assert detect(written(embed(short), tmp_path)).detected


def test_unmarked_scores_follow_the_null_distribution():
    """Each correlation term is a cosine of a phase that is uniform whatever the picture, so unmarked
    clips (and marked ones under another key) score like the maximum of N(0, 1) over the hypotheses:
    about 4, far below the threshold."""
    rng = np.random.default_rng(0)
    scores = [detect(world_clip(100 + i, frames=16)).score for i in range(12)]
    noise = torch.from_numpy(rng.random((16, 96, 160, 3), dtype=np.float32))
    scores.append(detect(noise).score)
    scores.append(detect(embed(world_clip(7, frames=16)), key="another key").score)
    assert max(scores) < THRESHOLD - 0.5
    assert 2.5 < float(np.median(scores)) < 5.0


def test_alpha_is_left_alone():
    rgba = torch.cat([world_clip(8, frames=4), torch.rand(4, 128, 128, 1)], dim=-1)
    marked = embed(rgba)
    assert torch.equal(marked[..., 3], rgba[..., 3])
    with pytest.raises(ValueError, match="T×H×W×3"):
        detect(torch.zeros(4, 16, 16))


def test_combine_marks_by_default_in_written_order(tmp_path: Path):
    """With ping-pong the file's frames are marked in the order written, so the file itself is found."""
    clip = world_clip(9, frames=17)
    marked = combine_video(clip, 16.0, tmp_path, "on", "video/h264-mp4", encoding=Encoding(pingpong=True))
    plain = combine_video(
        clip,
        16.0,
        tmp_path,
        "off",
        "video/h264-mp4",
        encoding=Encoding(pingpong=True),
        provenance=Provenance(watermark=False),
    )
    assert detect(read_frames(marked.path)).detected
    assert not detect(read_frames(plain.path)).detected


def test_detect_node(clip):
    detected, score, report = SpacetimeDetectWatermark().detect(embed(clip))["result"]
    assert detected is True and score > THRESHOLD and report.startswith("watermarked")
    detected, score, report = SpacetimeDetectWatermark().detect(clip)["result"]
    assert detected is False and score < THRESHOLD and report.startswith("no watermark")


def run_cli(*args: str, env_dir: Path) -> subprocess.CompletedProcess:
    env = {"SPACETIME_OUTPUT_DIR": str(env_dir / "output"), "SPACETIME_USER_DIR": str(env_dir / "user")}
    return subprocess.run(
        [sys.executable, "-m", "spacetime", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_verify_command(clip, tmp_path: Path):
    marked = combine_video(clip, 16.0, tmp_path, "marked", "video/h264-mp4", encoding=Encoding(crf=28))
    plain = combine_video(clip, 16.0, tmp_path, "plain", "image/gif", provenance=Provenance(watermark=False))
    found = run_cli("verify", str(marked.path), env_dir=tmp_path)
    assert found.returncode == 0, found.stderr
    assert "watermarked (score" in found.stdout and "Content Credentials: " in found.stdout
    missing = run_cli("verify", str(plain.path), env_dir=tmp_path)
    assert missing.returncode == 1 and "no watermark found" in missing.stdout
    absent = run_cli("verify", str(tmp_path / "nothing.mp4"), env_dir=tmp_path)
    assert absent.returncode == 2 and "does not exist" in absent.stderr


def test_frames_of_any_size_are_judged():
    for shape in [(4, 1, 1, 3), (20, 1, 64, 3), (1, 3, 3, 3)]:
        assert not detect(torch.full(shape, 0.5)).detected


def test_png_folders_must_hold_one_sequence(tmp_path: Path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, size in enumerate([(16, 8), (16, 8), (8, 8)]):
        Image.new("RGB", size, (index * 40, 0, 0)).save(folder / f"{index:03d}.png")
    with pytest.raises(ValueError, match=r"different sizes \(000.png is 16x8, 002.png is 8x8\)"):
        read_frames(folder)
    (folder / "002.png").unlink()
    assert read_frames(folder).shape == (2, 8, 16, 3)
    with pytest.raises(ValueError, match="folder without PNG frames"):
        read_frames(tmp_path)


# C2PA ---------------------------------------------------------------------------------------------

c2pa = pytest.importorskip("c2pa")

from spacetime.provenance import credentials  # noqa: E402
from spacetime.provenance.credentials import (  # noqa: E402
    TRAINED_ALGORITHMIC_MEDIA,
    describe_graph,
    read_credentials,
)

GRAPH = {
    "1": {"class_type": "SpacetimeDiTLoader", "inputs": {"dit_name": "wan2.1_t2v_1.3B_fp16.safetensors"}},
    "2": {
        "class_type": "SpacetimeTextEncode",
        "inputs": {"text": "a red circle moving left", "clip": ["3", 0]},
    },
    "3": {"class_type": "SpacetimeVAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
}


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("SPACETIME_USER_DIR", str(tmp_path / "user"))
    return tmp_path / "user"


def test_sign_then_verify_round_trip(user_dir: Path, tmp_path: Path):
    clip = moving_pattern(9, 64, 64)
    metadata = {"workflow": json.dumps({"nodes": []})}
    saved = combine_video(
        clip,
        16.0,
        tmp_path,
        "signed",
        "video/h264-mp4",
        provenance=Provenance(metadata=metadata, credentials=describe_graph(GRAPH)),
    )
    identity = user_dir / credentials.IDENTITY_FOLDER
    assert {p.name for p in identity.iterdir()} == {"ca.pem", "signer.pem", "signer.key"}
    assert (identity / "signer.key").stat().st_mode & 0o077 == 0  # private to the user

    found = read_credentials(saved.path)
    assert found.state == "Valid" and found.generator == "ComfyUI-Spacetime"
    assert found.source_type == TRAINED_ALGORITHMIC_MEDIA
    assert found.details["models"] == ["wan2.1_t2v_1.3B_fp16.safetensors", "wan_2.1_vae.safetensors"]
    import hashlib

    assert found.details["prompt_sha256"] == hashlib.sha256(b"a red circle moving left").hexdigest()
    assert "prompt" not in found.details  # never the prompt itself unless asked
    assert "signingCredential.untrusted" in found.problems
    trusted = read_credentials(saved.path, (identity / "ca.pem").read_bytes())
    assert trusted.state == "Trusted"
    assert "mdtaworkflow" in mp4_metadata_keys(saved.path.read_bytes())  # signing keeps the workflow
    assert detect(read_frames(saved.path)).detected  # and the watermark

    # A second signing reuses the identity.
    before = (identity / "signer.pem").read_bytes()
    combine_video(
        clip,
        16.0,
        tmp_path,
        "again",
        "video/h264-mp4",
        provenance=Provenance(credentials=describe_graph(GRAPH)),
    )
    assert (identity / "signer.pem").read_bytes() == before


def test_tampering_invalidates_and_unsigned_files_have_none(user_dir: Path, tmp_path: Path):
    clip = moving_pattern(9, 64, 64)
    saved = combine_video(
        clip,
        16.0,
        tmp_path,
        "signed",
        "video/h264-mp4",
        provenance=Provenance(credentials=describe_graph(GRAPH)),
    )
    data = bytearray(saved.path.read_bytes())
    data[data.find(b"mdat") + 100] ^= 0xFF
    tampered = tmp_path / "tampered.mp4"
    tampered.write_bytes(bytes(data))
    found = read_credentials(tampered)
    assert found.state == "Invalid" and any("mismatch" in problem for problem in found.problems)
    plain = combine_video(clip, 16.0, tmp_path, "plain", "video/h264-mp4")
    assert read_credentials(plain.path) is None


def test_prompt_text_only_when_asked_and_graph_hash_without_text():
    with_text = describe_graph(GRAPH, include_prompt=True)
    assert with_text.prompt == "a red circle moving left"
    no_text = describe_graph({"1": {"class_type": "X", "inputs": {"seed": 3}}})
    assert no_text.models == () and len(no_text.prompt_sha256) == 64 and no_text.prompt is None


def test_node_signs_with_the_prompt_text_when_asked(user_dir: Path, tmp_path: Path, monkeypatch):
    from spacetime.nodes.video_combine import SpacetimeVideoCombine

    monkeypatch.setenv("SPACETIME_OUTPUT_DIR", str(tmp_path / "output"))
    required = SpacetimeVideoCombine.INPUT_TYPES()["required"]
    kwargs = {name: spec[1]["default"] for name, spec in required.items() if "default" in spec[1]}
    kwargs |= {
        "images": moving_pattern(5, 64, 64),
        "prompt": GRAPH,
        "content_credentials": "sign with prompt text",
    }
    path = Path(SpacetimeVideoCombine().combine(**kwargs)["result"][0])
    assert read_credentials(path).details["prompt"] == "a red circle moving left"


def test_credentials_errors_name_the_fix(user_dir: Path, tmp_path: Path):
    clip = moving_pattern(3, 32, 32)
    with pytest.raises(ValueError, match=r"MP4 files only.*video/h264-mp4"):
        combine_video(
            clip, 16.0, tmp_path, "gif", "image/gif", provenance=Provenance(credentials=describe_graph(GRAPH))
        )
    identity = user_dir / credentials.IDENTITY_FOLDER
    identity.mkdir(parents=True)
    (identity / "signer.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ValueError, match=r"signer\.key does not"):
        combine_video(
            clip,
            16.0,
            tmp_path,
            "half",
            "video/h264-mp4",
            provenance=Provenance(credentials=describe_graph(GRAPH)),
        )
    assert not list(tmp_path.glob("half*"))  # refused before anything was written


def test_missing_c2pa_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "c2pa", None)
    with pytest.raises(ValueError, match="pip install c2pa-python"):
        credentials.require_c2pa()
