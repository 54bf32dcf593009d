"""Text to video end to end with tiny random-weight models: the library function, the same path through
the node functions as ComfyUI calls them, and `python -m spacetime generate`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spacetime.dit import load_dit
from spacetime.nodes import NODE_CLASS_MAPPINGS as NODES
from spacetime.pipeline import Settings, text_to_video
from spacetime.text_encoders import load_text_encoder
from spacetime.vae import load_vae

from media import decode
from test_cli import run
from tiny_models import DIT_FILE, TEXT_ENCODER_FILE, VAE_FILE, write_tiny_models

SETTINGS = Settings(width=32, height=32, frames=5, steps=3, cfg=4.0, shift=3.0, seed=42, solver="unipc")
PROMPT, NEGATIVE = "a red circle moving left", "blurry"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    write_tiny_models(folder)
    return folder


@pytest.fixture(scope="module")
def library_frames(models) -> torch.Tensor:
    dit = load_dit(models / "diffusion_models" / DIT_FILE)
    text_encoder = load_text_encoder(models / "text_encoders" / TEXT_ENCODER_FILE)
    vae = load_vae(models / "vae" / VAE_FILE)
    return text_to_video(dit, text_encoder, vae, PROMPT, NEGATIVE, SETTINGS)


def test_library_makes_frames_that_depend_on_prompt_and_seed(models, library_frames):
    assert library_frames.shape == (5, 32, 32, 3)
    assert library_frames.min() >= 0 and library_frames.max() <= 1 and library_frames.std() > 0.01
    dit = load_dit(models / "diffusion_models" / DIT_FILE)
    text_encoder = load_text_encoder(models / "text_encoders" / TEXT_ENCODER_FILE)
    vae = load_vae(models / "vae" / VAE_FILE)
    other_seed = text_to_video(
        dit, text_encoder, vae, PROMPT, NEGATIVE, Settings(**{**vars(SETTINGS), "seed": 43})
    )
    other_prompt = text_to_video(dit, text_encoder, vae, "a blue star", NEGATIVE, SETTINGS)
    assert (other_seed - library_frames).abs().mean() > 1e-3
    assert (other_prompt - library_frames).abs().mean() > 1e-4


def test_nodes_chain_gives_the_library_result_and_a_video(models, library_frames, tmp_path, monkeypatch):
    monkeypatch.setenv("SPACETIME_MODELS_DIR", str(models))
    monkeypatch.setenv("SPACETIME_OUTPUT_DIR", str(tmp_path / "output"))

    def node(name, *args, **kwargs):
        instance = NODES[name]()
        return getattr(instance, instance.FUNCTION)(*args, **kwargs)

    (text_encoder,) = node(
        "SpacetimeTextEncoderLoader", "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "default", "auto"
    )
    positive, negative = node("SpacetimeTextEncode", text_encoder, PROMPT, NEGATIVE)
    (vae,) = node("SpacetimeVAELoader", "wan_2.1_vae.safetensors", "fp32")
    (latent,) = node("SpacetimeEmptyLatentVideo", vae, 32, 32, 5, 1)
    (dit,) = node("SpacetimeDiTLoader", "wan2.1_t2v_1.3B_fp16.safetensors", "default", "auto")
    (patches,) = node("SpacetimePatchifier", dit, latent)
    (sigmas,) = node("SpacetimeScheduler", "simple", 3, 3.0, 1.0)
    (patches,) = node("SpacetimeDiTDenoiser", dit, positive, negative, patches, sigmas, "unipc", 4.0, 42)
    (latent,) = node("SpacetimeUnpatchify", patches)
    (images,) = node("SpacetimeVAEDecode", vae, latent)
    torch.testing.assert_close(images, library_frames, rtol=0, atol=1e-5)

    result = node("SpacetimeVideoCombine", images, 8.0, 0, "t2v", "video/h264-mp4", False, 19, "medium", True)
    path = Path(result["result"][0])
    video = decode(path)
    assert path.is_relative_to(tmp_path / "output") and video.frames.shape == (5, 32, 32, 3)
    assert abs(video.frames.mean() / 255 - float(library_frames.mean())) < 0.02


def test_generate_command_writes_the_same_video(models, library_frames, tmp_path):
    args = [
        "generate", PROMPT, "--negative-prompt", NEGATIVE,
        "--dit", str(models / "diffusion_models" / "wan2.1_t2v_1.3B_fp16.safetensors"),
        "--text-encoder", str(models / "text_encoders" / "umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
        "--vae", str(models / "vae" / "wan_2.1_vae.safetensors"),
        "--width", "32", "--height", "32", "--frames", "5", "--steps", "3", "--cfg", "4", "--shift", "3",
        "--seed", "42", "--solver", "unipc", "--format", "video/ffv1-mkv", "--device", "cpu", "--no-watermark",
        "--dtype", "fp32",
    ]  # fmt: skip
    result = run(*args, output=tmp_path)
    assert result.returncode == 0, result.stderr
    video = decode(Path(result.stdout.strip().splitlines()[-1]))
    expected = library_frames.mul(255).round().byte().numpy()
    assert video.frames.shape == expected.shape
    assert abs(video.frames.astype(int) - expected.astype(int)).max() <= 1  # FFV1 is lossless


def test_generate_with_some_model_files_says_what_else_it_needs(models, tmp_path):
    result = run(
        "generate", "a cat", "--dit", str(models / "diffusion_models" / "x.safetensors"), output=tmp_path
    )
    assert result.returncode == 2 and "also give --text-encoder, --vae" in result.stderr
    assert "Traceback" not in result.stderr


def test_long_video_with_the_wan_2_1_formats_decodes_alike_through_both_nodes(models):
    """Long Video on Wan 2.1's file formats (16 latent channels, 8x8 pixels a cell, no clean-frame
    timesteps: its openings are held by noising them to each step's level), two windows."""
    dit = load_dit(models / "diffusion_models" / DIT_FILE)
    text_encoder = load_text_encoder(models / "text_encoders" / TEXT_ENCODER_FILE)
    vae = load_vae(models / "vae" / VAE_FILE)
    assert not dit.config.clean_pins and vae.latent_channels == 16
    positive, negative = NODES["SpacetimeTextEncode"]().encode(text_encoder, PROMPT, NEGATIVE)
    (sigmas,) = NODES["SpacetimeScheduler"]().schedule("simple", 2, 3.0, 1.0)
    (latent,) = NODES["SpacetimeLongVideo"]().sample(
        dit, vae, positive, negative, sigmas, 32, 32, 29, 17, 8, 1.0, "euler", 4.0, 0
    )
    assert latent["samples"].shape == (1, 16, 8, 4, 4)  # 29 frames: 5 latent frames, then 3 more
    assert latent["spacetime_windows"]["openings"].shape == (1, 16, 2, 4, 4)
    (images,) = NODES["SpacetimeVAEDecode"]().decode(vae, latent)
    first = torch.cat(list(vae.decode_frames(latent["samples"][:, :, :5])))  # the first window as it is
    assert images.shape == (29, 32, 32, 3) and torch.equal(images[:17], first)
    assert images[17:].std() > 0.01
