"""The Tiny World LoRA's trainer: its clips show yellow objects under their usual captions, and a short run
writes a kohya-layout LoRA that loads onto Tiny World and changes what it makes."""

from __future__ import annotations

from pathlib import Path

import torch

from spacetime.lora import load_lora
from spacetime.pipeline import load_tiny_world
from spacetime.training.evaluate import evaluate_video
from spacetime.training.lora_stage import LAYERS, TOP_LAYERS, recoloured_clips, train_lora


def test_the_training_clips_show_yellow_objects_under_their_own_captions():
    frames, captions, masks = recoloured_clips(seed=3, count=4)
    assert masks.shape == (4, 17, 128, 128) and masks.any(axis=(1, 2, 3)).all()
    assert frames.shape == (4, 17, 128, 128, 3)
    colours = ("red", "orange", "green", "cyan", "blue", "purple", "pink")
    assert any(any(colour in text for colour in colours) for text in captions)  # captions keep their colours
    assert all(evaluate_video(clip, {"colour": "yellow"})["colour_ok"] for clip in frames)


def test_a_short_run_writes_a_kohya_lora_that_changes_tiny_world(tmp_path: Path):
    path = train_lora(tmp_path, steps=2, clips=4, batch=2, rank=2)
    dit = load_tiny_world()[0]
    lora = load_lora(path, dit)
    assert lora.parameters == len(LAYERS) * len(dit.blocks) + len(TOP_LAYERS)
    assert next(iter(lora.patches.values()))[0].up.abs().sum() > 0  # trained away from its zero start
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(1, dit.config.in_channels, 2, 8, 8, generator=generator)
    context = torch.randn(1, 6, dit.config.text_dim, generator=generator)
    with torch.no_grad():
        plain = dit(latent, torch.tensor([500.0]), context)
        changed = dit.with_lora(lora, 1.0)(latent, torch.tensor([500.0]), context)
    assert not torch.equal(plain, changed)
