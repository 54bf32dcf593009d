"""The Wan 2.2 causal VAE (48 channels, 4x16x16): parity with diffusers' AutoencoderKLWan(is_residual=True)
through a file in Wan 2.2's own key format, detection, sizes, chunked and tiled decoding, nodes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spacetime.nodes.vae import SpacetimeEmptyLatentVideo, SpacetimeVAEDecode, SpacetimeVAEEncode
from spacetime.vae import WAN22, Wan21VAE, Wan21VAEConfig, Wan22VAE, Wan22VAEConfig, load_vae
from spacetime.vae.loader import config_from_shapes

from numerics import relative_error
from wan_vae_reference import TINY_21, TINY_22, diffusers_vae22, random_vae_state_dict, wan22_state_dict

pytest.importorskip("diffusers", reason="parity tests need the test extra")
TOLERANCE = 1e-4  # fp32, against diffusers 0.42


@pytest.fixture(scope="module")
def reference():
    return diffusers_vae22(TINY_22, seed=0)


@pytest.fixture(scope="module")
def vae_file(reference, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vae22") / "wan2.2_vae_tiny.safetensors"
    save_file(wan22_state_dict(reference, TINY_22.num_res_blocks), str(path))
    return path


@pytest.fixture(scope="module")
def vae(vae_file):
    return load_vae(vae_file)


def video(frames=9, height=48, width=64, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, height, width, generator=generator) * 2 - 1


def latent(frames=3, height=3, width=4, seed=2):
    return torch.randn(1, 48, frames, height, width, generator=torch.Generator().manual_seed(seed))


def test_the_file_is_read_as_the_wan22_vae(vae):
    assert isinstance(vae.model, Wan22VAE) and vae.model.config == TINY_22
    assert (vae.temporal_stride, vae.spatial_stride, vae.latent_channels) == (4, 16, 48)
    assert vae.latent_format is WAN22


@pytest.mark.parametrize("frames", [1, 9])
def test_encode_matches_diffusers(vae, reference, frames):
    clip = video(frames=frames)
    encoded = vae.encode(clip)
    with torch.no_grad():
        expected = reference.encode(clip).latent_dist.mode()
    assert encoded.shape == (1, 48, (frames - 1) // 4 + 1, 3, 4)
    assert relative_error(encoded, expected) <= TOLERANCE


@pytest.mark.parametrize("frames", [1, 3])
def test_decode_matches_diffusers(vae, reference, frames):
    z = latent(frames=frames)
    decoded = vae.decode(z)
    with torch.no_grad():
        expected = reference.decode(z).sample
    assert decoded.shape == (1, 3, 4 * frames - 3, 48, 64)
    assert (
        decoded.abs().lt(1.0).float().mean() > 0.5
    )  # most pixels are not clamped: the comparison means something
    assert relative_error(decoded, expected) <= TOLERANCE


def test_decoding_chunk_by_chunk_hands_over_the_same_frames(vae):
    z = latent(frames=4, height=2, width=2, seed=3)
    chunks = []
    assert vae.decode(z, sink=chunks.append) is None
    assert [chunk.shape[2] for chunk in chunks] == [1, 4, 4, 4]  # the first frame, then four per latent frame
    assert torch.equal(torch.cat(chunks, dim=2), vae.decode(z))


def full_size_shapes(model_class, config) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in model_class(config).state_dict().items()}


@pytest.mark.parametrize(
    "model_class,config",
    [
        (Wan22VAE, Wan22VAEConfig()),
        (Wan22VAE, TINY_22),
        (Wan21VAE, Wan21VAEConfig()),
        (Wan21VAE, TINY_21),
        (Wan21VAE, Wan21VAEConfig(dim=16, z_dim=8, num_res_blocks=1)),  # Tiny World's VAE
        (Wan21VAE, Wan21VAEConfig(dim=8, dim_mult=(1, 2, 2), temporal_downsample=(True, True))),
    ],
    ids=["wan22", "wan22-tiny", "wan21", "wan21-tiny", "tiny-world", "wan21-three-stages"],
)
def test_the_config_is_read_from_the_tensors(model_class, config):
    assert config_from_shapes(full_size_shapes(model_class, config), "vae.safetensors") == config


def test_the_real_wan22_vae_has_the_released_strides():
    config = config_from_shapes(full_size_shapes(Wan22VAE, Wan22VAEConfig()), "wan2.2_vae.safetensors")
    assert (config.dim, config.decoder_dim, config.z_dim, config.pixel_channels) == (160, 256, 48, 12)
    assert (config.temporal_stride, config.spatial_stride) == (4, 16)


def test_latents_of_the_other_vae_are_refused(vae, tmp_path: Path):
    with pytest.raises(ValueError, match=r"expects B×48×T×H×W\. It looks like a Wan 2\.1 VAE latent"):
        vae.decode(torch.zeros(1, 16, 2, 4, 4))
    save_file(random_vae_state_dict(TINY_21), str(tmp_path / "wan_2.1_vae.safetensors"))
    with pytest.raises(ValueError, match=r"expects B×16×T×H×W\. It looks like a Wan 2\.2 VAE latent"):
        load_vae(tmp_path / "wan_2.1_vae.safetensors").decode(torch.zeros(1, 48, 2, 4, 4))


@pytest.mark.parametrize(
    "frames,height,width,message",
    [
        (9, 40, 64, "height=40 must be a multiple of 16 .* use 32 or 48"),
        (9, 48, 8, r"width=8 is below the smallest size this VAE makes, 16 pixels \(its stride\): use 16"),
        (9, 24, 64, "height=24 must be a multiple of 16 .* use 16 or 32"),
        (7, 48, 64, r"frames=7 must be 4k\+1 .* use 5 or 9"),
    ],
)
def test_invalid_sizes_name_the_nearest_multiples_of_16(vae, frames, height, width, message):
    with pytest.raises(ValueError, match=message):
        vae.latent_shape(frames, height, width)


def test_encode_refuses_sizes_of_the_wan21_stride(vae):
    with pytest.raises(ValueError, match="height=40 must be a multiple of 16"):
        vae.encode(video(frames=1, height=40, width=64))


def test_one_tile_covering_the_frame_is_the_untiled_decode(vae):
    z = latent(frames=2)
    assert torch.equal(vae.decode(z, tile=64, overlap=16), vae.decode(z))


def test_tiled_decode_has_the_full_size_and_stays_close(vae):
    z = latent(frames=2, height=6, width=8, seed=7)
    whole, tiled = vae.decode(z), vae.decode(z, tile=96, overlap=32)  # two tiles side by side
    assert tiled.shape == whole.shape == (1, 3, 5, 96, 128)
    # Random weights mix distant pixels far more than a trained VAE, so only a loose bound holds here
    # (0.23 measured; misplaced tiles give about 1.5).
    assert 0 < relative_error(tiled, whole) < 0.5


def test_tiles_must_be_multiples_of_the_16_pixel_stride(vae):
    with pytest.raises(ValueError, match="multiples of 16 pixels with overlap < tile"):
        vae.decode(latent(frames=1), tile=40, overlap=8)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_storage(vae_file, reference, dtype):
    vae = load_vae(vae_file, dtype=dtype)
    assert vae.model.conv2.weight.dtype == dtype
    z = latent(frames=2, seed=4)
    with torch.no_grad():
        expected = reference.decode(z).sample
    decoded = vae.decode(z)
    assert decoded.dtype == torch.float32
    assert relative_error(decoded, expected) < 0.05


def test_a_half_precision_file_loads_in_fp32(reference, tmp_path: Path):
    state = {k: v.to(torch.bfloat16) for k, v in wan22_state_dict(reference, TINY_22.num_res_blocks).items()}
    save_file(state, str(tmp_path / "wan2.2_vae_bf16.safetensors"))
    vae = load_vae(tmp_path / "wan2.2_vae_bf16.safetensors")
    assert vae.model.conv2.weight.dtype == torch.float32
    z = latent(frames=1, seed=5)
    with torch.no_grad():
        expected = reference.decode(z).sample
    assert relative_error(vae.decode(z), expected) < 0.05


def test_nodes_use_the_wan22_strides(vae):
    (empty,) = SpacetimeEmptyLatentVideo().generate(vae, width=64, height=48, frames=9, batch_size=2)
    assert empty["samples"].shape == (2, 48, 3, 3, 4) and not empty["samples"].any()
    images = torch.rand(5, 48, 64, 3, generator=torch.Generator().manual_seed(6))
    (encoded,) = SpacetimeVAEEncode().encode(vae, images)
    assert encoded["samples"].shape == (1, 48, 2, 3, 4)
    (frames,) = SpacetimeVAEDecode().decode(vae, encoded)
    assert frames.shape == (5, 48, 64, 3)
    expected = vae.decode(encoded["samples"])  # B×3×T×H×W in -1..1
    torch.testing.assert_close(frames, ((expected + 1) / 2).permute(0, 2, 3, 4, 1)[0], rtol=0, atol=1e-6)
