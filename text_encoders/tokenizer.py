"""The UMT5 sentencepiece tokenizer with Wan's conventions: whitespace cleaned, end-of-text token
appended, cut at 512 tokens (saying how many were dropped), padded with the pad id."""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass

import torch

log = logging.getLogger("spacetime")


def check_text(text, name: str = "the prompt") -> str:
    """`text` itself when it is a string the tokenizer can read; a ValueError saying what is wrong with it
    otherwise: not a string, a byte that was not UTF-8 (Python keeps such bytes from the command line as
    U+DC80..U+DCFF), or a lone UTF-16 surrogate (legal in JSON, so in a ComfyUI workflow)."""
    if not isinstance(text, str):
        raise ValueError(
            f"{name} is {text!r} ({type(text).__name__}), not text: give a string (connect a STRING output, "
            "or type it in the widget)."
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        code, where = ord(text[error.start]), text[max(error.start - 20, 0) : error.start + 20]
        if 0xDC80 <= code <= 0xDCFF:
            raise ValueError(
                f"{name} has the byte 0x{code - 0xDC00:02x}, which is not UTF-8 text, at character {error.start} "
                f"({where!r}). Give the text as UTF-8: set the terminal (or the file it came from) to UTF-8, "
                "e.g. LANG=C.UTF-8, and type or paste it again."
            ) from None
        raise ValueError(
            f"{name} has a lone surrogate U+{code:04X} at character {error.start} ({where!r}): half of a UTF-16 "
            "pair, not a character (often an emoji cut in half). Remove it, or paste the whole character again."
        ) from None
    return text


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
        return self.processor.encode(clean(check_text(text)))

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
