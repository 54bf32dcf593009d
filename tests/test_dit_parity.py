"""Parity with diffusers' WanTransformer3DModel (reference) on tiny random Wan checkpoints written
in the original key format and loaded through our loader: relative error <= 1e-5 in fp32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spacetime.dit import load_dit

from numerics import relative_error, scaled_fp8
from wan_reference import FLF2V, I2V, I2V_22, T2V, TI2V, diffusers_reference, random_wan_state_dict, write

pytest.importorskip("diffusers", reason="parity tests need the test extra: pip install -e '.[test]'")
TOLERANCE = 1e-5


def inputs(config, frames=3, height=8, width=12, batch=2, text_tokens=512, seed=1):
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(batch, config.in_channels, frames, height, width, generator=generator)
    context = torch.randn(batch, text_tokens, config.text_dim, generator=generator)
    # Wan pads the text with zeros to 512 tokens: real rows first, zeros after.
    context[:, 7:] = 0
    return latent, context


def reference_velocity(config, state, latent, timestep, context):
    with torch.no_grad():
        return diffusers_reference(config, state)(latent, timestep, context, return_dict=False)[0]


def test_t2v_matches_diffusers(tmp_path: Path):
    state = random_wan_state_dict(T2V)
    model = load_dit(write(state, tmp_path / "wan_t2v.safetensors"))
    latent, context = inputs(T2V)
    timestep = torch.tensor([999.0, 250.0])
    with torch.no_grad():
        ours = model(latent, timestep, context[:, :7])  # our DiT pads to 512 itself
    reference = reference_velocity(T2V, state, latent, timestep, context)
    assert ours.shape == latent.shape
    assert relative_error(ours, reference) <= TOLERANCE


def test_ti2v_per_token_timesteps_match_diffusers(tmp_path: Path):
    """Wan 2.2 TI2V: the first latent frame is clean (t = 0), the rest noisy, one timestep per token."""
    state = random_wan_state_dict(TI2V, seed=3)
    model = load_dit(write(state, tmp_path / "wan_ti2v.safetensors"))
    latent, context = inputs(TI2V, frames=3, height=8, width=8)
    tokens_per_frame = (8 // 2) * (8 // 2)
    timestep = torch.full((2, 3 * tokens_per_frame), 700.0)
    timestep[:, :tokens_per_frame] = 0.0
    with torch.no_grad():
        ours = model(latent, timestep, context)
    reference = reference_velocity(TI2V, state, latent, timestep, context)
    assert relative_error(ours, reference) <= TOLERANCE
    # Per-token timesteps are not a no-op: the same call with one timestep differs.
    with torch.no_grad():
        uniform = model(latent, torch.tensor([700.0, 700.0]), context)
    assert relative_error(uniform, ours) > 1e-3


def test_scaled_fp8_matches_reference_on_dequantised_weights(tmp_path: Path):
    state = random_wan_state_dict(T2V, seed=5)
    file_tensors, dequantised = scaled_fp8(
        state, lambda key, value: key.startswith("blocks.") and value.ndim == 2
    )
    model = load_dit(
        write(file_tensors, tmp_path / "wan_fp8_scaled.safetensors"), compute_dtype=torch.float32
    )
    assert model.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn  # stays fp8 in memory
    scales = [name for name, _ in model.named_buffers() if name.endswith("scale_weight")]
    assert "blocks.0.self_attn.q.scale_weight" in scales  # a buffer: it moves with model.to(device)
    latent, context = inputs(T2V)
    timestep = torch.tensor([600.0, 600.0])
    with torch.no_grad():
        ours = model(latent, timestep, context)
    reference = reference_velocity(T2V, dequantised, latent, timestep, context)
    assert relative_error(ours, reference) <= TOLERANCE
    # Dequantising at load time (weight_dtype fp32) computes the same thing.
    wide = load_dit(tmp_path / "wan_fp8_scaled.safetensors", weight_dtype=torch.float32)
    assert wide.blocks[0].self_attn.q.weight.dtype == torch.float32
    assert not [name for name, _ in wide.named_buffers() if name.endswith("scale_weight")]
    with torch.no_grad():
        assert relative_error(wide(latent, timestep, context), reference) <= TOLERANCE


def image_features(config, batch=2, tokens=5, seed=4):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, config.image_tokens or tokens, config.image_dim, generator=generator)


@pytest.mark.parametrize("config", [I2V_22, I2V, FLF2V], ids=["wan22_i2v", "wan21_i2v", "wan21_flf2v"])
def test_image_to_video_models_match_diffusers(config, tmp_path: Path):
    """Wan's image-to-video transformers: 36 input channels (noisy latent, mask, known frames' latent);
    Wan 2.1's with the CLIP features through img_emb and a second key/value pair in every cross-attention;
    FLF2V's with a positional embedding over both images' tokens (our features are the two images' side by
    side, B×2·257×C, as ComfyUI passes them; diffusers takes them as 2B×257×C)."""
    state = random_wan_state_dict(config, seed=5)
    model = load_dit(write(state, tmp_path / "wan_i2v.safetensors"))
    assert model.config.in_channels == 36 and model.config.out_channels == 16
    assert (model.config.image_dim, model.config.image_tokens) == (config.image_dim, config.image_tokens)
    latent, context = inputs(config)
    timestep = torch.tensor([999.0, 250.0])
    features = image_features(config) if config.image_dim else None
    with torch.no_grad():
        ours = model(latent, timestep, context[:, :7], features)
        reference_model = diffusers_reference(config, state)
        images = None
        if features is not None:
            images = features.reshape(-1, 5, config.image_dim) if config.image_tokens else features
        reference = reference_model(latent, timestep, context, images, return_dict=False)[0]
    assert ours.shape == (2, 16, *latent.shape[2:])
    assert relative_error(ours, reference) <= TOLERANCE
    if features is not None:  # the image is read: other features, another velocity
        with torch.no_grad():
            other = model(latent, timestep, context[:, :7], image_features(config, seed=9))
        assert relative_error(other, ours) > 1e-3


def test_image_to_video_models_refuse_missing_or_unexpected_image_features(tmp_path: Path):
    i2v = load_dit(write(random_wan_state_dict(I2V), tmp_path / "i2v.safetensors"))
    t2v = load_dit(write(random_wan_state_dict(T2V), tmp_path / "t2v.safetensors"))
    flf = load_dit(write(random_wan_state_dict(FLF2V), tmp_path / "flf.safetensors"))
    latent, context = inputs(I2V)
    timestep = torch.tensor([999.0, 250.0])
    with pytest.raises(ValueError, match="reads CLIP image features"):
        i2v(latent, timestep, context)
    with pytest.raises(ValueError, match="takes no CLIP image features"):
        t2v(inputs(T2V)[0], timestep, context, image_features(I2V))
    with pytest.raises(ValueError, match=r"expected 1×I×80 or 2×I×80"):
        i2v(latent, timestep, context, torch.zeros(2, 5, 64))
    with pytest.raises(ValueError, match="takes 10, the features of its first and last images"):
        flf(latent, timestep, context, image_features(I2V, tokens=5))
    with pytest.raises(ValueError, match="expects B×36×T×H×W"):
        i2v(inputs(T2V)[0], timestep, context, image_features(I2V))


def test_scaled_fp8_image_to_video_model_matches_reference_on_dequantised_weights(tmp_path: Path):
    """Wan 2.1 I2V in ComfyUI's scaled fp8: the blocks' projections (k_img, v_img among them) and the image
    projection stay fp8 with their scales, and the model computes what diffusers computes on the
    dequantised weights."""
    state = random_wan_state_dict(I2V, seed=6)
    file_tensors, dequantised = scaled_fp8(
        state,
        lambda key, value: (
            key.startswith(("blocks.", "img_emb.proj.1", "img_emb.proj.3")) and value.ndim == 2
        ),
    )
    model = load_dit(write(file_tensors, tmp_path / "wan_i2v_fp8.safetensors"), compute_dtype=torch.float32)
    assert model.blocks[0].cross_attn.k_img.weight.dtype == torch.float8_e4m3fn
    assert model.img_emb.proj[1].weight.dtype == torch.float8_e4m3fn
    latent, context = inputs(I2V)
    timestep, features = torch.tensor([600.0, 600.0]), image_features(I2V)
    with torch.no_grad():
        ours = model(latent, timestep, context, features)
        reference = diffusers_reference(I2V, dequantised)(
            latent, timestep, context, features, return_dict=False
        )[0]
    assert relative_error(ours, reference) <= TOLERANCE
