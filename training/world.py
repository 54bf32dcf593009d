"""The Tiny World: a seeded generator of short captioned videos of coloured shapes, with held-out combinations.

    scene = sample_scene(np.random.default_rng(0))          # what happens
    video = render(scene, frames=17, height=128, width=128)  # uint8 T×H×W×3
    text = caption(scene, rng)                               # "a small green square drifts upward over ..."

Training draws from split="train", which never contains a pair listed in HELDOUT (in any object);
`heldout_prompts` lists evaluation prompts made only of those unseen combinations, each with its
ground truth, to measure whether a model composes attributes it only saw apart.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .captions import caption, parse_caption, plain_caption
from .render import render
from .scene import (
    COLOURS,
    MOTIONS,
    MOVES,
    PAN_DIRECTIONS,
    PATTERNS,
    SHAPES,
    SIZES,
    TONES,
    Background,
    CameraPan,
    ObjectSpec,
    Scene,
    pan_visible,
    reach,
    tone_allows,
    trajectory,
)

__all__ = [
    "HELDOUT",
    "HELDOUT_TRIPLES",
    "Background",
    "CameraPan",
    "ObjectSpec",
    "Prompt",
    "Scene",
    "batches",
    "caption",
    "heldout_prompts",
    "is_heldout",
    "parse_caption",
    "plain_prompts",
    "render",
    "sample_example",
    "sample_object",
    "sample_scene",
]

# Pairs never seen together in training, by which attributes they pair.
HELDOUT: dict[str, frozenset[tuple[str, str]]] = {
    "colour+shape": frozenset(
        {
            ("red", "star"),
            ("yellow", "circle"),
            ("green", "triangle"),
            ("cyan", "square"),
            ("blue", "cross"),
            ("purple", "star"),
        }
    ),
    "colour+motion": frozenset({("orange", "up"), ("pink", "rotate"), ("green", "left"), ("blue", "shrink")}),
    "shape+motion": frozenset({("square", "down"), ("triangle", "grow")}),
}
SPLITS = ("train", "heldout")
MARGIN = 0.03  # least gap between an object and the frame's edge, as a fraction of the frame
OBJECT_GAP = 0.03  # least gap between two objects over the whole clip
TWO_OBJECTS = 0.3  # chance of a second object
PAN_CHANCE = 0.3  # chance of a camera pan where the background would show it
TRAVEL = (0.25, 0.45)  # moves, fraction of the frame
SCALE = (1.6, 2.0)  # grow and shrink, size ratio over the clip
TURNS = (0.2, 0.3)  # rotate, turns over the clip
PAN_TRAVEL = (0.2, 0.4)
STRIPE_ANGLES = (0.0, 45.0, 90.0, 135.0)
PLACEMENT_TRIES = 50
HELDOUT_STREAM = 1_000_003  # keeps evaluation prompts apart from any training stream of the same seed


def _possible(colour: str, shape: str, motion: str) -> bool:
    return not (shape == "circle" and motion == "rotate")


def is_heldout(colour: str, shape: str, motion: str) -> bool:
    """True when the combination contains a pair the training split never shows."""
    return (
        (colour, shape) in HELDOUT["colour+shape"]
        or (colour, motion) in HELDOUT["colour+motion"]
        or (shape, motion) in HELDOUT["shape+motion"]
    )


HELDOUT_TRIPLES: tuple[tuple[str, str, str], ...] = tuple(
    triple
    for triple in itertools.product(COLOURS, SHAPES, MOTIONS)
    if _possible(*triple) and is_heldout(*triple)
)


@dataclass(frozen=True)
class Prompt:
    """An evaluation prompt, the attributes its video must show, and a scene that shows them."""

    text: str
    target: dict[str, str]  # colour, shape, motion
    scene: Scene


def _pick(rng: np.random.Generator, options):
    return options[rng.integers(len(options))]


def _sample_attributes(rng: np.random.Generator, split: str) -> tuple[str, str, str]:
    if split == "heldout":
        return _pick(rng, HELDOUT_TRIPLES)
    while True:
        triple = (_pick(rng, tuple(COLOURS)), _pick(rng, SHAPES), _pick(rng, MOTIONS))
        if _possible(*triple) and not is_heldout(*triple):
            return triple


def sample_object(
    rng: np.random.Generator, colour: str, shape: str, motion: str, size: str | None = None
) -> ObjectSpec:
    """Size (unless given), motion amount and a start that keeps the object inside the frame (with MARGIN)
    all clip long."""
    size = _pick(rng, tuple(SIZES)) if size is None else size
    amounts = {}
    if motion in MOVES:
        room = 1.0 - 2.0 * (MARGIN + reach(ObjectSpec(shape, colour, size, "still")))
        amounts["travel"] = min(rng.uniform(*TRAVEL), room)
    elif motion in ("grow", "shrink"):
        ratio = rng.uniform(*SCALE)
        amounts["scale"] = ratio if motion == "grow" else 1.0 / ratio
    elif motion == "rotate":
        amounts["turns"] = rng.uniform(*TURNS) * _pick(rng, (-1.0, 1.0))
    extent = reach(ObjectSpec(shape, colour, size, motion, **amounts))
    dx, dy = MOVES.get(motion, (0, 0))
    travel = amounts.get("travel", 0.0)
    centre = []
    for step in (dx, dy):
        low = MARGIN + extent + max(0.0, -step * travel)
        high = 1.0 - MARGIN - extent - max(0.0, step * travel)
        centre.append(rng.uniform(low, max(low, high)))
    return ObjectSpec(shape, colour, size, motion, x=centre[0], y=centre[1], **amounts)


def _apart(a: ObjectSpec, b: ObjectSpec) -> bool:
    """True when the two objects' outlines keep OBJECT_GAP apart over the whole clip."""
    times = np.linspace(0.0, 1.0, 33)
    ax, ay, ascale, _ = trajectory(a, times)
    bx, by, bscale, _ = trajectory(b, times)
    needed = reach(a) * ascale / max(1.0, a.scale) + reach(b) * bscale / max(1.0, b.scale) + OBJECT_GAP
    return bool(np.all(np.hypot(ax - bx, ay - by) >= needed))


def _second_object(rng: np.random.Generator, first: ObjectSpec) -> ObjectSpec | None:
    for _ in range(PLACEMENT_TRIES):
        colour, shape, motion = _sample_attributes(rng, "train")
        if colour == first.colour:  # one object per colour, so captions and the evaluator can tell them apart
            continue
        second = sample_object(rng, colour, shape, motion)
        if _apart(first, second):
            return second
    return None


def _sample_background(
    rng: np.random.Generator, objects: list[ObjectSpec]
) -> tuple[Background, CameraPan | None]:
    tones = [tone for tone in TONES if all(tone_allows(tone, obj.colour) for obj in objects)]
    background = Background(
        pattern=_pick(rng, PATTERNS),
        tone=_pick(rng, tones),
        angle=_pick(rng, STRIPE_ANGLES),
        seed=int(rng.integers(2**31)),
    )
    directions = [d for d in PAN_DIRECTIONS if pan_visible(background, d)]
    if not directions or rng.random() >= PAN_CHANCE:
        return background, None
    return background, CameraPan(_pick(rng, directions), rng.uniform(*PAN_TRAVEL))


def sample_scene(rng: np.random.Generator, split: str = "train") -> Scene:
    """One or two objects over a background, maybe under a camera pan; split="heldout" makes the first
    object a held-out combination, split="train" never shows one."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}.")
    objects = [sample_object(rng, *_sample_attributes(rng, split))]
    if rng.random() < TWO_OBJECTS:
        second = _second_object(rng, objects[0])
        if second is not None:
            objects.append(second)
    background, pan = _sample_background(rng, objects)
    return Scene(tuple(objects), background, pan)


def sample_example(seed: int, index: int, split: str = "train") -> tuple[Scene, str]:
    """Clip `index` of the stream `seed`: its scene and caption, independent of every other clip."""
    rng = np.random.default_rng([seed, index])
    scene = sample_scene(rng, split)
    return scene, caption(scene, rng)


def batches(
    seed: int,
    batch: int,
    frames: int = 17,
    height: int = 128,
    width: int = 128,
    split: str = "train",
    start: int = 0,
) -> Iterator[tuple[np.ndarray, list[str]]]:
    """Endless batches of (uint8 videos B×T×H×W×3, captions), the same for the same seed; `start` skips clips."""
    if batch < 1:
        raise ValueError(f"batch={batch} must be at least 1.")
    for first in itertools.count(start, batch):
        examples = [sample_example(seed, index, split) for index in range(first, first + batch)]
        videos = np.stack([render(scene, frames, height, width) for scene, _ in examples])
        yield videos, [text for _, text in examples]


def plain_prompts(n: int = 64, seed: int = 0) -> list[Prompt]:
    """`n` evaluation prompts over the held-out combinations in the forms people type (captions.PLAIN_*):
    every other one names no background, the forms taken in turn, the size word as it falls."""
    if n < 1:
        raise ValueError(f"plain_prompts needs n >= 1, got {n}.")
    rng = np.random.default_rng([seed, HELDOUT_STREAM, 1])
    order = np.concatenate(
        [rng.permutation(len(HELDOUT_TRIPLES)) for _ in range(-(-n // len(HELDOUT_TRIPLES)))]
    )
    prompts = []
    for number, index in enumerate(order[:n]):
        colour, shape, motion = HELDOUT_TRIPLES[index]
        obj = sample_object(rng, colour, shape, motion)
        background = _sample_background(rng, [obj])[0]  # no pan: the prompt names none
        scene = Scene((obj,), background, None)
        text = plain_caption(scene, rng, background=number % 2 == 1, form=number // 2)
        prompts.append(Prompt(text, {"colour": colour, "shape": shape, "motion": motion}, scene))
    return prompts


def heldout_prompts(n: int = 64, seed: int = 0) -> list[Prompt]:
    """`n` single-object evaluation prompts over the held-out combinations, each combination once before any repeats."""
    if n < 1:
        raise ValueError(f"heldout_prompts needs n >= 1, got {n}.")
    rng = np.random.default_rng([seed, HELDOUT_STREAM])
    order = np.concatenate(
        [rng.permutation(len(HELDOUT_TRIPLES)) for _ in range(-(-n // len(HELDOUT_TRIPLES)))]
    )
    prompts = []
    for index in order[:n]:
        colour, shape, motion = HELDOUT_TRIPLES[index]
        obj = sample_object(rng, colour, shape, motion)
        background, pan = _sample_background(rng, [obj])
        scene = Scene((obj,), background, pan)
        prompts.append(
            Prompt(caption(scene, rng), {"colour": colour, "shape": shape, "motion": motion}, scene)
        )
    return prompts
