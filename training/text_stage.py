"""Stage 3 of Tiny World's training: the text encoder, before the DiT reads it.

A UMT5 encoder (2 layers, width 128) with a sentencepiece vocabulary learnt from the captions (stored in
the weights file as `spiece_model`, as ComfyUI's UMT5 files do). It first learns to read each scene's
attributes back from its caption (pretrain_text); then it trains with the DiT (dit_stage).

Axes: B captions, L tokens, D width.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..text_encoders.tokenizer import SentencePieceTokenizer
from ..text_encoders.umt5 import UMT5Config, UMT5Encoder
from .runtime import log
from .scene import COLOURS, MOTIONS, PAN_DIRECTIONS, PATTERNS, SHAPES, SIZES, TONES
from .world import caption, sample_scene

TEXT_LEN = 64  # captions are short: the DiT reads 64 text tokens, not Wan's 512
TEXT_DIM, TEXT_LAYERS, TEXT_HEADS, TEXT_FFN, VOCAB = 128, 2, 4, 256, 400
TEXT_LR = 1e-3  # of the stage before the DiT (the same as the DiT's)
TEXT_FILE = "tiny_world_umt5.safetensors"


def train_tokenizer(captions: list[str]) -> bytes:
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(captions), model_writer=model, vocab_size=VOCAB, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, byte_fallback=True,
        minloglevel=2, num_threads=1, shuffle_input_sentence=False, seed_sentencepiece_size=100000,
    )  # fmt: skip
    return model.getvalue()


def text_encoder(vocab_size: int) -> UMT5Encoder:
    """Tiny World's UMT5 encoder for a vocabulary of `vocab_size`, with PyTorch's default init."""
    config = UMT5Config(
        vocab_size=vocab_size, dim=TEXT_DIM, ffn_dim=TEXT_FFN, num_layers=TEXT_LAYERS,
        num_heads=TEXT_HEADS, head_dim=TEXT_DIM // TEXT_HEADS, name="Tiny World UMT5",
    )  # fmt: skip
    return UMT5Encoder(config)


@contextlib.contextmanager
def captions_cut_quietly():
    """The few captions over TEXT_LEN tokens are cut on purpose: the pack's warning about it is held back."""
    logger = logging.getLogger("spacetime")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class SceneHeads(torch.nn.Module):
    """Reads a Tiny World scene back from the text encoder's token vectors: two object slots, each pooled by
    attention with a learnt query, name their object's colour, shape, size and motion (or that there is no
    such object); the mean vector names the background's pattern and tone and the camera pan."""

    SLOTS = 2
    OBJECT_FIELDS = (
        ("colour", tuple(COLOURS)),
        ("shape", SHAPES),
        ("size", tuple(SIZES)),
        ("motion", MOTIONS),
    )
    SCENE_FIELDS = (("pattern", PATTERNS), ("tone", tuple(TONES)), ("pan", (*PAN_DIRECTIONS, "none")))

    def __init__(self, dim: int):
        super().__init__()
        self.queries = torch.nn.Parameter(torch.randn(self.SLOTS, dim) * dim**-0.5)
        self.objects = torch.nn.ModuleList(
            torch.nn.ModuleDict(
                {name: torch.nn.Linear(dim, len(values) + 1) for name, values in self.OBJECT_FIELDS}
            )
            for _ in range(self.SLOTS)
        )
        self.scene = torch.nn.ModuleDict(
            {name: torch.nn.Linear(dim, len(values)) for name, values in self.SCENE_FIELDS}
        )

    @staticmethod
    def _scene_value(scene, name: str) -> str:
        if name == "pan":
            return scene.pan.direction if scene.pan else "none"
        return getattr(scene.background, name)

    def loss(self, hidden: torch.Tensor, mask: torch.Tensor, scenes: list) -> torch.Tensor:
        """Cross-entropy summed over every field, for token vectors B×L×D of the scenes' captions."""
        keep = mask.bool()
        mean = (hidden * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
        scores = torch.einsum("bld,sd->bsl", hidden, self.queries) / math.sqrt(hidden.shape[-1])
        slots = torch.einsum(
            "bsl,bld->bsd", scores.masked_fill(~keep[:, None], -math.inf).softmax(-1), hidden
        )
        total = hidden.new_zeros(())
        for slot, heads in enumerate(self.objects):
            for name, values in self.OBJECT_FIELDS:
                target = [
                    values.index(getattr(scene.objects[slot], name))
                    if slot < len(scene.objects)
                    else len(values)
                    for scene in scenes
                ]
                total = total + F.cross_entropy(heads[name](slots[:, slot]), torch.tensor(target))
        for name, values in self.SCENE_FIELDS:
            target = [values.index(self._scene_value(scene, name)) for scene in scenes]
            total = total + F.cross_entropy(self.scene[name](mean), torch.tensor(target))
        return total


def pretrain_text(
    text: UMT5Encoder, tokenizer: SentencePieceTokenizer, steps: int, seed: int, batch: int = 64
) -> list[float]:
    """Teach the text encoder the world's words before the DiT reads it: on freshly drawn scenes, the
    scene's attributes are read back from its caption's token vectors (SceneHeads), so synonyms ("ball",
    "disc", "circle"), colours and which object does what are told apart from the first DiT step. The heads
    (initialised from the global torch generator) are dropped afterwards. Returns the loss every 100 steps."""
    if steps <= 0:
        return []
    heads = SceneHeads(text.config.dim)
    optimizer = torch.optim.AdamW([*text.parameters(), *heads.parameters()], lr=TEXT_LR, weight_decay=0.01)
    rng = np.random.default_rng((seed, 7))
    losses, start = [], time.time()
    for step in range(steps):
        scenes = [sample_scene(rng) for _ in range(batch)]
        with captions_cut_quietly():
            tokens = tokenizer([caption(scene, rng) for scene in scenes], TEXT_LEN)
        loss = heads.loss(text(tokens.ids, tokens.mask), tokens.mask, scenes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            losses.append(loss.item())
            log(f"text step {step}/{steps} loss {loss.item():.3f} ({time.time() - start:.0f} s)")
    return losses
