"""Text nodes called as ComfyUI calls them; CONDITIONING in core's format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spacetime.nodes.text import WAN_NEGATIVE_PROMPT, SpacetimeTextEncode, SpacetimeTextEncoderLoader

from umt5_reference import reference_model, write_comfy_file


@pytest.fixture
def text_encoder(tmp_path: Path, monkeypatch):
    folder = tmp_path / "models" / "text_encoders"
    folder.mkdir(parents=True)
    write_comfy_file(reference_model(), folder / "umt5_tiny.safetensors")
    monkeypatch.setenv("SPACETIME_MODELS_DIR", str(tmp_path / "models"))
    assert SpacetimeTextEncoderLoader.INPUT_TYPES()["required"]["text_encoder_name"][0] == [
        "umt5_tiny.safetensors"
    ]
    return SpacetimeTextEncoderLoader().load("umt5_tiny.safetensors", "default", "auto")[0]


def test_encode_gives_core_conditioning(text_encoder):
    defaults = SpacetimeTextEncode.INPUT_TYPES()["required"]
    assert defaults["negative_prompt"][1]["default"] == WAN_NEGATIVE_PROMPT
    positive, negative = SpacetimeTextEncode().encode(
        text_encoder, "a red circle moving left", WAN_NEGATIVE_PROMPT
    )
    for conditioning in (positive, negative):
        ((embeddings, extra),) = conditioning  # core's list of [tensor, dict]
        assert embeddings.shape == (1, 512, 64) and extra == {"pooled_output": None}
    assert not torch.equal(positive[0][0], negative[0][0])
    expected = text_encoder.encode(["a red circle moving left"])
    torch.testing.assert_close(
        positive[0][0], expected, rtol=0, atol=1e-6
    )  # batching the prompts changes nothing


def test_empty_prompts_encode(text_encoder):
    positive, _ = SpacetimeTextEncode().encode(text_encoder, "", "")
    assert torch.count_nonzero(positive[0][0][0, 1:]) == 0 and torch.count_nonzero(positive[0][0][0, 0]) > 0
