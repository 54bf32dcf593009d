"""The TextEncoder object the nodes use: a tokenizer and its encoder, prompts in, embeddings out; and
Wan's default negative prompt."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .tokenizer import SentencePieceTokenizer
from .umt5 import UMT5Encoder

# The negative prompt Wan 2.1 / 2.2 ship as their default (sample_neg_prompt).
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，"
    "最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，"
    "画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，"
    "杂乱的背景，三条腿，背景人很多，倒着走"
)  # fmt: skip


@dataclass
class TextEncoder:
    """A tokenizer and its encoder: prompts -> B×512×D embeddings, zero after each prompt's tokens."""

    tokenizer: SentencePieceTokenizer
    model: UMT5Encoder

    @torch.no_grad()
    def encode(self, prompts: list[str], device: torch.device | None = None) -> torch.Tensor:
        """On `device` (default: where the encoder's weights are)."""
        tokens = self.tokenizer(prompts, self.model.config.text_len)
        device = device or self.model.shared.weight.device
        return self.model(tokens.ids.to(device), tokens.mask.to(device))
