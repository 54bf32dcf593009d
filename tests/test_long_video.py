"""Long videos: windows chain in latent space (the first window is plain text to video; later ones
continue from the last frames), colour statistics are matched between windows, the VAE streams frames
to the encoder as it decodes them, and `generate` writes a video longer than one window that way."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from spacetime.nodes.video_combine import _frames
from spacetime.pipeline import (
    TINY_WORLD_DIR,
    TINY_WORLD_FILES,
    TINY_WORLD_SETTINGS,
    encode_prompt,
    load_tiny_world,
    sample_latent,
)
from spacetime.samplers.frames import spread_joins
from spacetime.samplers.long_video import (
    JOINS_KEY,
    joins_entry,
    long_video_latent,
    match_mean,
    window_count,
    window_joins,
)
from spacetime.samplers.schedules import schedule_by_name
from spacetime.vae import video_to_frames
from spacetime.video import combine_video
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
    assert joins_entry(9, 5, 2) == {"latent_frames": 9, "at": [5, 8]}
    assert window_joins(241, 5, 2)[-1] == 5 + 78 * 3
    with pytest.raises(ValueError, match="overlap of at least 1 and less than the window"):
        window_count(10, 5, 5)


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
    dit, text_encoder, _ = tiny_world
    settings = replace(TINY_WORLD_SETTINGS, steps=3, solver="euler", seed=4)
    positive, negative = encode_prompt(text_encoder, "a green star moving up", "", settings.cfg)
    sigmas = schedule_by_name("simple")(3, shift=3.0)
    calls = []
    latent = long_video_latent(
        dit, (1, 12, 9, 16, 16), sigmas, positive, negative, window=5, overlap=2, cfg=settings.cfg,
        seed=4, solver="euler", window_callback=lambda index, count: calls.append((index, count)),
    )  # fmt: skip
    assert latent.shape == (1, 12, 9, 16, 16) and calls == [(0, 3), (1, 3), (2, 3)]
    alone = sample_latent(dit, torch.zeros(1, 12, 5, 16, 16), positive, negative, settings, sigmas=sigmas)
    assert torch.allclose(latent[:, :, :5], alone, atol=1e-5)  # window 0: the plain 17-frame video
    assert latent[:, :, 5:].std() > 0.3  # later windows generated something, not zeros


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
def test_video_combine_spreads_the_window_joins_a_long_video_latent_names(tiny_world):
    vae = tiny_world[2]
    latent = torch.randn(1, 12, 6, 8, 8, generator=torch.Generator().manual_seed(2))
    plain = torch.cat(list(vae.decode_frames(latent)))
    named = {"samples": latent, JOINS_KEY: {"latent_frames": 6, "at": [3]}}
    spread = torch.cat(list(_frames(None, named, vae)().chunks))
    join = vae.frames_for(3)  # latent frame 3 begins at frame 9
    changed = (spread != plain).flatten(1).any(1).nonzero().flatten().tolist()
    assert join == 9 and changed == [9, 10, 11, 12]  # the join's frame and the 3 after it (blend 4)
    assert torch.equal(spread, torch.cat(list(spread_joins(plain.split(4), [join]))))
    assert torch.equal(torch.cat(list(_frames(None, {"samples": latent}, vae)().chunks)), plain)
    trimmed = {**named, "samples": latent[:, :, 1:]}  # a node trimmed the latent and kept the key
    assert torch.equal(
        torch.cat(list(_frames(None, trimmed, vae)().chunks)),
        torch.cat(list(vae.decode_frames(latent[:, :, 1:]))),
    )


def test_combine_writes_a_stream_as_it_arrives_and_checks_its_length(output_dir: Path):
    chunks = [torch.rand(n, 16, 16, 3, generator=torch.Generator().manual_seed(n)) for n in (1, 4, 4)]
    saved = combine_video(FrameStream(9, 16, 16, iter(chunks)), 16.0, output_dir, watermark=False)
    assert decode(saved.path).frames.shape == (9, 16, 16, 3)
    with pytest.raises(ValueError, match="promised 10 frames and gave only 9"):
        combine_video(FrameStream(10, 16, 16, iter(chunks)), 16.0, output_dir)
    with pytest.raises(ValueError, match="ping-pong and loop_count need the frames kept"):
        combine_video(FrameStream(9, 16, 16, iter(chunks)), 16.0, output_dir, pingpong=True)


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
