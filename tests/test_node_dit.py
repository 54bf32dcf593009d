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
