"""Does Tiny World follow the direction in its caption? Two probes that need no full evaluation run:

1. Caption swap: the DiT's denoising loss on rendered single-object clips moving left, right, up or down,
   with the true caption, with the opposite direction, and with another colour (each caption drawn
   with the same template); at several noise levels. A model that reads the word denoises worse with the wrong one.
2. First frame given: a centred object's first frame is pinned, and the model is asked for each of the
   four directions with the same seed; the evaluator's centroid track gives the travel along the asked
   direction (truth: 0.35 of the frame over the clip) and how often the motion is read as the one asked.

    python benchmarks/direction.py [--weights DIR] [--size 64] [--objects 12]

`--weights`: a training run's --out, which holds all three files (default: the shipped weights). Sizes
are 64 (the first DiT stage's) or 128.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from spacetime.dit import SpacetimePatches
from spacetime.dit.patchify import patchify
from spacetime.pipeline import load_tiny_world
from spacetime.samplers.denoiser import denoise
from spacetime.samplers.schedules import schedule_by_name
from spacetime.training.evaluate import evaluate_video
from spacetime.training.scene import COLOURS, MOVES, tone_allows
from spacetime.training.world import caption, render, sample_scene
from spacetime.vae import frames_to_video, video_to_frames

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def moving_scenes(count: int, seed: int, plain: bool = False):
    """Single-object scenes without a pan whose object moves left, right, up or down."""
    rng = np.random.default_rng(seed)
    while count:
        scene = sample_scene(rng)
        if len(scene.objects) != 1 or scene.pan is not None or scene.objects[0].motion not in MOVES:
            continue
        if plain and scene.background.pattern != "plain":
            continue
        count -= 1
        yield scene


def other_colour(colour: str, tone: str) -> str:
    """The colour farthest from `colour` on the hue circle that the background's tone allows."""
    colours = list(COLOURS)
    start = colours.index(colour)
    for step in (4, 3, 5, 2, 6, 1, 7):
        other = colours[(start + step) % len(colours)]
        if tone_allows(tone, other):
            return other
    raise ValueError(f"no other colour than {colour} suits a {tone} background")


def captioned(scene, index: int, **change) -> str:
    """The caption of `scene` with its object's attributes changed, drawn with the same template."""
    obj = replace(scene.objects[0], **change)
    return caption(replace(scene, objects=(obj,)), np.random.default_rng([7, index]))


@torch.no_grad()
def caption_swap(dit, text_encoder, vae, size: int, count: int) -> list[tuple[float, float, float, float]]:
    """(sigma, loss with the true caption, change with the direction swapped, change with the colour
    changed) at each noise level, over `count` clips."""
    scenes = list(moving_scenes(count, seed=5))
    objects = [scene.objects[0] for scene in scenes]
    changes = [
        [{} for _ in scenes],
        [{"motion": OPPOSITE[obj.motion]} for obj in objects],
        [
            {"colour": other_colour(obj.colour, s.background.tone)}
            for obj, s in zip(objects, scenes, strict=True)
        ],
    ]
    texts = [
        [captioned(s, i, **c) for i, (s, c) in enumerate(zip(scenes, change, strict=True))]
        for change in changes
    ]
    latent = torch.cat(
        [
            vae.encode(frames_to_video(torch.from_numpy(render(s, 17, size, size)).float() / 255))
            for s in scenes
        ]
    )
    contexts = [text_encoder.encode(t) for t in texts]
    generator = torch.Generator().manual_seed(0)
    rows = []
    for sigma in (0.4, 0.6, 0.8, 0.95):
        noise = torch.randn(latent.shape, generator=generator)
        tokens, grid = patchify((1 - sigma) * latent + sigma * noise, dit.config.patch_size)
        target, _ = patchify(noise - latent, dit.config.patch_size)
        timestep = torch.full(tokens.shape[:2], 1000 * sigma)
        losses = [
            (dit.forward_tokens(tokens, grid, timestep, c) - target).pow(2).mean().item() for c in contexts
        ]
        rows.append((sigma, losses[0], losses[1] - losses[0], losses[2] - losses[0]))
    return rows


@torch.no_grad()
def first_frame(dit, text_encoder, vae, size: int, count: int) -> tuple[float, int, int]:
    """(mean travel along the asked direction, videos read as the asked motion, videos) over `count`
    objects centred on a plain background, each asked for the four directions with one seed."""
    along, right, total = [], 0, 0
    for index, scene in enumerate(moving_scenes(count, seed=11, plain=True)):
        for motion, (dx, dy) in MOVES.items():
            obj = replace(scene.objects[0], motion=motion, x=0.5, y=0.5, travel=0.35)
            asked = replace(scene, objects=(obj,))
            text = captioned(asked, index)
            latent = vae.encode(
                frames_to_video(torch.from_numpy(render(asked, 17, size, size)).float() / 255)
            )
            patches = SpacetimePatches.from_latent(latent, dit.config.patch_size, dit.latent_format)
            pinned = torch.zeros(patches.tokens.shape[:2], dtype=torch.bool)
            pinned[:, : patches.grid[1] * patches.grid[2]] = True  # latent frame 0: the first frame
            patches = replace(patches, pinned=pinned, known=patches.tokens.clone())
            context = text_encoder.encode([text, ""])
            sigmas = schedule_by_name("simple")(20, shift=3.0)
            out = denoise(dit, patches, sigmas, context[:1], context[1:], cfg=5.0, seed=index)
            video = video_to_frames(vae.decode(out.to_latent())).mul(255).round().byte().numpy()
            result = evaluate_video(video, {"colour": obj.colour, "shape": obj.shape, "motion": motion})
            x, y = result["details"].get("displacement", (0.0, 0.0))
            along.append(x * dx + y * dy)
            right += result["motion_ok"]
            total += 1
    return float(np.mean(along)), right, total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", type=Path, help="a training run's --out (default: the shipped weights)")
    parser.add_argument("--size", type=int, default=64, choices=(64, 128))
    parser.add_argument("--objects", type=int, default=12, help="objects of the first-frame probe")
    parser.add_argument("--clips", type=int, default=24, help="clips of the caption-swap probe")
    args = parser.parse_args(argv)
    dit, text_encoder, vae = load_tiny_world(device="cpu", vae_device="cpu", folder=args.weights)
    print(f"\nTiny World ({args.weights or 'shipped'}), {args.size}x{args.size}\n")
    print("| noise level | loss, true caption | direction swapped | colour changed |")
    print("|---|---|---|---|")
    for sigma, loss, direction, colour in caption_swap(dit, text_encoder, vae, args.size, args.clips):
        print(f"| {sigma} | {loss:.4f} | {direction:+.4f} | {colour:+.4f} |")
    along, right, total = first_frame(dit, text_encoder, vae, args.size, args.objects)
    print(
        f"\nFirst frame given, each of 4 directions asked: travel along the asked direction {along:+.3f} of "
        f"the frame (truth 0.35), read as the asked motion {right} of {total}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
