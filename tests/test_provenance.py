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
from spacetime.provenance import frames as frames_module
from spacetime.provenance import watermark
from spacetime.provenance.frames import held_repeats, read_frames
from spacetime.provenance.watermark import (
    THRESHOLD,
    detect,
    embed,
    installation_key,
    mark_levels,
    read_key,
    segment_signs,
)
from spacetime.training.world import render, sample_scene
from spacetime.video import Encoding, Provenance, combine_video
from spacetime.video.patterns import moving_pattern

from media import mp4_metadata_keys, psnr, to_uint8


def world_clip(seed, frames: int = 32, size: int = 128) -> torch.Tensor:
    """A Tiny World clip (moving shapes on textured backgrounds, camera pans) as IMAGE frames."""
    scene = sample_scene(np.random.default_rng(seed))
    return torch.from_numpy(render(scene, frames, size, size)).float() / 255


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("SPACETIME_USER_DIR", str(tmp_path / "user"))
    return tmp_path / "user"


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


KEY = bytes(range(32))


def test_signs_come_in_keyed_quads_eased_at_each_switch():
    signs = segment_signs(64, KEY)
    segments = signs[:: watermark.SEGMENT]
    assert set(np.abs(signs)) == {1.0}
    for quad in segments.reshape(-1, 4):  # static content and steady change cancel over a quad
        assert quad.sum() == 0 and (quad * np.arange(4)).sum() == 0
    levels = mark_levels(64, KEY)
    assert np.abs(np.diff(levels)).max() < 1.0  # no step: a ±1 switch takes RAMP frames
    steady = np.ones(64, bool)
    for boundary in range(watermark.SEGMENT, 64 + watermark.RAMP, watermark.SEGMENT):
        steady[max(0, boundary - watermark.RAMP // 2) : boundary + watermark.RAMP // 2] = False
    np.testing.assert_array_equal(levels[steady], signs[steady])
    assert not np.allclose(watermark.key_phases(bytes(32)), watermark.key_phases(KEY))


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
    about 5 (the maximum over 8 orientations too), far below the threshold."""
    rng = np.random.default_rng(0)
    scores = [detect(world_clip(100 + i, frames=16)).score for i in range(12)]
    noise = torch.from_numpy(rng.random((16, 96, 160, 3), dtype=np.float32))
    scores.append(detect(noise).score)
    scores.append(detect(embed(world_clip(7, frames=16)), key=bytes(32)).score)
    assert max(scores) < THRESHOLD - 0.5
    assert 3.5 < float(np.median(scores)) < 5.5


def test_the_key_is_the_installations_own_made_once_and_private(user_dir: Path):
    key = installation_key()
    path = user_dir / "spacetime_c2pa" / watermark.KEY_FILE
    assert len(key) == 32 and path.read_text() == key.hex() + "\n"
    assert path.stat().st_mode & 0o077 == 0  # readable by the user only, as the signing key
    assert installation_key() == key and read_key(path) == key
    watermark._make_key(path)  # another process making one meanwhile replaces nothing
    assert installation_key() == key
    assert not [entry.name for entry in path.parent.iterdir() if entry.name.startswith(".")]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("ab" * 31, "holds 62 hex digits"),
        ("zz" * 32, "holds 64 characters, not all hex digits"),
        ("", "holds 0 hex digits"),
    ],
)
def test_a_bad_key_file_is_named(text: str, problem: str, tmp_path: Path):
    (tmp_path / "k.key").write_text(text)
    with pytest.raises(ValueError, match=rf"k\.key is not a watermark key: .*{problem}"):
        read_key(tmp_path / "k.key")
    with pytest.raises(
        ValueError, match=r"the watermark key .*missing\.key could not be read \(No such file"
    ):
        read_key(tmp_path / "missing.key")
    with pytest.raises(ValueError, match="could not be read"):
        read_key(tmp_path)  # a folder


def test_a_user_folder_where_no_key_can_be_made_is_named(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SPACETIME_USER_DIR", str(tmp_path / "user"))
    (tmp_path / "user").write_text("a file where the folder should be")
    with pytest.raises(ValueError, match=r"the watermark key could not be made in .*user.* must be writable"):
        embed(torch.rand(2, 8, 8, 3))


def test_another_installations_mark_is_found_only_with_its_key(clip, user_dir: Path):
    """V52: embed() with any key but this installation's forges nothing; the owner can share the key."""
    own = embed(clip)
    forged = embed(clip, key=bytes(32))  # the old constant key was as public as this one
    assert detect(own).detected and not detect(forged).detected
    assert detect(forged, key=bytes(32)).detected and not detect(own, key=bytes(32)).detected


def test_subtracting_a_pattern_without_the_key_leaves_the_mark(clip, user_dir: Path, tmp_path: Path):
    """V51: the attack that removed the mark made with the public constant key (subtract 0.85 of the
    pattern, write H.264 at crf 19), made with a key that is not the installation's: the mark stays (an
    unrelated pattern in its band only adds noise). With the key the pattern comes off, as the README says."""
    marked = embed(clip)

    def subtract(key: bytes, fraction: float) -> torch.Tensor:
        marker = watermark.Marker(128, 128, len(clip), key=key, strength=-fraction * watermark.STRENGTH)
        return written(torch.stack([marker(frame, index) for index, frame in enumerate(marked)]), tmp_path)

    assert detect(subtract(bytes(32), 0.85)).score > 2 * THRESHOLD
    assert not detect(subtract(installation_key(), 1.0)).detected


@pytest.mark.parametrize(
    "turn, orientation",
    [
        (lambda x: x.flip(2), "mirrored left to right"),
        (lambda x: x.flip(1), "flipped upside down"),
        (lambda x: x.flip(1, 2), "turned 180°"),
        (lambda x: torch.rot90(x, -1, (1, 2)), "turned 90° clockwise"),
        (lambda x: torch.rot90(x, 1, (1, 2)), "turned 90° counter-clockwise"),
        (lambda x: x.transpose(1, 2), "mirrored about the diagonal from top left to bottom right"),
        (
            lambda x: torch.rot90(x, 1, (1, 2)).flip(2),
            "mirrored about the diagonal from top right to bottom left",
        ),
    ],
)
def test_found_mirrored_or_turned(turn, orientation: str):
    """V49, V50: a mirror or a quarter turn hid the mark; the detector tries all 8 orientations."""
    clip = world_clip(12, frames=32, size=96)[:, :, :80]  # not square: a turn swaps the sides
    found = detect(turn(embed(clip)))
    assert found.detected and found.orientation == orientation, found
    assert str(found).endswith(f", {orientation})")
    assert not detect(turn(clip)).detected


def test_found_mirrored_after_h264(clip, tmp_path: Path):
    """V49 as reported: decoded, mirrored and written again as H.264."""
    found = detect(written(embed(clip).flip(2), tmp_path))
    assert found.detected and found.orientation == "mirrored left to right"


@pytest.mark.parametrize(
    "frames, problem",
    [
        (torch.rand(0, 64, 64, 3), "at least one frame"),
        (torch.rand(4, 0, 64, 3), "at least one frame"),
        (torch.full((32, 64, 64, 3), float("nan")), "NaN or infinite"),
        (
            torch.rand(32, 64, 64, 3).index_put_((torch.tensor(5),), torch.tensor(float("inf"))),
            "NaN or infinite",
        ),
    ],
)
def test_no_frames_or_nan_frames_are_an_error(frames: torch.Tensor, problem: str):
    """W10, W12: 0 frames scored 0.0 and NaN frames -inf, both reported as 'no watermark found'."""
    with pytest.raises(ValueError, match=problem):
        SpacetimeDetectWatermark().detect(frames)


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


def test_detect_node_with_a_key_shared_by_its_owner(clip, user_dir: Path):
    """The workflow keeps the key file's name only (a key in a workflow would travel with every video)."""
    other = bytes(range(100, 132))
    shared = user_dir / "spacetime_c2pa" / "watermark_keys"
    shared.mkdir(parents=True)
    (shared / "alice.key").write_text(other.hex() + "\n")
    choices = SpacetimeDetectWatermark.INPUT_TYPES()["optional"]["key"][0]
    assert choices == ["this installation", "alice.key"]
    theirs = embed(clip, key=other)
    assert SpacetimeDetectWatermark().detect(theirs, key="alice.key")["result"][0] is True
    assert SpacetimeDetectWatermark().detect(theirs)["result"][0] is False
    with pytest.raises(ValueError, match=r"no watermark key 'bob\.key' in .*watermark_keys: put the owner's"):
        SpacetimeDetectWatermark().detect(theirs, key="bob.key")


def run_cli(*args: str, env_dir: Path) -> subprocess.CompletedProcess:
    env = {"SPACETIME_OUTPUT_DIR": str(env_dir / "output"), "SPACETIME_USER_DIR": str(env_dir / "user")}
    return subprocess.run(
        [sys.executable, "-m", "spacetime", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_verify_command(clip, user_dir: Path, tmp_path: Path):
    marked = combine_video(clip, 16.0, tmp_path, "marked", "video/h264-mp4", encoding=Encoding(crf=28))
    plain = combine_video(clip, 16.0, tmp_path, "plain", "image/gif", provenance=Provenance(watermark=False))
    found = run_cli("verify", str(marked.path), env_dir=tmp_path)
    assert found.returncode == 0, found.stderr
    assert "watermarked (score" in found.stdout and "Content Credentials: " in found.stdout
    missing = run_cli("verify", str(plain.path), env_dir=tmp_path)
    assert missing.returncode == 1 and "no watermark found" in missing.stdout
    absent = run_cli("verify", str(tmp_path / "nothing.mp4"), env_dir=tmp_path)
    assert absent.returncode == 2 and "does not exist" in absent.stderr

    # another installation finds it only with the key its owner shares
    elsewhere = tmp_path / "elsewhere"
    assert run_cli("verify", str(marked.path), env_dir=elsewhere).returncode == 1
    key = user_dir / "spacetime_c2pa" / "watermark.key"
    shared = run_cli("verify", str(marked.path), "--key", str(key), env_dir=elsewhere)
    assert shared.returncode == 0 and "watermarked (score" in shared.stdout
    wrong = run_cli("verify", str(marked.path), "--key", str(marked.path), env_dir=elsewhere)
    assert wrong.returncode == 2 and "is not a watermark key" in wrong.stderr


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
    with pytest.raises(ValueError, match="folder without PNG"):
        read_frames(tmp_path)


def animation(path: Path, durations: list[int], size: tuple[int, int] = (16, 16)) -> Path:
    """A small animated GIF or WebP of distinct frames shown for `durations` ms each."""
    frames = [Image.new("RGB", size, (index * 6, 255 - index * 6, 128)) for index in range(len(durations))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0, lossless=True)
    return path


@pytest.mark.parametrize("name, hold", [("held.webp", 16_000_000), ("held.gif", 655_350)])
def test_frames_held_for_hours_are_repeated_only_up_to_the_frames_read(name: str, hold: int, tmp_path: Path):
    """V65 (and a GIF variant): a 2 KB WebP showing 39 frames for 16,000 s each built a list of ~6×10^8
    frames before keeping 128."""
    path = animation(tmp_path / name, [10] + [hold] * 39)
    assert path.stat().st_size < 4096
    frames = read_frames(path)
    assert frames.shape == (frames_module.MAX_FRAMES, 16, 16, 3)
    assert torch.equal(frames[1], frames[-1])  # the second frame, held
    assert held_repeats([1] + [16_000_000] * 39, 128) == [1, 127]
    assert held_repeats([60, 60, 70, 60], 100) == [1, 1, 1, 1]  # GIF's rounding of 16 fps


def test_frames_are_scaled_down_as_they_are_read(clip, tmp_path: Path, monkeypatch):
    """V67: a 1080p clip was read as 128 float32 frames at full size (3.2 GB); each frame is now scaled down
    to the detector's pixel budget as it is decoded, and the mark is still found."""
    saved = combine_video(clip, 16.0, tmp_path, "big", "video/h264-mp4")
    monkeypatch.setattr(frames_module, "DETECT_PIXELS", 64 * 64)
    frames = read_frames(saved.path)
    assert frames.shape == (32, 64, 64, 3) and frames.dtype == torch.float32
    assert detect(frames).detected
    still = tmp_path / "still.png"
    Image.new("RGB", (300, 100), (200, 10, 10)).save(still)
    assert read_frames(still).shape == (1, 36, 110, 3)  # the aspect ratio kept


@pytest.mark.parametrize("kind", ["png folder", "png", "gif", "mp4"])
def test_frames_over_the_size_limit_are_refused_before_decoding(kind: str, tmp_path: Path, monkeypatch):
    """V66/E16: four solid 12000² PNGs (1.7 MB) exhausted memory; here the same with a small limit."""
    monkeypatch.setenv("SPACETIME_MAX_FRAME_PIXELS", str(40 * 30 - 1))
    if kind == "png folder":
        path = tmp_path / "frames"
        path.mkdir()
        for index in range(4):
            Image.new("RGB", (40, 30)).save(path / f"f{index}.png")
    elif kind == "mp4":
        path = combine_video(
            torch.zeros(3, 30, 40, 3), 16.0, tmp_path, "big", provenance=Provenance(watermark=False)
        ).path
    else:
        path = animation(tmp_path / f"big.{kind}", [100, 100], size=(40, 30))
    monkeypatch.setattr(Image.Image, "convert", lambda *a, **k: pytest.fail("decoded before the check"))
    message = r"frames of 40x30 pixels \(1200\), more than the 1199 .* set SPACETIME_MAX_FRAME_PIXELS"
    with pytest.raises(ValueError, match=message):
        read_frames(path)
    monkeypatch.setenv("SPACETIME_MAX_FRAME_PIXELS", "lots")
    with pytest.raises(
        ValueError, match=r"SPACETIME_MAX_FRAME_PIXELS='lots': give a number of pixels above 0"
    ):
        read_frames(path)


def test_the_evaluator_reads_within_the_same_limits(tmp_path: Path, monkeypatch):
    """E16 through evaluate, E11 (a text file named .mp4 was a FileNotFoundError traceback), and its .npy
    arrays, checked from their header before they are loaded."""
    from spacetime.training.evaluate import load_video

    clip = moving_pattern(5, 32, 32)
    saved = combine_video(clip, 16.0, tmp_path, "e", "video/h264-mp4", provenance=Provenance(watermark=False))
    assert load_video(saved.path).shape == (5, 32, 32, 3)
    monkeypatch.setenv("SPACETIME_MAX_VIDEO_PIXELS", str(4 * 64 * 64))
    with pytest.raises(
        ValueError,
        match=r"more than 16384 pixels in its first 5 frames of 32x32 .* set SPACETIME_MAX_VIDEO_PIXELS",
    ):
        load_video(saved.path)
    array = tmp_path / "clip.npy"
    np.save(array, to_uint8(clip))
    monkeypatch.setenv("SPACETIME_MAX_VIDEO_PIXELS", "5119")
    with pytest.raises(ValueError, match=r"clip\.npy holds 5120 pixels, more than 5119: cut it, or set"):
        load_video(array)
    text = tmp_path / "notavideo.mp4"
    text.write_text("not a video")
    with pytest.raises(ValueError, match="could not be read as a video"):
        load_video(text)


def test_damaged_images_are_named(tmp_path: Path):
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.new("RGB", (16, 16)).save(folder / "0.png")
    (folder / "1.png").write_bytes((folder / "0.png").read_bytes()[:40])
    with pytest.raises(ValueError, match=r"1\.png could not be (read as an image|decoded)"):
        read_frames(folder)


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
    assert {p.name for p in identity.iterdir()} == {"ca.pem", "signer.pem", "signer.key", "watermark.key"}
    assert (identity / "signer.key").stat().st_mode & 0o077 == 0  # private to the user, as watermark.key

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


def pem_identity(self_signed: bool = False, other_key: bool = False) -> tuple[bytes, bytes]:
    """A certificate and key in PEM: a CA-issued leaf (c2pa's profile) or a self-signed one."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    signing = ec.generate_private_key(ec.SECP256R1()) if other_key else key
    return certificate.public_bytes(serialization.Encoding.PEM), signing.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize("identity", ["garbage", "self-signed", "key of another certificate"])
def test_a_bad_signing_identity_is_refused_before_encoding(
    identity: str, user_dir: Path, tmp_path: Path, monkeypatch
):
    """W31: "not a cert" and "not a key" failed with c2pa's _C2paSignature after the video was encoded."""
    folder = user_dir / credentials.IDENTITY_FOLDER
    folder.mkdir(parents=True)
    if identity == "garbage":
        chain, key = b"not a cert", b"not a key"
    elif identity == "self-signed":
        chain, key = pem_identity()
    else:
        good_chain, _ = credentials.ensure_identity(tmp_path / "good")
        chain, key = good_chain, pem_identity()[1]
    (folder / "signer.pem").write_bytes(chain)
    (folder / "signer.key").write_bytes(key)
    from spacetime.video import combine as combine_module

    monkeypatch.setattr(combine_module, "to_uint8_frames", lambda *a: pytest.fail("encoded before the check"))
    message = r"c2pa refuses the signing identity in .*spacetime_c2pa \(.*\)\. signer\.pem must hold"
    with pytest.raises(ValueError, match=message):
        combine_video(
            moving_pattern(3, 32, 32),
            16.0,
            tmp_path,
            "bad",
            "video/h264-mp4",
            provenance=Provenance(credentials=describe_graph(GRAPH)),
        )
    assert not list(tmp_path.glob("bad*")) and not list(tmp_path.glob(".bad*"))


def test_a_second_maker_keeps_the_identity_the_first_published(tmp_path: Path):
    """RC3 (rerun of 2026-12-07): 6 first-time signings at once, 5 times, each in a fresh user folder, gave 1
    refusal in 30, "c2pa refuses the signing identity ... PEM preamble contains invalid data": makers wrote
    over each other's files in place. Each identity is now published whole, its key first, and a process
    that finds the key taken keeps the identity of the one that took it."""
    folder = tmp_path / "identity"
    first = credentials.ensure_identity(folder)
    credentials._make_identity(folder)  # a process that looked before the first identity was published
    assert ((folder / "signer.pem").read_bytes(), (folder / "signer.key").read_bytes()) == first
    assert sorted(path.name for path in folder.iterdir()) == ["ca.pem", "signer.key", "signer.pem"]


def test_an_identity_being_published_is_waited_for(tmp_path: Path):
    """Between the key and the chain of an identity another process publishes, the pair is not yet whole:
    that is waited for (IDENTITY_WAIT), not refused as a key without its certificate."""
    import threading

    chain, key = credentials.ensure_identity(tmp_path / "made")
    folder = tmp_path / "identity"
    folder.mkdir()
    (folder / "signer.key").write_bytes(key)
    publish = threading.Timer(0.3, (folder / "signer.pem").write_bytes, [chain])
    publish.start()
    try:
        assert credentials.ensure_identity(folder) == (chain, key)
    finally:
        publish.join()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_signed_files_get_the_permissions_of_unsigned_ones(
    umask: int, mode: int, user_dir: Path, tmp_path: Path
):
    """O49: signing wrote through mkstemp (0600), so signed MP4s were unreadable to other users."""
    previous = os.umask(umask)
    try:
        signed = combine_video(
            moving_pattern(5, 32, 32),
            16.0,
            tmp_path,
            "signed",
            "video/h264-mp4",
            provenance=Provenance(credentials=describe_graph(GRAPH)),
        )
        plain = combine_video(moving_pattern(5, 32, 32), 16.0, tmp_path, "plain", "video/h264-mp4")
    finally:
        os.umask(previous)
    assert read_credentials(signed.path).state == "Valid"
    assert signed.path.stat().st_mode == plain.path.stat().st_mode == 0o100000 | mode


@pytest.mark.parametrize("when", ["before signing", "while signing"])
def test_a_full_disk_while_signing_is_named_and_leaves_nothing(
    when: str, user_dir: Path, tmp_path: Path, monkeypatch
):
    """F05: a video that fits once but not twice failed with a bare OSError [Errno 28] from sign_mp4."""
    import errno
    import shutil

    credentials.ensure_identity()  # made while there is room
    if when == "before signing":
        monkeypatch.setattr(
            credentials.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 48_000)
        )
    else:
        sign = c2pa.Builder.sign

        def full(self, signer, format, source, destination):
            if format != "video/mp4":  # the identity's check, in memory
                return sign(self, signer, format, source, destination)
            destination.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(c2pa.Builder, "sign", full)
    output = tmp_path / "output"
    with pytest.raises(
        OSError,
        match=r"no room to sign the video: signing writes a second copy of it \(\d+ KiB\) in .*output, "
        r"which has \d+ KiB free\. Free some space, or set content_credentials to off\.",
    ) as raised:
        combine_video(
            moving_pattern(12, 48, 48),
            16.0,
            output,
            "full",
            "video/h264-mp4",
            provenance=Provenance(credentials=describe_graph(GRAPH)),
        )
    assert raised.value.errno == errno.ENOSPC
    assert list(output.iterdir()) == []  # neither the video nor the signed copy


def test_missing_c2pa_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "c2pa", None)
    with pytest.raises(ValueError, match="pip install c2pa-python"):
        credentials.require_c2pa()
