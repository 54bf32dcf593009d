"""A tiny sentencepiece model trained here and tiny random UMT5 encoders (transformers' UMT5EncoderModel,
the test-only reference) written as ComfyUI's umt5 files are: transformers names plus `spiece_model`."""

from __future__ import annotations

import functools
import io
import random
from pathlib import Path

import torch
from safetensors.torch import save_file

WORDS = [
    "a",
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "white",
    "black",
    "circle",
    "square",
    "triangle",
    "star",
    "heart",
    "moving",
    "left",
    "right",
    "up",
    "down",
    "growing",
    "shrinking",
    "rotating",
    "still",
    "on",
    "over",
    "the",
    "background",
    "striped",
    "dotted",
    "floor",
    "sky",
    "small",
    "big",
    "slowly",
    "quickly",
    "camera",
    "pans",
    "drifts",
    "bounces",
    "glowing",
    "neon",
    "city",
    "forest",
    "ocean",
    "cat",
    "dog",
    "runs",
    "jumps",
    "through",
    "rain",
    "snow",
]


@functools.cache
def tiny_spiece_model() -> bytes:
    """A unigram sentencepiece model with T5's special ids (pad 0, end 1, unknown 2, no begin)."""
    import sentencepiece

    rng = random.Random(0)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(3000)]
    sentences += ["Ünïcödé 日本語のテキスト 😀 مرحبا ñandú café"] * 20
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=340, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, byte_fallback=True,
        minloglevel=2, num_threads=1,
    )  # fmt: skip
    return model.getvalue()


def reference_model(vocab_size: int = 448, seed: int = 0, d_model: int = 64):
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    config = UMT5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=16, d_ff=96, num_layers=2, num_heads=4,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
    )  # fmt: skip
    model = UMT5EncoderModel(config).eval()
    with torch.no_grad():  # random norms too, so a wrong norm cannot hide
        for name, parameter in model.named_parameters():
            if "layer_norm" in name:
                parameter.copy_(1.0 + 0.2 * torch.randn_like(parameter))
    return model


def comfy_state(model) -> dict[str, torch.Tensor]:
    """The encoder's tensors as ComfyUI's umt5 files hold them: `shared.weight`, no tied copy."""
    return {k: v.contiguous() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}


def write_comfy_file(model, path: Path, transform=None) -> Path:
    state = comfy_state(model)
    if transform:
        state = transform(state)
    state["spiece_model"] = torch.frombuffer(bytearray(tiny_spiece_model()), dtype=torch.uint8)
    save_file(state, str(path))
    return path


def sample_prompts() -> list[str]:
    return ["a red circle moving left", "", "a small green square drifts upward over a striped floor " * 3]
