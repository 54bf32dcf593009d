"""Load a UMT5 text encoder from the files people have: ComfyUI's umt5_xxl safetensors (fp16, bf16,
fp8_e4m3fn, scaled fp8; the tokenizer travels inside as the uint8 tensor `spiece_model`), the
transformers layout, or Wan's original layout after `python -m spacetime convert`."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .. import host
from ..checkpoint import CheckpointError, check_limits, describe, layer_count, read_keys
from ..ops import assign_checkpoint, default_compute_dtype
from .text_encoder import TextEncoder
from .tokenizer import SentencePieceTokenizer
from .umt5 import UMT5Config, UMT5Encoder

TOKENIZER_KEY = "spiece_model"
SIDECAR_TOKENIZERS = ("spiece.model", "tokenizer.model")
PREFIXES = ("umt5xxl.transformer.", "text_encoders.umt5xxl.transformer.")

# Wan's original T5 names -> transformers' (the one renaming table).
WAN_T5_NAMES = (
    (r"^token_embedding\.", "shared."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.block.\1.layer.0.layer_norm."),
    (r"^blocks\.(\d+)\.attn\.", r"encoder.block.\1.layer.0.SelfAttention."),
    (
        r"^blocks\.(\d+)\.pos_embedding\.embedding\.",
        r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias.",
    ),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.block.\1.layer.1.layer_norm."),
    (r"^blocks\.(\d+)\.ffn\.gate\.0\.", r"encoder.block.\1.layer.1.DenseReluDense.wi_0."),
    (r"^blocks\.(\d+)\.ffn\.fc1\.", r"encoder.block.\1.layer.1.DenseReluDense.wi_1."),
    (r"^blocks\.(\d+)\.ffn\.fc2\.", r"encoder.block.\1.layer.1.DenseReluDense.wo."),
    (r"^norm\.", "encoder.final_layer_norm."),
)
_BLOCK = re.compile(r"^encoder\.block\.(\d+)\.")
# The sizes T5-family encoders use (UMT5-XXL: umt5.UMT5_XXL; Tiny World's: width 128), with room to
# spare: a file outside them is refused before anything is built from it.
FAMILY = "UMT5 (UMT5-XXL, Tiny World's)"
MAX_LAYERS = 128  # UMT5-XXL: 24
LIMITS = {
    "vocab_size": (1, 2**20),  # 256384
    "dim": (1, 16384),  # 4096
    "ffn_dim": (1, 65536),  # 10240
    "num_heads": (1, 256),  # 64
    "attention_width": (1, 65536),  # heads x head width: 4096
    "num_buckets": (4, 256),  # 32; T5's buckets need 4 or more, and fewer than 4 x max_distance
}


def canonical_name(key: str) -> str | None:
    """Our (transformers) name for a tensor, or None for tensors the encoder does not use."""
    for prefix in PREFIXES:
        key = key.removeprefix(prefix)
    if key.startswith(("decoder.", "lm_head.")) or key == "encoder.embed_tokens.weight":
        return None  # the decoder half of a full UMT5, and the tied copy of `shared`
    for pattern, replacement in WAN_T5_NAMES:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    return key


def config_from_shapes(shapes: dict[str, tuple[int, ...]], source: str) -> UMT5Config:
    bias_key = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    if "encoder.block.0.layer.0.SelfAttention.q.weight" not in shapes or "shared.weight" not in shapes:
        raise CheckpointError(
            f"{source} does not look like a UMT5 text encoder: it looks like {describe(shapes)}. "
            "The text encoder loader expects umt5_xxl (as ComfyUI ships it in models/text_encoders)."
        )

    def has_bias(block: int) -> bool:
        return f"encoder.block.{block}.layer.0.SelfAttention.relative_attention_bias.weight" in shapes

    if not has_bias(0) or ("encoder.block.1.layer.0.SelfAttention.q.weight" in shapes and not has_bias(1)):
        raise CheckpointError(
            f"{source} is a T5 encoder with one shared position bias (T5 v1.1, as Flux and SD3 use), not UMT5 "
            "with a bias in every layer. Wan needs umt5_xxl."
        )
    if "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" not in shapes:
        raise CheckpointError(f"{source} is a T5 encoder without the gated-GELU MLP; Wan needs umt5_xxl.")
    try:
        vocab_size, dim = shapes["shared.weight"]
        num_buckets, num_heads = shapes[bias_key]
        inner = shapes["encoder.block.0.layer.0.SelfAttention.q.weight"][0]
        ffn_dim = shapes["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"][0]
    except (ValueError, IndexError):
        raise CheckpointError(
            f"{source} looks like a UMT5 encoder but its embedding, position bias or projections have odd shapes "
            f"(shared.weight {shapes['shared.weight']}, position bias {shapes[bias_key]}): the file is damaged."
        ) from None
    sizes = dict(vocab_size=vocab_size, dim=dim, ffn_dim=ffn_dim, num_heads=num_heads, attention_width=inner,
                 num_buckets=num_buckets)  # fmt: skip
    check_limits(source, sizes, LIMITS, FAMILY)
    if inner % num_heads:
        raise CheckpointError(
            f"{source}: its attention is {inner} wide, which is not {num_heads} heads (from its position bias) of "
            "a whole width. The file is damaged."
        )
    return UMT5Config(
        vocab_size=vocab_size,
        dim=dim,
        ffn_dim=ffn_dim,
        num_layers=layer_count(shapes, _BLOCK, source, "encoder blocks", MAX_LAYERS),
        num_heads=num_heads,
        head_dim=inner // num_heads,
        num_buckets=num_buckets,
    )


def _tokenizer_bytes(path: Path, tensors: dict[str, torch.Tensor]) -> bytes:
    if TOKENIZER_KEY in tensors:
        return tensors.pop(TOKENIZER_KEY).cpu().numpy().tobytes()
    for name in SIDECAR_TOKENIZERS:
        sidecar = path.with_name(name)
        if sidecar.is_file():
            return sidecar.read_bytes()
    raise CheckpointError(
        f"{path.name} holds no tokenizer: ComfyUI's umt5_xxl files carry it as the tensor '{TOKENIZER_KEY}', "
        f"and this file does not. Put the UMT5 sentencepiece model beside it as {SIDECAR_TOKENIZERS[0]}, or use "
        "ComfyUI's umt5_xxl_fp16.safetensors (or its fp8 versions)."
    )


def load_text_encoder(
    path: str | Path,
    weight_dtype: torch.dtype | None = None,
    compute_dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> TextEncoder:
    """A UMT5 text encoder on `device`; weight_dtype None keeps the file's dtypes (fp8 stays fp8)."""
    path, device = Path(path), host.usable_device(device)
    stored = read_keys(path)
    names = {key: canonical_name(key) for key in stored}
    shapes = {name: stored[key][0] for key, name in names.items() if name is not None}
    config = config_from_shapes(shapes, path.name)
    with torch.device("meta"):
        model = UMT5Encoder(config)
    kept = assign_checkpoint(model, path, names, shapes, weight_dtype, device, keep={TOKENIZER_KEY})
    tokenizer = SentencePieceTokenizer(_tokenizer_bytes(path, kept))
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(
            f"{path.name}: its tokenizer has {tokenizer.vocab_size} tokens but the embedding table only "
            f"{config.vocab_size}; the tokenizer belongs to another model."
        )
    model.compute_dtype = compute_dtype or default_compute_dtype(device)
    return TextEncoder(tokenizer, model.eval().requires_grad_(False))
