"""The UMT5 text encoder: parity with transformers' UMT5EncoderModel, Wan's tokenisation
conventions, every file form, and clear errors."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spacetime.checkpoint import CheckpointError
from spacetime.text_encoders import SentencePieceTokenizer, load_text_encoder

from numerics import relative_error, scaled_fp8
from umt5_reference import comfy_state, reference_model, sample_prompts, tiny_spiece_model, write_comfy_file

pytest.importorskip("transformers", reason="parity tests need transformers (test extra)")
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def reference():
    return reference_model()


@pytest.fixture(scope="module")
def comfy_file(reference, tmp_path_factory) -> Path:
    return write_comfy_file(reference, tmp_path_factory.mktemp("te") / "umt5_tiny.safetensors")


def reference_embeddings(model, tokenizer, prompts):
    tokens = tokenizer(prompts, 512)
    with torch.no_grad():
        out = model(input_ids=tokens.ids, attention_mask=tokens.mask.long()).last_hidden_state
    return out, tokens.mask


def assert_matches_reference(encoder, reference, prompts):
    ours = encoder.encode(prompts)
    expected, mask = reference_embeddings(reference, encoder.tokenizer, prompts)
    assert ours.shape == (len(prompts), 512, 64)
    assert relative_error(ours[mask], expected[mask]) <= TOLERANCE  # the real tokens
    assert torch.count_nonzero(ours[~mask]) == 0  # zeros after them, as Wan pads
    return ours


def test_matches_transformers_umt5(comfy_file, reference):
    encoder = load_text_encoder(comfy_file)
    assert encoder.model.config.num_layers == 2 and encoder.model.config.num_heads == 4
    ours = assert_matches_reference(encoder, reference, sample_prompts())
    assert relative_error(ours[0], ours[2]) > 0.1  # different prompts, different embeddings


def test_token_ids_are_sentencepiece_own_plus_the_end_token():
    import sentencepiece

    tokenizer = SentencePieceTokenizer(tiny_spiece_model())
    own = sentencepiece.SentencePieceProcessor(model_proto=tiny_spiece_model())
    for prompt in ["a red circle moving left", "Ünïcödé 日本語 😀 مرحبا", "café ñandú"]:
        tokens = tokenizer([prompt])
        length = int(tokens.mask.sum())
        assert tokens.ids[0, :length].tolist() == [*own.encode(prompt), 1]
        assert tokens.ids[0, length:].eq(0).all()


def test_empty_prompt_is_the_end_token_alone():
    tokens = SentencePieceTokenizer(tiny_spiece_model())([""])
    assert tokens.mask.sum() == 1 and tokens.ids[0, 0] == 1


def test_whitespace_and_entities_are_cleaned_as_wan_does():
    tokenizer = SentencePieceTokenizer(tiny_spiece_model())
    assert torch.equal(
        tokenizer(["  a red\n\tcircle   &amp; star "]).ids, tokenizer(["a red circle & star"]).ids
    )


def test_long_prompts_are_cut_at_512_with_a_warning(caplog):
    tokenizer = SentencePieceTokenizer(tiny_spiece_model())
    prompt = "a red circle moving left " * 200
    full = len(tokenizer.token_ids(prompt)) + 1
    with caplog.at_level(logging.WARNING, logger="spacetime"):
        tokens = tokenizer([prompt])
    assert tokens.mask.sum() == 512 and tokens.ids[0, 511] == 1  # still ends with the end token
    assert tokens.dropped == (full - 512,)
    assert re.search(rf"{full} tokens long.*the last {full - 512} were dropped", caplog.text)


def test_any_unicode_encodes(comfy_file, reference):
    encoder = load_text_encoder(comfy_file)
    prompts = ["😀🎬 \u200b zero\u200dwidth", "مرحبا بالعالم", "日本語のテキスト", "\x00control\x07chars"]
    ours = assert_matches_reference(encoder, reference, prompts)
    assert torch.isfinite(ours).all()


# Wan's original T5 names, written out independently of the loader's table (from Wan's t5.py).
TRANSFORMERS_TO_WAN = (
    (r"^shared\.", "token_embedding."),
    (r"^encoder\.block\.(\d+)\.layer\.0\.layer_norm\.", r"blocks.\1.norm1."),
    (
        r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.",
        r"blocks.\1.pos_embedding.embedding.",
    ),
    (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.", r"blocks.\1.attn."),
    (r"^encoder\.block\.(\d+)\.layer\.1\.layer_norm\.", r"blocks.\1.norm2."),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_0\.", r"blocks.\1.ffn.gate.0."),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_1\.", r"blocks.\1.ffn.fc1."),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wo\.", r"blocks.\1.ffn.fc2."),
    (r"^encoder\.final_layer_norm\.", "norm."),
)


def to_wan_names(state: dict) -> dict:
    renamed = {}
    for key, value in state.items():
        pattern, replacement = next((p, r) for p, r in TRANSFORMERS_TO_WAN if re.match(p, key))
        renamed[re.sub(pattern, replacement, key)] = value
    return renamed


def test_original_wan_layout_with_a_tokenizer_beside_it(reference, tmp_path: Path):
    state = to_wan_names(comfy_state(reference))
    assert "blocks.1.ffn.gate.0.weight" in state and "token_embedding.weight" in state
    save_file(state, str(tmp_path / "models_t5_umt5-xxl-enc.safetensors"))
    with pytest.raises(CheckpointError, match="holds no tokenizer"):
        load_text_encoder(tmp_path / "models_t5_umt5-xxl-enc.safetensors")
    (tmp_path / "spiece.model").write_bytes(tiny_spiece_model())
    encoder = load_text_encoder(tmp_path / "models_t5_umt5-xxl-enc.safetensors")
    assert_matches_reference(encoder, reference, sample_prompts())


def test_scaled_fp8_matches_reference_on_dequantised_weights(reference, tmp_path: Path):
    state = comfy_state(reference)
    file_state, dequantised = scaled_fp8(
        state, lambda key, value: ".block." in key and value.ndim == 2 and "relative" not in key
    )
    path = write_comfy_file(
        reference, tmp_path / "umt5_fp8_scaled.safetensors", transform=lambda _: file_state
    )
    encoder = load_text_encoder(path)
    assert encoder.model.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.float8_e4m3fn
    dequantised_reference = reference_model()
    dequantised_reference.load_state_dict(dequantised, strict=False)  # the tied copy follows `shared`
    assert_matches_reference(encoder, dequantised_reference, sample_prompts())


def test_fp8_and_half_storage(comfy_file, reference):
    for dtype, tolerance in ((torch.float16, 2e-3), (torch.bfloat16, 2e-2), (torch.float8_e4m3fn, 0.15)):
        encoder = load_text_encoder(comfy_file, weight_dtype=dtype, compute_dtype=torch.float32)
        assert encoder.model.encoder.block[1].layer[1].DenseReluDense.wo.weight.dtype == dtype
        ours = encoder.encode(sample_prompts())
        expected, mask = reference_embeddings(reference, encoder.tokenizer, sample_prompts())
        assert relative_error(ours[mask], expected[mask]) < tolerance


def test_transformers_layout_with_the_tied_embedding_copy(reference, tmp_path: Path):
    state = comfy_state(reference) | {"encoder.embed_tokens.weight": reference.shared.weight.detach().clone()}
    path = write_comfy_file(reference, tmp_path / "model.safetensors", transform=lambda _: state)
    assert_matches_reference(load_text_encoder(path), reference, sample_prompts())


def test_a_file_without_the_tokenizer_says_so(reference, tmp_path: Path):
    save_file(comfy_state(reference), str(tmp_path / "umt5.safetensors"))
    with pytest.raises(CheckpointError, match=r"holds no tokenizer.*spiece_model"):
        load_text_encoder(tmp_path / "umt5.safetensors")


def test_other_files_are_refused(tmp_path: Path):
    save_file({"head.modulation": torch.zeros(1, 2, 4)}, str(tmp_path / "wan.safetensors"))
    with pytest.raises(
        CheckpointError, match="does not look like a UMT5 text encoder: it looks like a Wan diffusion"
    ):
        load_text_encoder(tmp_path / "wan.safetensors")
    (tmp_path / "umt5.pth").write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError, match="pickle"):
        load_text_encoder(tmp_path / "umt5.pth")


def test_t5_v1_1_with_one_shared_bias_is_refused(reference, tmp_path: Path):
    state = {
        k: v for k, v in comfy_state(reference).items() if "block.1.layer.0.SelfAttention.relative" not in k
    }
    path = write_comfy_file(reference, tmp_path / "t5xxl.safetensors", transform=lambda _: state)
    with pytest.raises(CheckpointError, match="one shared position bias"):
        load_text_encoder(path)


def test_plain_fp8_file_with_an_fp8_embedding_table(reference, tmp_path: Path):
    """fp8_e4m3fn files store the token table in fp8 too: only the looked-up rows are upcast."""
    state = comfy_state(reference)
    stored = {
        k: (v.to(torch.float8_e4m3fn) if v.ndim == 2 and "relative" not in k else v) for k, v in state.items()
    }
    path = write_comfy_file(reference, tmp_path / "umt5_fp8.safetensors", transform=lambda _: stored)
    encoder = load_text_encoder(path)
    assert encoder.model.shared.weight.dtype == torch.float8_e4m3fn
    dequantised = reference_model()
    dequantised.load_state_dict({k: v.float() for k, v in stored.items()}, strict=False)
    assert_matches_reference(encoder, dequantised, sample_prompts())
