"""DiT nodes called as ComfyUI calls them, with the model folder outside ComfyUI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spacetime.dit import SpacetimePatches
from spacetime.nodes.dit import SpacetimeDiTLoader, SpacetimePatchifier, SpacetimeUnpatchify

from wan_reference import T2V, random_wan_state_dict, write


@pytest.fixture
def dit(tmp_path: Path, monkeypatch):
    folder = tmp_path / "models" / "diffusion_models"
    folder.mkdir(parents=True)
    write(random_wan_state_dict(T2V), folder / "tiny_wan.safetensors")
    monkeypatch.setenv("SPACETIME_MODELS_DIR", str(tmp_path / "models"))
    choices = SpacetimeDiTLoader.INPUT_TYPES()["required"]["model_name"][0]
    assert choices == ["tiny_wan.safetensors"]
    (model,) = SpacetimeDiTLoader().load("tiny_wan.safetensors", "default", "auto")
    return model


def test_loader_reads_the_models_folder(dit):
    assert dit.config.dim == 256 and dit.config.num_layers == 2
    assert dit.compute_dtype == torch.float32  # auto on the CPU
    assert next(dit.parameters()).device.type == "cpu"


def test_patchify_then_unpatchify_gives_the_latent_back(dit):
    raw = torch.randn(2, 16, 3, 6, 8) * 3
    (patches,) = SpacetimePatchifier().patchify(dit, {"samples": raw})
    assert isinstance(patches, SpacetimePatches)
    assert patches.grid == (3, 3, 4) and patches.tokens.shape == (2, 36, 64)
    # Tokens live in the model's normalised space (Wan 2.1 VAE statistics for 16 channels).
    assert torch.allclose(patches.tokens.mean(), dit.latent_format.normalize(raw).mean())
    (latent,) = SpacetimeUnpatchify().unpatchify(patches)
    torch.testing.assert_close(latent["samples"], raw, rtol=0, atol=1e-5)


def test_patchifier_refuses_a_latent_of_another_vae(dit):
    with pytest.raises(ValueError, match=r"does not fit .* B×16×T×H×W"):
        SpacetimePatchifier().patchify(dit, {"samples": torch.zeros(1, 48, 2, 4, 4)})


def test_patchifier_refuses_sizes_the_patch_does_not_divide(dit):
    with pytest.raises(ValueError, match="height"):
        SpacetimePatchifier().patchify(dit, {"samples": torch.zeros(1, 16, 2, 5, 4)})


def test_core_noise_mask_pins_the_tokens_it_keeps_and_goes_back_out(dit):
    """Core's meaning: noise_mask 1 denoises, 0 keeps. Tokens kept on every cell are pinned to the
    latent's own values; Unpatchify writes the pins back as a noise_mask, which patchifies the same."""
    raw = torch.randn(2, 16, 3, 4, 4)
    mask = torch.ones(2, 1, 3, 4, 4)
    mask[:, :, 0] = 0.0  # keep the first latent frame (tokens 0-3 of the 3×2×2 grid)
    mask[:, :, 1, :2, :2] = 0.3  # below 0.5 on every cell: kept (token 4)
    mask[:, :, 1, 2:, :2] = 0.3
    mask[:, :, 1, 3, 1] = 0.7  # one cell above 0.5: that token (6) is denoised whole
    (patches,) = SpacetimePatchifier().patchify(dit, {"samples": raw, "noise_mask": mask})
    expected = torch.zeros(2, 12, dtype=torch.bool)
    expected[:, :5] = True
    assert torch.equal(patches.pinned, expected)
    torch.testing.assert_close(patches.known, patches.tokens, rtol=0, atol=0)

    (latent,) = SpacetimeUnpatchify().unpatchify(patches)
    torch.testing.assert_close(latent["samples"], raw, rtol=0, atol=1e-5)
    written = latent["noise_mask"]
    assert written.shape == (2, 1, 3, 4, 4)
    assert written[:, :, 0].eq(0).all() and written[:, :, 2].eq(1).all()
    assert written[:, :, 1, :2, :2].eq(0).all() and written[:, :, 1, 2:, :2].eq(1).all()
    (again,) = SpacetimePatchifier().patchify(dit, latent)
    assert torch.equal(again.pinned, patches.pinned)


def test_noise_mask_is_resized_and_repeated_as_core_does(dit):
    """A frames×H×W mask at another resolution is resized trilinearly to the latent and repeated over
    the batch (comfy.utils.reshape_mask); without a noise_mask nothing is pinned."""
    raw = torch.randn(2, 16, 2, 4, 4)
    mask = torch.ones(2, 8, 8)  # 2 frames at twice the latent's size
    mask[0] = 0.0
    (patches,) = SpacetimePatchifier().patchify(dit, {"samples": raw, "noise_mask": mask})
    assert patches.pinned.shape == (2, 8)
    assert patches.pinned[:, :4].all() and not patches.pinned[:, 4:].any()
    (plain,) = SpacetimePatchifier().patchify(dit, {"samples": raw})
    assert plain.pinned is None
    with pytest.raises(ValueError, match=r"noise_mask has shape \(4,\); expected H×W"):
        SpacetimePatchifier().patchify(dit, {"samples": raw, "noise_mask": torch.ones(4)})
    assert "noise_mask" not in SpacetimeUnpatchify().unpatchify(plain)[0]
