"""The UMT5 sentencepiece tokenizer with Wan's conventions: whitespace cleaned, end-of-text token
appended, cut at 512 tokens (saying how many were dropped), padded with the pad id."""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass

import torch

log = logging.getLogger("spacetime")


def clean(text: str) -> str:
    """Wan's 'whitespace' cleaning: HTML entities decoded, runs of whitespace collapsed."""
    text = html.unescape(html.unescape(text))
    return re.sub(r"\s+", " ", text).strip()


@dataclass(frozen=True)
class Tokens:
    ids: torch.Tensor  # B×L long, padded with the pad id
    mask: torch.Tensor  # B×L bool, True for real tokens (the end token included)
    dropped: tuple[int, ...]  # tokens cut from each prompt to fit


class SentencePieceTokenizer:
    def __init__(self, model_proto: bytes):
        import sentencepiece

        try:
            self.processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"the tokenizer model (spiece_model) could not be read: {error}") from None
        self.eos_id = self.processor.eos_id()
        self.pad_id = max(self.processor.pad_id(), 0)
        if self.eos_id < 0:
            raise ValueError("the tokenizer model has no end-of-text token; it is not a T5/UMT5 tokenizer.")

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    def token_ids(self, text: str) -> list[int]:
        """sentencepiece's own ids for the cleaned text, without the end token."""
        return self.processor.encode(clean(text))

    def __call__(self, prompts: list[str], length: int = 512) -> Tokens:
        if isinstance(prompts, str):
            prompts = [prompts]
        ids = torch.full((len(prompts), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), length), dtype=torch.bool)
        dropped = []
        for row, prompt in enumerate(prompts):
            tokens = self.token_ids(prompt)
            cut = max(0, len(tokens) - (length - 1))
            if cut:
                kept = self.processor.decode(tokens[: length - 1])
                log.warning(
                    "Prompt %d is %d tokens long; the text encoder takes %d, so the last %d were dropped "
                    "(the prompt now ends with: ...%s). Shorten it to keep them.",
                    row, len(tokens) + 1, length, cut, kept[-60:],
                )  # fmt: skip
                tokens = tokens[: length - 1]
            tokens = [*tokens, self.eos_id]
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = True
            dropped.append(cut)
        return Tokens(ids, mask, tuple(dropped))
