"""Long videos: windows chain in latent space (the first window is plain text to video; later ones
continue from the last frames), colour statistics are matched between windows, the VAE streams frames
to the encoder as it decodes them, and `generate` writes a video longer than one window that way."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from spacetime.editing import spread_joins
from spacetime.editing.long_video import (
    WINDOWS_KEY,
    Codec,
    Windows,
    decode_long_video,
    decode_steps,
    long_video_latent,
    long_video_windows,
    match_mean,
    window_count,
    window_joins,
    windows_entry,
)
from spacetime.nodes.vae import SpacetimeVAEDecode
from spacetime.nodes.video_combine import _frames
from spacetime.pipeline import (
    TINY_WORLD_DIR,
    TINY_WORLD_FILES,
    TINY_WORLD_SETTINGS,
    encode_prompt,
    load_tiny_world,
    long_video,
    sample_latent,
)
from spacetime.samplers.denoiser import Sampling
from spacetime.samplers.guidance import Guider
from spacetime.samplers.schedules import schedule_by_name
from spacetime.vae import video_to_frames
from spacetime.video import Encoding, Provenance, combine_video
from spacetime.video.combine import FrameStream

from media import decode
from test_cli import run

tiny = pytest.mark.skipif(
    not all((TINY_WORLD_DIR / name).is_file() for name in TINY_WORLD_FILES.values()),
    reason=f"Tiny World's weights are missing from {TINY_WORLD_DIR}",
)


def test_window_count_and_bad_windows():
    assert [window_count(n, 5, 2) for n in (1, 5, 6, 8, 9, 241)] == [1, 1, 2, 2, 3, 80]
    assert window_joins(5, 5, 2) == [] and window_joins(9, 5, 2) == [5, 8]
    assert window_joins(241, 5, 2)[-1] == 5 + 78 * 3
    with pytest.raises(ValueError, match="overlap of at least 1 and less than the window"):
        window_count(10, 5, 5)


def test_a_held_frame_goes_where_its_window_makes_frames_before_and_after_it():
    tiny = Windows(5, 2, 4)  # new latent frames 0-4, 5-7, 8-10, ...: held inside, never at a window's edge
    assert [tiny.held_frame(frame, 14) for frame in range(16)] == [
        0,
        1,
        2,
        3,
        3,
        6,
        6,
        6,
        9,
        9,
        9,
        12,
        12,
        12,
        14,
        15,
    ]
    wan = Windows(21, 4, 4)  # new latent frames 0-20, 21-37, 38-54, 55-59
    assert [wan.held_frame(frame, 60) for frame in (10, 20, 21, 37, 38, 55, 59)] == [
        10,
        19,
        22,
        36,
        39,
        56,
        58,
    ]
    assert Windows(3, 1, 4).held_frame(3, 7) == 4  # windows adding 2 (3-4, 5-6): not the first


def test_match_mean_moves_each_channel_mean_by_the_amount_given_per_frame():
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(1, 2, 3, 4, 4, generator=generator) + torch.tensor([1.0, -3.0]).view(
        1, 2, 1, 1, 1
    )
    new = torch.randn(1, 2, 3, 4, 4, generator=generator) * 0.5 + 2.0
    matched = match_mean(new, reference, 1.0)
    assert torch.allclose(matched.mean((2, 3, 4)), reference.mean((2, 3, 4)), atol=1e-5)
    assert torch.allclose(matched.std((2, 3, 4)), new.std((2, 3, 4)), atol=1e-5)  # the spread is kept
    assert torch.equal(match_mean(new, reference, 0.0), new)
    ramp = match_mean(new, reference, torch.tensor([0.0, 0.5, 1.0]))  # one amount per frame
    assert torch.equal(ramp[:, :, 0], new[:, :, 0]) and torch.allclose(ramp[:, :, 2], matched[:, :, 2])
    assert torch.allclose(ramp[:, :, 1], (new[:, :, 1] + matched[:, :, 1]) / 2, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_world():
    return load_tiny_world(device="cpu")


@tiny
def test_first_window_is_text_to_video_and_later_windows_add_only_new_frames(tiny_world):
    dit, text_encoder, vae = tiny_world
    settings = replace(TINY_WORLD_SETTINGS, steps=3, solver="euler", seed=4)
    positive, negative = encode_prompt(text_encoder, "a green star moving up", "", settings.cfg)
    sigmas = schedule_by_name("simple")(3, shift=3.0)
    decoded, encoded = [], []

    def decode(latent):
        decoded.append(latent)
        return vae.decode(latent)

    def encode(video):
        encoded.append(video)
        return vae.encode(video)

    made = list(
        long_video_windows(
            Guider(dit, positive, negative, settings.cfg),
            Sampling(sigmas, "euler", seed=4),
            (1, 12, 9, 16, 16),
            Windows(5, 2, 4),
            Codec(encode, decode),
        )
    )
    latent, openings = long_video_latent(made)
    assert latent.shape == (1, 12, 9, 16, 16) and len(made) == 3
    # Each later window opens with the last 5 frames (1 + 4·(overlap − 1)) of the whole window before,
    # decoded and encoded again as a clip's start: window 1 after window 0 (latent frames 0..4), window 2
    # after window 1 (its opening, then latent frames 5..7).
    assert [d.shape[2] for d in decoded] == [5, 5] and torch.equal(decoded[0], latent[:, :, :5])
    assert torch.equal(decoded[1][:, :, 2:], latent[:, :, 5:8])
    assert torch.allclose(decoded[1][:, :, :2], vae.encode(encoded[0]), atol=1e-5)
    assert torch.equal(openings, torch.cat([decoded[1][:, :, :2], vae.encode(encoded[1])], dim=2))
    assert [e.shape[2] for e in encoded] == [5, 5]
    assert torch.equal(encoded[0], vae.decode(latent[:, :, :5])[:, :, -5:])
    guider, sampling = (
        Guider(dit, positive, negative, settings.cfg),
        Sampling(sigmas, settings.solver, settings.seed),
    )
    alone = sample_latent(guider, torch.zeros(1, 12, 5, 16, 16), sampling)
    assert torch.allclose(latent[:, :, :5], alone, atol=1e-5)  # window 0: the plain 17-frame video
    assert latent[:, :, 5:].std() > 0.3  # later windows generated something, not zeros


def patch_stripes(frames: torch.Tensor, period: int) -> float:
    """Amplitude (8-bit levels) of vertical stripes `period` pixels apart in frames F×H×W×3 in 0..1: the
    Fourier component of the column means at that period, averaged over frames and channels."""
    columns = frames.mean(1)  # F×W×3
    columns = columns - columns.mean(1, keepdim=True)
    spectrum = torch.fft.rfft(columns, dim=1).abs() * 2 / columns.shape[1] * 255
    return spectrum[:, columns.shape[1] // period].mean().item()


@tiny
def test_later_windows_have_no_stripes_and_no_tint(tiny_world):
    """Opened with the previous window's last latent frames as they are (groups of 4 frames, where the model
    only ever saw a single-frame latent), Tiny World filled later windows with vertical stripes one DiT
    patch (16 px) wide: here 5.2 levels against 1.1 in the first window; re-encoded, 1.3. Decoded as one
    latent instead of window by window, the new frames after the join came out tinted: the mean colour of
    frames 17..24 moved up to 19.0 levels from frame 16's; window by window, 5.4."""
    dit, text_encoder, vae = tiny_world
    positive, negative = encode_prompt(text_encoder, "a red circle moving left on a blue background", "", 5.0)
    sigmas = schedule_by_name("simple")(8, shift=3.0)
    latent, openings = long_video_latent(
        long_video_windows(
            Guider(dit, positive, negative),
            Sampling(sigmas, seed=0),
            (1, 12, 8, 16, 16),
            Windows(5, 2, 4),
            Codec(vae.encode, vae.decode),
        )
    )
    video = {"samples": latent, WINDOWS_KEY: windows_entry(8, 5, 2, 4, openings)}
    frames = torch.cat(list(decode_long_video(video, vae.decode_frames)))
    patch = vae.spatial_stride * dit.config.patch_size[1]
    first, later = patch_stripes(frames[:17], patch), patch_stripes(frames[17:], patch)
    assert patch == 16 and later < max(2.0 * first, 2.5), (first, later)
    colour = frames.mean((1, 2)) * 255  # F×3
    tint = (colour[17:25] - colour[16]).abs().max().item()
    assert tint < 10.0, tint


@tiny
def test_streamed_decode_matches_the_whole_decode_chunk_by_chunk(tiny_world):
    vae = tiny_world[2]
    latent = torch.randn(2, 12, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    whole = torch.cat([video_to_frames(vae.decode(item)) for item in latent.split(1)])
    chunks = list(vae.decode_frames(latent))
    assert [len(c) for c in chunks] == [1, 4, 4, 1, 4, 4]
    assert torch.equal(torch.cat(chunks), whole)
    stream = vae.decode_frames(latent)
    assert torch.equal(next(stream), whole[:1])  # decoded when asked for: the first frame alone
    assert torch.is_grad_enabled()  # between chunks the caller's autograd state is its own


@tiny
def test_a_long_video_latent_is_decoded_window_by_window_after_each_opening(tiny_world):
    vae = tiny_world[2]
    generator = torch.Generator().manual_seed(2)
    latent, openings = (
        torch.randn(2, 12, 8, 8, 8, generator=generator),
        torch.randn(2, 12, 2, 8, 8, generator=generator),
    )
    named = {"samples": latent, WINDOWS_KEY: windows_entry(8, 5, 2, 4, openings)}
    assert decode_steps(named) == 2 * (8 + 2)
    for item in range(2):  # window 0: latent frames 0..4; window 1: its opening, then latent frames 5..7
        first = torch.cat(list(vae.decode_frames(latent[item : item + 1, :, :5])))
        second = torch.cat(
            list(vae.decode_frames(torch.cat([openings[item : item + 1], latent[item : item + 1, :, 5:]], 2)))
        )
        assert len(first) == 17 and len(second) == 17  # the opening's 5 frames are left out: 12 new
        expected = torch.cat(list(spread_joins([first, second[5:]], [17])))  # frame 17 is the join
        for decoded in (
            torch.cat(list(decode_long_video(named, vae.decode_frames)))[29 * item : 29 * (item + 1)],
            torch.cat(list(_frames(None, named, vae)().chunks))[29 * item : 29 * (item + 1)],
            SpacetimeVAEDecode().decode(vae, named)[0][29 * item : 29 * (item + 1)],
        ):
            assert torch.equal(decoded, expected)
    plain = torch.cat(list(vae.decode_frames(latent)))
    assert torch.equal(torch.cat(list(_frames(None, {"samples": latent}, vae)().chunks)), plain)
    # a node trimmed or cropped the latent and kept the key: the windows no longer apply
    for changed in (latent[:, :, 1:], latent[:, :, :, :4]):
        assert torch.equal(
            torch.cat(list(_frames(None, {**named, "samples": changed}, vae)().chunks)),
            torch.cat(list(vae.decode_frames(changed))),
        )


@tiny
def test_generate_decodes_each_window_once_and_writes_what_the_long_video_latent_decodes_to(
    tiny_world, monkeypatch
):
    """`generate` decodes each window once, for the next window's opening and for its own new frames (the
    Long Video node's graph decodes the windows before each opening, then Video Combine decodes every
    window again): the same frames, exactly, with one progress bar over both."""
    dit, text_encoder, vae = tiny_world
    settings = replace(TINY_WORLD_SETTINGS, frames=33, steps=2, seed=3)  # 9 latent frames: 3 windows
    prompt = "a pink cross moving down on a striped background"
    positive, negative = encode_prompt(text_encoder, prompt, "", settings.cfg)
    sigmas = schedule_by_name(settings.schedule)(settings.steps, shift=settings.shift)
    latent, openings = long_video_latent(
        long_video_windows(
            Guider(dit, positive, negative, settings.cfg),
            Sampling(sigmas, settings.solver, seed=3),
            (1, 12, 9, 16, 16),
            Windows(5, 2, 4),
            Codec(vae.encode, vae.decode),
        )
    )
    named = {"samples": latent, WINDOWS_KEY: windows_entry(9, 5, 2, 4, openings)}
    expected = torch.cat(list(decode_long_video(named, vae.decode_frames)))

    decoded, bars, ticks = [], [], []
    real_decode = vae.decode
    monkeypatch.setattr(
        vae, "decode", lambda latent, *a, **k: decoded.append(latent) or real_decode(latent, *a, **k)
    )

    def progress(description, total):
        bars.append((description, total))
        return lambda: ticks.append(1)

    stream = long_video(dit, text_encoder, vae, prompt, "", settings, progress=progress)
    frames = torch.cat(list(stream.chunks))
    assert stream.count == 33 and frames.shape == (33, 128, 128, 3)
    assert torch.equal(frames, expected)
    assert [d.shape[2] for d in decoded] == [5, 5, 3]  # each window once: 5, its opening 2 + 3 new, 2 + 1
    assert bars == [("Long video, 3 windows", 3 * 2 + 9 + 2 * 2)] and len(ticks) == bars[0][1]


def test_combine_writes_a_stream_as_it_arrives_and_checks_its_length(output_dir: Path):
    chunks = [torch.rand(n, 16, 16, 3, generator=torch.Generator().manual_seed(n)) for n in (1, 4, 4)]
    saved = combine_video(
        FrameStream(9, 16, 16, iter(chunks)), 16.0, output_dir, provenance=Provenance(watermark=False)
    )
    assert decode(saved.path).frames.shape == (9, 16, 16, 3)
    with pytest.raises(ValueError, match="promised 10 frames and gave only 9"):
        combine_video(FrameStream(10, 16, 16, iter(chunks)), 16.0, output_dir)
    with pytest.raises(ValueError, match="ping-pong and loop_count need the frames kept"):
        combine_video(
            FrameStream(9, 16, 16, iter(chunks)), 16.0, output_dir, encoding=Encoding(pingpong=True)
        )


@tiny
def test_generate_makes_a_video_longer_than_one_window(tmp_path: Path):
    result = run("generate", "a blue square moving right", "--frames", "29", "--steps", "2", output=tmp_path)
    assert result.returncode == 0, result.stderr
    video = decode(Path(result.stdout.strip().splitlines()[-1]))
    assert video.frames.shape == (29, 128, 128, 3) and video.frames.std() > 5


@tiny
def test_a_streamed_decode_refuses_a_bad_latent_before_anything_is_written(tiny_world):
    latent = torch.zeros(1, 12, 2, 4, 4)
    latent[0, 0, 1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        tiny_world[2].decode_frames(latent)  # raised on the call, not on the first frame
