"""The Wan 2.1 causal VAE: parity with diffusers' AutoencoderKLWan, chunked decoding, sizes, errors, nodes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spacetime.checkpoint import CheckpointError
from spacetime.nodes.vae import (
    SpacetimeEmptyLatentVideo,
    SpacetimeVAEDecode,
    SpacetimeVAEEncode,
    SpacetimeVAELoader,
)
from spacetime.vae import WAN21, load_vae

from numerics import relative_error
from wan_vae_reference import TINY_21, diffusers_vae, random_vae_state_dict

pytest.importorskip("diffusers", reason="parity tests need the test extra")
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def state():
    return random_vae_state_dict(TINY_21)


@pytest.fixture(scope="module")
def vae_file(state, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vae") / "wan_2.1_vae_tiny.safetensors"
    save_file(state, str(path))
    return path


@pytest.fixture(scope="module")
def reference(state):
    return diffusers_vae(TINY_21, state)


def video(frames=9, height=32, width=48, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, height, width, generator=generator) * 2 - 1


def test_encode_matches_diffusers(vae_file, reference):
    vae = load_vae(vae_file)
    clip = video()
    latent = vae.encode(clip)
    with torch.no_grad():
        expected = reference.encode(clip).latent_dist.mode()
    assert latent.shape == (1, 16, 3, 4, 6)
    assert relative_error(latent, expected) <= TOLERANCE


def test_decode_matches_diffusers(vae_file, reference):
    vae = load_vae(vae_file)
    latent = torch.randn(1, 16, 3, 4, 6, generator=torch.Generator().manual_seed(2))
    decoded = vae.decode(latent)
    with torch.no_grad():
        expected = reference.decode(latent).sample
    assert decoded.shape == (1, 3, 9, 32, 48)
    assert relative_error(decoded, expected) <= TOLERANCE


def test_decoding_chunk_by_chunk_hands_over_the_same_frames(vae_file):
    vae = load_vae(vae_file)
    latent = torch.randn(1, 16, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    chunks = []
    assert vae.decode(latent, sink=chunks.append) is None
    assert [chunk.shape[2] for chunk in chunks] == [1, 4, 4, 4]  # the first frame, then four per latent frame
    assert torch.equal(torch.cat(chunks, dim=2), vae.decode(latent))


def test_single_image_round_trips_through_one_latent_frame(vae_file):
    vae = load_vae(vae_file)
    latent = vae.encode(video(frames=1))
    assert latent.shape[2] == 1 and vae.decode(latent).shape == (1, 3, 1, 32, 48)


@pytest.mark.parametrize(
    "frames,height,width,message",
    [
        (8, 32, 32, r"frames=8 must be 4k\+1 .* use 5 or 9"),
        (0, 32, 32, r"frames=0 must be 4k\+1"),
        (9, 36, 32, "height=36 must be a multiple of 8 .* use 32 or 40"),
        (9, 32, 4, r"width=4 is below the smallest size this VAE makes, 8 pixels .* use 8 or more\."),
    ],
)
def test_invalid_sizes_name_the_nearest_valid_ones(vae_file, frames, height, width, message):
    with pytest.raises(ValueError, match=message):
        load_vae(vae_file).latent_shape(frames, height, width)


def test_latents_of_the_other_vae_and_nan_are_refused(vae_file):
    vae = load_vae(vae_file)
    with pytest.raises(ValueError, match=r"Wan 2\.2 VAE latent"):
        vae.decode(torch.zeros(1, 48, 2, 4, 4))
    with pytest.raises(ValueError, match="NaN or infinite"):
        vae.decode(torch.full((1, 16, 2, 4, 4), float("nan")))


def test_other_files_are_refused(tmp_path: Path):
    save_file({"head.modulation": torch.zeros(1, 2, 4)}, str(tmp_path / "dit.safetensors"))
    with pytest.raises(CheckpointError, match="does not look like a Wan VAE: it looks like a Wan diffusion"):
        load_vae(tmp_path / "dit.safetensors")
    save_file(
        {
            "decoder.middle.0.residual.0.gamma": torch.ones(4, 1, 1, 1),
            "conv2.weight": torch.zeros(48, 48, 1, 1, 1),
        },
        str(tmp_path / "truncated_vae.safetensors"),
    )
    with pytest.raises(
        CheckpointError, match=r"has no 'encoder\.conv1\.weight' tensor: it is incomplete or damaged"
    ):
        load_vae(tmp_path / "truncated_vae.safetensors")


def test_half_precision_storage(vae_file, reference):
    vae = load_vae(vae_file, dtype=torch.bfloat16)
    assert vae.model.conv2.weight.dtype == torch.bfloat16
    latent = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = reference.decode(latent).sample
    assert relative_error(vae.decode(latent), expected) < 0.05


@pytest.fixture
def nodes_vae(vae_file, tmp_path: Path, monkeypatch):
    folder = tmp_path / "models" / "vae"
    folder.mkdir(parents=True)
    (folder / vae_file.name).write_bytes(vae_file.read_bytes())
    monkeypatch.setenv("SPACETIME_MODELS_DIR", str(tmp_path / "models"))
    assert SpacetimeVAELoader.INPUT_TYPES()["required"]["vae_name"][0] == [vae_file.name]
    return SpacetimeVAELoader().load(vae_file.name, "fp32")[0]


def test_nodes_encode_decode_and_empty_latent(nodes_vae):
    (empty,) = SpacetimeEmptyLatentVideo().generate(nodes_vae, width=48, height=32, frames=9, batch_size=2)
    assert empty["samples"].shape == (2, 16, 3, 4, 6) and not empty["samples"].any()
    images = torch.rand(9, 32, 48, 3, generator=torch.Generator().manual_seed(5))
    (latent,) = SpacetimeVAEEncode().encode(nodes_vae, images)
    assert latent["samples"].shape == (1, 16, 3, 4, 6)
    (frames,) = SpacetimeVAEDecode().decode(nodes_vae, latent)
    assert frames.shape == (9, 32, 48, 3) and frames.min() >= 0 and frames.max() <= 1
    expected = nodes_vae.decode(latent["samples"])  # B×3×T×H×W in -1..1
    torch.testing.assert_close(frames, ((expected + 1) / 2).permute(0, 2, 3, 4, 1)[0], rtol=0, atol=1e-6)
    assert WAN21.channels == latent["samples"].shape[1]


def test_encode_node_refuses_alpha_and_bad_frame_counts(nodes_vae):
    with pytest.raises(ValueError, match="Split Image with Alpha"):
        SpacetimeVAEEncode().encode(nodes_vae, torch.zeros(5, 32, 32, 4))
    with pytest.raises(ValueError, match=r"frames=6 must be 4k\+1 .* use 5 or 9"):
        SpacetimeVAEEncode().encode(nodes_vae, torch.zeros(6, 32, 32, 3))


def test_one_tile_covering_the_frame_is_the_untiled_decode(vae_file):
    vae = load_vae(vae_file)
    latent = torch.randn(1, 16, 2, 4, 6, generator=torch.Generator().manual_seed(6))
    assert torch.equal(vae.decode(latent, tile=48, overlap=8), vae.decode(latent))


def test_tiles_cover_the_frame_and_blend_weights_normalise():
    from spacetime.vae.tiling import SpatialTiling

    tiling = SpatialTiling(tile=8, overlap=2, stride=8)
    regions = tiling.regions(12, 20)
    covered = torch.zeros(12, 20)
    for rows, columns in regions:
        covered[rows, columns] += 1
    assert covered.min() >= 1 and len(regions) == 2 * 3
    parts = [torch.full((1, 3, 1, (r.stop - r.start) * 8, (c.stop - c.start) * 8), 0.25) for r, c in regions]
    torch.testing.assert_close(tiling.blend(parts, 12, 20), torch.full((1, 3, 1, 96, 160), 0.25))


def test_tiled_decode_has_the_full_size_and_stays_close(vae_file):
    vae = load_vae(vae_file)
    latent = torch.randn(1, 16, 2, 12, 16, generator=torch.Generator().manual_seed(7))
    whole, tiled = vae.decode(latent), vae.decode(latent, tile=64, overlap=32)
    assert tiled.shape == whole.shape == (1, 3, 5, 96, 128)
    # Random weights mix distant pixels far more than a trained VAE, so only a loose bound holds here.
    assert relative_error(tiled, whole) < 0.5


def test_bad_tiling_is_refused(vae_file):
    with pytest.raises(ValueError, match="multiples of 8 pixels with overlap < tile"):
        load_vae(vae_file).decode(torch.zeros(1, 16, 1, 4, 4), tile=60, overlap=8)


def test_a_decode_that_would_not_fit_goes_to_tiles_by_itself(vae_file, monkeypatch, caplog):
    """Regression: a 2048×2048 Tiny World image was killed at the machine's 24 GB in its VAE decode (the
    middle block's attention over 65536 latent pixels). With tile 0 the decode estimates its memory and,
    when it would not fit, decodes in the largest tiles that do: exactly what those tiles give."""
    from spacetime import host
    from spacetime.vae import video_vae

    vae = load_vae(vae_file)
    latent = torch.randn(1, 16, 1, 40, 40, generator=torch.Generator().manual_seed(0))
    whole = vae.decode(latent)
    assert vae.auto_tiling(latent, torch.device("cpu")) is None  # plenty of memory: whole frames, as before
    needed = vae.decode_bytes(40, 40)
    budget = (vae.decode_bytes(256 // 8, 256 // 8) + needed) // 2  # 256-pixel tiles fit, whole frames not
    monkeypatch.setattr(host, "free_memory_bytes", lambda device=None: budget / video_vae.MEMORY_HEADROOM)
    with caplog.at_level("WARNING"):
        auto = vae.decode(latent)
    assert "decoding in 256-pixel tiles" in caplog.text
    assert torch.equal(auto, vae.decode(latent, tile=256, overlap=video_vae.AUTO_OVERLAP))
    assert not torch.equal(auto, whole)  # tiles blend: close to the whole decode, not equal
    assert (auto - whole).abs().mean() < 0.05
