"""How well does a Tiny World text encoder keep each word of its captions apart? A linear probe: the mean of
the encoder's output vectors over a caption's tokens, for single-object captions drawn from the world;
a least-squares classifier (ridge) fitted on the first `--fit` captions names the object's colour, shape,
size and motion, and is scored on the next `--score`. A word the encoder has lost scores near chance.

    python benchmarks/text_probe.py [--weights DIR ...] [--fit 1500] [--score 500]

`--weights`: training runs' --out folders (default: the shipped weights); `--random` adds an encoder of
the shipped vocabulary and size at its training init, for a floor.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from spacetime.pipeline import TINY_WORLD_DIR, TINY_WORLD_FILES
from spacetime.text_encoders import UMT5Encoder, load_text_encoder
from spacetime.training.dit_stage import init_weights
from spacetime.training.scene import COLOURS, MOTIONS, SHAPES, SIZES
from spacetime.training.text_stage import captions_cut_quietly
from spacetime.training.world import caption, sample_scene

FIELDS = {"colour": tuple(COLOURS), "shape": SHAPES, "size": tuple(SIZES), "motion": MOTIONS}


def single_object_captions(count: int, seed: int):
    """`count` single-object scenes without a pan, and one caption each."""
    rng = np.random.default_rng(seed)
    scenes, texts = [], []
    while len(scenes) < count:
        scene = sample_scene(rng)
        if len(scene.objects) == 1 and scene.pan is None:
            scenes.append(scene)
            texts.append(caption(scene, rng))
    return scenes, texts


@torch.no_grad()
def pooled(encoder, texts: list[str], batch: int = 250) -> np.ndarray:
    """N×D: each caption's output vectors averaged over its tokens."""
    rows = []
    for start in range(0, len(texts), batch):
        with captions_cut_quietly():
            tokens = encoder.tokenizer(texts[start : start + batch], encoder.model.config.text_len)
        hidden = encoder.model(tokens.ids, tokens.mask).float()
        keep = tokens.mask.float()[..., None]
        rows.append(((hidden * keep).sum(1) / keep.sum(1)).numpy())
    return np.concatenate(rows)


def probe(features: np.ndarray, labels: np.ndarray, fit: int, classes: int, ridge: float = 1e-2) -> float:
    """Accuracy on rows fit: of a ridge classifier (one-hot targets) fitted on rows :fit."""
    mean, std = features[:fit].mean(0), features[:fit].std(0) + 1e-6
    x = np.concatenate([(features - mean) / std, np.ones((len(features), 1))], axis=1)
    target = np.eye(classes)[labels[:fit]]
    gram = x[:fit].T @ x[:fit] + ridge * fit * np.eye(x.shape[1])
    weights = np.linalg.solve(gram, x[:fit].T @ target)
    return float(((x[fit:] @ weights).argmax(1) == labels[fit:]).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", type=Path, nargs="*", default=[], help="training runs' --out folders")
    parser.add_argument("--random", action="store_true", help="also probe an encoder at its training init")
    parser.add_argument("--fit", type=int, default=1500)
    parser.add_argument("--score", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.fit < 10 or args.score < 1:
        parser.error(
            f"--fit {args.fit} / --score {args.score}: give at least 10 captions to fit and 1 to score."
        )
    folders = args.weights or [TINY_WORLD_DIR]
    for folder in folders:
        if not (folder / TINY_WORLD_FILES["text_encoder"]).is_file():
            parser.error(
                f"{folder} has no {TINY_WORLD_FILES['text_encoder']}: give a training run's --out folder."
            )
    torch.manual_seed(0)
    scenes, texts = single_object_captions(args.fit + args.score, args.seed)
    labels = {
        name: np.array([values.index(getattr(s.objects[0], name)) for s in scenes])
        for name, values in FIELDS.items()
    }
    encoders = [
        (str(folder), load_text_encoder(folder / TINY_WORLD_FILES["text_encoder"])) for folder in folders
    ]
    if args.random:
        name, encoder = encoders[0]
        fresh = UMT5Encoder(encoder.model.config)
        init_weights(fresh, 0)
        encoders.append(("training init", type(encoder)(encoder.tokenizer, fresh.eval())))
    chance = {name: max(np.bincount(labels[name][args.fit :])) / args.score for name in FIELDS}
    print(
        f"linear probe of the mean output vector: {args.fit} single-object captions fitted, {args.score} scored"
    )
    print("| text encoder | " + " | ".join(FIELDS) + " |")
    print("|---|" + "---|" * len(FIELDS))
    print("| chance (the commonest class) | " + " | ".join(f"{chance[n]:.2f}" for n in FIELDS) + " |")
    for name, encoder in encoders:
        encoder.model.eval()
        features = pooled(encoder, texts)
        scores = [probe(features, labels[n], args.fit, len(FIELDS[n])) for n in FIELDS]
        print(f"| {name} | " + " | ".join(f"{s:.2f}" for s in scores) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
