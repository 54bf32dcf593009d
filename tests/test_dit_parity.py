"""Parity with diffusers' WanTransformer3DModel (reference) on tiny random Wan checkpoints written
in the original key format and loaded through our loader: relative error <= 1e-5 in fp32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spacetime.dit import load_dit

from numerics import relative_error, scaled_fp8
from wan_reference import T2V, TI2V, diffusers_reference, random_wan_state_dict, write

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
