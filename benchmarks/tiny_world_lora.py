"""The Tiny World LoRA's effect: Tiny World's videos for held-out prompts with the LoRA at strength 1 and
without (the same seeds), and how often a yellow object is there (the evaluator's colour tracks); and
whether strength 0 gives exactly the video without the LoRA.

    python benchmarks/tiny_world_lora.py [FILE] [--prompts 24]

FILE defaults to the shipped tiny_world/loras/tiny_world_yellow.safetensors.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from spacetime.pipeline import TINY_WORLD_SETTINGS, load_tiny_world, text_to_video
from spacetime.training.lora_stage import EFFECT_COLOUR, LORA_FILE
from spacetime.training.scene import tone_allows
from spacetime.training.world import heldout_prompts


def effect_prompts(count: int, seed: int = 0):
    """Held-out prompts naming a colour other than yellow and orange, on backgrounds that can show yellow."""
    chosen = []
    for prompt in heldout_prompts(8 * count, seed):
        if prompt.target["colour"] not in (EFFECT_COLOUR, "orange") and tone_allows(
            prompt.scene.background.tone, EFFECT_COLOUR
        ):
            chosen.append(prompt)
        if len(chosen) == count:
            return chosen
    raise ValueError(f"only {len(chosen)} held-out prompts fit the yellow LoRA's evaluation, {count} asked.")


def evaluate_lora(path: Path, count: int = 24, seed: int = 0) -> dict:
    """Tiny World's videos for `count` held-out prompts with the LoRA at strength 1 and without: how often a
    yellow object appears (the evaluator's colour reading), and whether strength 0 equals no LoRA."""
    from spacetime.lora import load_lora
    from spacetime.training.evaluate import evaluate_video

    dit, text_encoder, vae = load_tiny_world(
        dtype=torch.float32
    )  # as the evaluator: the same on every machine
    handles = {"without": dit, "with": dit.with_lora(load_lora(path, dit), 1.0)}
    found = {name: [] for name in handles}
    zero_equal = None
    for index, prompt in enumerate(effect_prompts(count, seed)):
        settings = replace(TINY_WORLD_SETTINGS, seed=seed + index)
        for name, handle in handles.items():
            video = text_to_video(
                handle, text_encoder, vae, prompt.text, "", settings, progress=lambda *_: None
            )
            frames = video.mul(255).round().byte().numpy()
            found[name].append(bool(evaluate_video(frames, {"colour": EFFECT_COLOUR})["colour_ok"]))
            if index == 0 and name == "without":
                zero = dit.with_lora(load_lora(path, dit), 0.0)
                again = text_to_video(
                    zero, text_encoder, vae, prompt.text, "", settings, progress=lambda *_: None
                )
                zero_equal = bool(torch.equal(again, video))
    return {
        "prompts": count,
        "yellow_with_lora": sum(found["with"]) / count,
        "yellow_without": sum(found["without"]) / count,
        "strength_0_equals_none": zero_equal,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, nargs="?", default=LORA_FILE)
    parser.add_argument("--prompts", type=int, default=24)
    args = parser.parse_args()
    print(json.dumps(evaluate_lora(args.file, args.prompts), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
