"""Why Tiny World paints the background in a prompt's colour when the prompt names no background: how often
the training captions name one, and what the text encoder keeps of a colour word with and without one.

    python benchmarks/colour_binding.py [--weights DIR]

1. Captions: the share of training captions (the 128x128 clips' seeds) that name the background, and the
   share whose background is called by a word that is also an object colour (blue, green).
2. Text encoder: the encoder's output at the colour word (its pieces' mean) in "a green square moving up"
   (no background), against the same word for the object when a background is named ("... on a black
   background") and for the background ("a red square moving up on a green background"), as cosine
   similarities over shapes, motions and background tones, for green and blue.
"""

from __future__ import annotations

import argparse
import re

import numpy as np
import torch

from spacetime.pipeline import load_tiny_world
from spacetime.text_encoders.tokenizer import clean
from spacetime.training.data import CHUNK, SIZE, _dataset_seed, draw_scenes

BACKGROUND = re.compile(r"background|backdrop|floor|checkerboard|gradient|stripes", re.IGNORECASE)
SHAPES = ("square", "circle", "star", "triangle", "cross")
MOTIONS = ("moving up", "moving left", "rotating", "growing")
TONES = ("black", "white", "grey", "brown")
OTHERS = ("red", "yellow", "pink", "purple")


def caption_shares(count: int) -> tuple[float, float]:
    named = shared = 0
    for index in range(0, count, CHUNK):
        for scene, text in draw_scenes(_dataset_seed(0, SIZE, index), CHUNK):
            named += bool(BACKGROUND.search(text))
            shared += scene.background.tone in ("blue", "green")
    return named / count, shared / count


def at_word(text_encoder, text: str, word: str) -> torch.Tensor:
    """The encoder's output at `word` in `text`: the mean over the word's sentencepiece pieces."""
    processor = text_encoder.tokenizer.processor
    start = text.index(f" {word} ") + 1
    before = len(processor.encode_as_pieces(clean(text[:start].rstrip())))
    count = len(processor.encode_as_pieces(word))
    with torch.no_grad():
        out = text_encoder.encode([text], torch.device("cpu"))[0]
    return out[before : before + count].mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--weights", help="Tiny World files (a training run's --out; default: the shipped ones)"
    )
    parser.add_argument("--captions", type=int, default=1024)
    args = parser.parse_args()
    named, shared = caption_shares(args.captions)
    print(f"{args.captions} training captions: {named:.1%} name the background; "
          f"{shared:.1%} have a background called blue or green, words that are also object colours\n")  # fmt: skip
    text_encoder = load_tiny_world(folder=args.weights, dtype=torch.float32)[1]
    cosine = torch.nn.functional.cosine_similarity
    pairs = {"no background ~ object with a background": [], "no background ~ background": [],
             "object with a background ~ background": []}  # fmt: skip
    for colour in ("green", "blue"):
        for shape in SHAPES:
            for motion in MOTIONS:
                plain = at_word(text_encoder, f"a {colour} {shape} {motion}", colour)
                for index, tone in enumerate(TONES):
                    obj = at_word(text_encoder, f"a {colour} {shape} {motion} on a {tone} background", colour)
                    other = OTHERS[index]
                    ground = at_word(
                        text_encoder, f"a {other} {shape} {motion} on a {colour} background", colour
                    )
                    values = (
                        cosine(plain, obj, dim=0),
                        cosine(plain, ground, dim=0),
                        cosine(obj, ground, dim=0),
                    )
                    for name, value in zip(pairs, values, strict=True):
                        pairs[name].append(value.item())
    print("| the colour word's encoding, compared | mean cosine | min | max |")
    print("|---|---|---|---|")
    for name, values in pairs.items():
        print(f"| {name} | {np.mean(values):.3f} | {np.min(values):.3f} | {np.max(values):.3f} |")


if __name__ == "__main__":
    main()
