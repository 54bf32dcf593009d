"""Tokenizers and text encoders (UMT5 first)."""

from .loader import load_text_encoder
from .text_encoder import WAN_NEGATIVE_PROMPT, TextEncoder
from .tokenizer import SentencePieceTokenizer, check_text
from .umt5 import UMT5_XXL, UMT5Config, UMT5Encoder

__all__ = [
    "UMT5_XXL",
    "WAN_NEGATIVE_PROMPT",
    "SentencePieceTokenizer",
    "TextEncoder",
    "UMT5Config",
    "UMT5Encoder",
    "check_text",
    "load_text_encoder",
]
