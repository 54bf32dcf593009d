"""Tiny World, the model the pack ships: its files load through the real loaders, the default command
writes a video, a trained VAE tiles without seams, and generated videos show what their held-out
prompts ask (a small seeded subset of the README's evaluation, with a fixed threshold)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spacetime.pipeline import TINY_WORLD_DIR, TINY_WORLD_FILES, load_tiny_world
from spacetime.training.world import render, sample_scene
from spacetime.vae import frames_to_video, video_to_frames

from media import decode, psnr, to_uint8
from test_cli import run

# A floor below issue 7's targets (95% / 90% / 85%) that broken weights fall through; the README's 64-prompt
# figures are the measurement. Set at colour 6, motion 4, shape 4 of 8 for the weights shipped until
# 2026-12-07 (they read 7, 6, 4); the shape floor was lowered to 2 of 8 with the weights after them, which
# read 7, 4, 2 here while both read 16 shapes of 64 (25%) on this seed's 64 prompts (colour 57, then 61;
# motion 40, then 39): 4 of 8 was above either model's level, and the subset is too small to split them.
SUBSET, MIN_COLOUR, MIN_MOTION, MIN_SHAPE = 8, 0.75, 0.5, 0.25

if not all((TINY_WORLD_DIR / name).is_file() for name in TINY_WORLD_FILES.values()):
    pytest.skip(f"Tiny World's weights are missing from {TINY_WORLD_DIR}", allow_module_level=True)


@pytest.fixture(scope="module")
def tiny_world():
    return load_tiny_world(device="cpu")


def test_weights_ship_in_the_loader_formats_within_40_mb(tiny_world):
    dit, text_encoder, vae = tiny_world
    total = sum((TINY_WORLD_DIR / name).stat().st_size for name in TINY_WORLD_FILES.values())
    assert total <= 40 * 2**20
    assert dit.config.clean_pins and dit.config.text_len == 64 and dit.config.num_heads == 3
    assert vae.latent_channels == 12 and vae.spatial_stride == 8 and vae.temporal_stride == 4
    assert text_encoder.tokenizer.vocab_size == text_encoder.model.config.vocab_size


def test_trained_vae_reconstructs_and_tiles_without_seams(tiny_world):
    _, _, vae = tiny_world
    frames = render(sample_scene(np.random.default_rng(123), "heldout"), 17, 128, 128)
    video = frames_to_video(torch.from_numpy(frames).float() / 255)
    latent = vae.encode(video)
    whole = vae.decode(latent)
    tiled = vae.decode(latent, tile=64, overlap=32)
    assert psnr(frames, to_uint8(video_to_frames(whole))) > 25
    assert psnr(to_uint8(video_to_frames(whole)), to_uint8(video_to_frames(tiled))) >= 40


def test_generate_writes_a_tiny_world_video_by_default(tmp_path: Path):
    result = run("generate", "a red circle moving left on a blue background", "--steps", "4", output=tmp_path)
    assert result.returncode == 0, result.stderr
    video = decode(Path(result.stdout.strip().splitlines()[-1]))
    assert video.frames.shape == (17, 128, 128, 3)
    assert video.frames.std() > 5


def test_held_out_prompts_show_their_colour_shape_and_motion():
    pytest.importorskip("cv2")
    from spacetime.training.evaluate import evaluate_many, generate_heldout

    videos, targets, _ = generate_heldout(SUBSET, seed=1000)
    scores = evaluate_many(videos, targets)
    assert scores["colour"] >= MIN_COLOUR, scores
    assert scores["motion"] >= MIN_MOTION, scores
    assert scores["shape"] >= MIN_SHAPE, scores


def test_round_trip_scores_rendered_clips_through_the_vae(tmp_path: Path):
    """`evaluate --ground-truth N --round-trip`: the VAE's ceiling for any DiT in its latents."""
    pytest.importorskip("cv2")
    from spacetime.training.evaluate import _ground_truth, evaluate_many, main, round_trip

    videos, targets = _ground_truth(3, 9, 128, seed=0)
    decoded = round_trip(videos)
    assert [d.shape for d in decoded] == [v.shape for v in videos] and decoded[0].dtype == np.uint8
    assert 24 < psnr(np.stack(videos), np.stack(decoded)) < 60  # changed by the VAE, but close
    assert evaluate_many(decoded, targets)["colour"] == 1.0
    with pytest.raises(FileNotFoundError, match="No Tiny World VAE at"):
        round_trip(videos, tmp_path)
    with pytest.raises(SystemExit):
        main(["--round-trip"])  # rendered clips only


def test_other_tiny_world_weights_load_from_their_folder(tmp_path: Path, tiny_world):
    with pytest.raises(FileNotFoundError, match="lacks Tiny World files"):
        load_tiny_world(device="cpu", folder=tmp_path)
    for name in TINY_WORLD_FILES.values():
        (tmp_path / name).symlink_to(TINY_WORLD_DIR / name)
    dit, _, _ = load_tiny_world(device="cpu", folder=tmp_path)
    assert torch.equal(dit.head.head.weight, tiny_world[0].head.head.weight)
