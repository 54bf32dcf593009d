"""Text nodes called as ComfyUI calls them; CONDITIONING in core's format."""

from __future__ import annotations

import re
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


@pytest.mark.parametrize(
    ("prompt", "negative", "message"),
    [
        # T02: a lone surrogate, legal in ComfyUI's JSON, once a pybind RuntimeError from sentencepiece
        ("red \ud800 circle", "", "prompt has a lone surrogate U+D800 at character 4 ('red \\ud800 circle')"),
        ("ok", "\udfff", "negative_prompt has a lone surrogate U+DFFF at character 0"),
        ("a fox 🦊 and half of one \ud83e", "", "prompt has a lone surrogate U+D83E at character 24"),
        # P05 as the library sees it: a byte that was not UTF-8, kept by Python as U+DC80..U+DCFF
        ("red \udcff circle", "", "prompt has the byte 0xff, which is not UTF-8 text, at character 4"),
        # T03: not text at all
        (None, "", "prompt is None (NoneType), not text"),
        ("ok", 7, "negative_prompt is 7 (int), not text"),
    ],
)
def test_encode_refuses_text_the_tokenizer_cannot_read(text_encoder, prompt, negative, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SpacetimeTextEncode().encode(text_encoder, prompt, negative)
    with pytest.raises(ValueError, match=r"the prompt (is|has)"):  # any caller of the tokenizer
        text_encoder.encode([prompt if message.startswith("prompt") else negative])
