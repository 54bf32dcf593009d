"""Tiny World's training data: seeded clips of `world.py` as tensors, where their objects are, the latent
sets the DiT trains on (encoded once, cached in --out), and the primer of one look moving.

Axes: B clips, T frames, H W height and width; latent grids are T×H×W of the causal VAE (4x8x8).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..vae.wan22 import Wan22VAE
from .captions import plain_caption
from .runtime import log, share_cores
from .scene import MOVES, Background, Scene
from .world import caption, render, sample_object, sample_scene

FRAMES, SIZE = 17, 128  # the clips Tiny World generates
OBJECT_PIXEL_CHANGE = 8  # levels (of 255) an object must change a pixel by to count as covering it
CHUNK = 32  # clips rendered and encoded at a time; each chunk has its own seed


def draw_scenes(seed: int, count: int):
    """The seeded scenes and captions of `clips(seed, count)`, in order."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        scene = sample_scene(rng)
        yield scene, caption(scene, rng)


def clips(seed: int, count: int, frames: int = FRAMES, size: int = SIZE) -> tuple[np.ndarray, list[str]]:
    scenes, captions = zip(*draw_scenes(seed, count), strict=True)
    return np.stack([render(scene, frames, size, size) for scene in scenes]), list(captions)


def object_masks(seed: int, count: int, frames: int = FRAMES, size: int = SIZE) -> np.ndarray:
    """B×T×H×W bool: the pixels the objects change in the clips `clips(seed, count, ...)` draws (the same
    scenes, drawn once with and once without their objects)."""
    return np.stack([scene_mask(scene, frames, size) for scene, _ in draw_scenes(seed, count)])


def scene_mask(scene: Scene, frames: int, size: int, drawn: np.ndarray | None = None) -> np.ndarray:
    """T×H×W bool: the pixels the scene's objects change (drawn once with and once without them; `drawn`:
    the scene's frames when they are already rendered)."""
    drawn = (render(scene, frames, size, size) if drawn is None else drawn).astype(np.int16)
    empty = render(replace(scene, objects=()), frames, size, size)
    return np.abs(drawn - empty).max(axis=-1) > OBJECT_PIXEL_CHANGE


def latent_mask(masks: np.ndarray, spatial: int = 8, temporal: int = 4) -> torch.Tensor:
    """Pixel masks B×T×H×W (T = 1 + 4k) to the latent grid B×(1+k)×H/8×W/8: a latent cell is set when
    any pixel it encodes is (the first latent frame encodes frame 0 alone, as the causal VAE does)."""
    x = torch.from_numpy(masks).float()[:, None]
    x = torch.cat([x[:, :, :1].expand(-1, -1, temporal - 1, -1, -1), x], dim=2)  # frame 0 fills its own group
    pooled = F.max_pool3d(x, (temporal, spatial, spatial), (temporal, spatial, spatial))
    return pooled[:, 0] > 0


def to_video(frames: np.ndarray) -> torch.Tensor:
    """uint8 B×T×H×W×3 -> float B×3×T×H×W in -1..1."""
    return torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


# The latent sets -------------------------------------------------------------------------------------


def _dataset_seed(seed: int, size: int, index: int) -> int:
    """The seed of the 32 cached clips from `index` on; 128x128 keeps the clips the shipped DiT saw."""
    return seed * 7919 + (0 if size == SIZE else size * 1_000_003) + index


@torch.no_grad()
def encode_dataset(
    model: Wan22VAE, out: Path, count: int, seed: int, size: int = SIZE
) -> tuple[torch.Tensor, list[str]]:
    """`count` clips rendered at size×size, encoded once (cached in --out, one file per size)."""
    path, caption_path = out / f"latents_{size}.safetensors", out / f"captions_{size}.json"
    if path.exists():  # an earlier run's cache
        return load_file(str(path))["latents"], json.loads(caption_path.read_text())
    latents, captions = [], []
    start = time.time()
    for index in range(0, count, CHUNK):
        frames, texts = clips(_dataset_seed(seed, size, index), min(CHUNK, count - index), size=size)
        latents.append(model.encode(to_video(frames)).half())
        captions += texts
        if index % 1024 == 0:
            share_cores()
            log(f"encoded {index}/{count} clips at {size}x{size} ({time.time() - start:.0f} s)")
    latents = torch.cat(latents)
    save_file({"latents": latents}, str(path))
    caption_path.write_text(json.dumps(captions))
    return latents, captions


PLAIN_STREAM = 36  # the random stream of plain_recaptioned, apart from the scenes' own


def plain_recaptioned(captions: list[str], seed: int, size: int, share: float) -> list[str]:
    """`captions` (of `encode_dataset(..., count, seed, size)`, in order) with about `share` of them written
    again in a form people type (captions.plain_caption: half of those without the background). The scenes
    are drawn again from their seeds, so the clips and latents stay the cached ones; the choices come from
    a stream of their own, so `share` 0 changes nothing."""
    if not share:
        return list(captions)
    rng = np.random.default_rng((seed, size, PLAIN_STREAM))
    written = []
    for index in range(0, len(captions), CHUNK):
        scenes = [
            scene
            for scene, _ in draw_scenes(_dataset_seed(seed, size, index), min(CHUNK, len(captions) - index))
        ]
        for scene, text in zip(scenes, captions[index : index + CHUNK], strict=True):
            if rng.random() < share:
                text = plain_caption(scene, rng, background=rng.random() < 0.5)
            written.append(text)
    return written


def object_dataset(out: Path, count: int, seed: int, size: int = SIZE) -> torch.Tensor:
    """Where the objects are in the clips `encode_dataset` encodes, on the latent grid (cached in --out)."""
    path = out / f"objects_{size}.safetensors"
    if path.exists():
        return load_file(str(path))["objects"]
    start, masks = time.time(), []
    for index in range(0, count, CHUNK):
        masks.append(
            latent_mask(object_masks(_dataset_seed(seed, size, index), min(CHUNK, count - index), size=size))
        )
    masks = torch.cat(masks)
    save_file({"objects": masks}, str(path))
    share = f"{masks.float().mean():.1%}"
    log(
        f"object masks {tuple(masks.shape)} at {size}x{size}: {share} of latent cells ({time.time() - start:.0f} s)"
    )
    return masks


# One look moving: the primer (--direction-share, --primer-motions) ----------------------------------

# colour, shape, size, background tone: none of its moves is a held-out combination
PRIMER_LOOK = ("red", "circle", "large", "black")
PRIMER_CAPTION = "a large red circle moving {} on a black background"
# --primer-motions all adds these, one template each; a circle cannot be seen to turn, so a cross rotates.
# No pair in them is held out either (red with a cross; red, a circle or a cross with these motions).
PRIMER_MORE = {
    "grow": ("circle", "a large red circle growing on a black background"),
    "shrink": ("circle", "a large red circle shrinking on a black background"),
    "rotate": ("cross", "a large red cross rotating on a black background"),
}
PRIMER_MOTIONS = {"directions": tuple(MOVES), "all": (*MOVES, *PRIMER_MORE)}
PRIMER_FILES = {"directions": "direction_primer_{}.safetensors", "all": "motion_primer_{}.safetensors"}


@dataclass
class Primer:
    """Primer clips (primer_scenes) at one resolution, encoded."""

    latents: torch.Tensor
    captions: list[str]
    objects: torch.Tensor


def primer_scenes(count: int, seed: int, motions: str = "directions") -> list[tuple[Scene, str]]:
    """One look, a large red circle on plain black without a pan, moving left, right, up and down in turn,
    each named by one caption template: clips where the direction is the only thing to learn. `motions`
    "all" also grows, shrinks and rotates it (a large red cross rotates) in the turn."""
    colour, shape, size, tone = PRIMER_LOOK
    rng = np.random.default_rng((seed, 11))
    chosen = PRIMER_MOTIONS[motions]
    scenes = []
    for index in range(count):
        motion = chosen[index % len(chosen)]
        look, text = PRIMER_MORE.get(motion, (shape, PRIMER_CAPTION.format(motion)))
        obj = sample_object(rng, colour, look, motion, size=size)
        scenes.append((Scene((obj,), Background("plain", tone), None), text))
    return scenes


@torch.no_grad()
def primer_dataset(
    model: Wan22VAE, out: Path, count: int, seed: int, size: int = SIZE // 2, motions: str = "directions"
) -> Primer:
    """`count` primer clips at size×size, encoded once with their object masks (cached in --out)."""
    path = out / PRIMER_FILES[motions].format(size)
    if path.exists():
        with safe_open(str(path), "pt") as handle:
            captions = json.loads(handle.metadata()["captions"])
            return Primer(handle.get_tensor("latents"), captions, handle.get_tensor("objects"))
    latents, masks, captions = [], [], []
    drawn = primer_scenes(count, seed, motions)
    for first in range(0, count, CHUNK):
        chunk = drawn[first : first + CHUNK]
        latents.append(
            model.encode(to_video(np.stack([render(s, FRAMES, size, size) for s, _ in chunk]))).half()
        )
        masks.append(latent_mask(np.stack([scene_mask(s, FRAMES, size) for s, _ in chunk])))
        captions += [text for _, text in chunk]
    primer = Primer(torch.cat(latents), captions, torch.cat(masks))
    save_file(
        {"latents": primer.latents, "objects": primer.objects},
        str(path),
        metadata={"captions": json.dumps(captions)},
    )
    log(f"{motions} primer: {count} clips at {size}x{size}")
    return primer
