"""The Tiny World's vocabulary and its scene description: what may appear in a clip, and how it moves.

Positions are fractions of the frame (x of its width, y of its height, y pointing down); sizes are
fractions of the frame's shorter side, so one scene renders alike at any size and frame count. Time
runs from 0 (first frame) to 1 (last frame). Object motion is what the viewer sees in the frame; a
camera pan moves only the background.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np

# Object colours (RGB), saturated and far apart in hue so the evaluator can name them back.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 40, 40),
    "orange": (245, 130, 20),
    "yellow": (235, 225, 30),
    "green": (50, 185, 70),
    "cyan": (35, 200, 215),
    "blue": (45, 90, 235),
    "purple": (150, 60, 220),
    "pink": (240, 95, 185),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
MOTIONS = ("left", "right", "up", "down", "grow", "shrink", "rotate", "still")
MOVES = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # screen axes, y down
# Nominal radius as a fraction of the frame's shorter side, at the start of the clip.
SIZES = {"small": 0.10, "medium": 0.13, "large": 0.16}
# Farthest point from the centre in nominal radii: keeps a shape in frame at any rotation.
EXTENT = {"circle": 1.0, "square": 1.245, "triangle": 1.3, "star": 1.3, "cross": 1.16}

# Backgrounds: a tone (base colour, second colour of its textures) under a pattern.
TONES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "white": ((236, 236, 232), (196, 196, 192)),
    "grey": ((120, 120, 124), (160, 160, 164)),
    "black": ((22, 22, 26), (66, 66, 70)),
    "sand": ((216, 200, 166), (186, 168, 132)),
    "blue": ((34, 50, 104), (62, 82, 142)),
    "green": ((40, 84, 50), (70, 118, 80)),
    "brown": ((104, 70, 48), (138, 100, 72)),
}
PATTERNS = ("plain", "stripes", "checker", "gradient", "noise")
PANNABLE = ("stripes", "checker", "noise")  # a pan over a plain colour or a vertical gradient shows nothing
PAN_DIRECTIONS = ("left", "right", "up", "down")
# Tones at least this saturated keep away (in hue) from the objects drawn on them.
CHROMATIC_SATURATION = 0.35
MIN_HUE_GAP = 70.0  # degrees between a chromatic background tone and any object colour on it


def hue_degrees(rgb: tuple[int, int, int]) -> float:
    return 360.0 * colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0]


def hue_gap(a: float, b: float) -> float:
    gap = abs(a - b) % 360.0
    return min(gap, 360.0 - gap)


def tone_allows(tone: str, colour: str) -> bool:
    """True where an object of `colour` stands out from a background of `tone` by hue or by saturation."""
    base = TONES[tone][0]
    if colorsys.rgb_to_hsv(*(c / 255 for c in base))[1] < CHROMATIC_SATURATION:
        return True
    return hue_gap(hue_degrees(base), hue_degrees(COLOURS[colour])) >= MIN_HUE_GAP


def _check_choice(kind: str, value: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"{kind}={value!r} is not one of the Tiny World's {kind}s: {', '.join(choices)}.")


@dataclass(frozen=True)
class ObjectSpec:
    """One object: what it is, where it starts (its centre) and how it moves over the clip."""

    shape: str
    colour: str
    size: str
    motion: str
    x: float = 0.5
    y: float = 0.5
    travel: float = 0.0  # moves: distance over the clip, as a fraction of the frame along the move
    scale: float = 1.0  # grow/shrink: final size over starting size
    turns: float = 0.0  # rotate: signed turns over the clip, positive counterclockwise

    def __post_init__(self):
        _check_choice("shape", self.shape, SHAPES)
        _check_choice("colour", self.colour, COLOURS)
        _check_choice("size", self.size, SIZES)
        _check_choice("motion", self.motion, MOTIONS)
        moving, scaling, turning = self.travel != 0.0, self.scale != 1.0, self.turns != 0.0
        expected = {
            "travel": self.motion in MOVES,
            "scale": self.motion in ("grow", "shrink"),
            "turns": self.motion == "rotate",
        }
        for name, actual in (("travel", moving), ("scale", scaling), ("turns", turning)):
            if actual != expected[name]:
                raise ValueError(
                    f"motion={self.motion!r} with {name}={getattr(self, name)}: a {self.motion} object "
                    f"{'needs' if expected[name] else 'takes no'} {name} (travel for moves, scale for "
                    "grow/shrink, turns for rotate)."
                )
        if self.travel < 0:
            raise ValueError(f"travel={self.travel} must be positive; the motion names the direction.")
        if (self.motion == "grow") != (self.scale > 1.0) and self.motion in ("grow", "shrink"):
            raise ValueError(
                f"motion={self.motion!r} needs scale {'> 1' if self.motion == 'grow' else '< 1'}."
            )
        if self.shape == "circle" and self.motion == "rotate":
            raise ValueError("A rotating circle looks exactly like a still one; pick another shape.")


@dataclass(frozen=True)
class Background:
    pattern: str
    tone: str
    angle: float = 0.0  # stripes: direction of the stripes' normal, degrees
    seed: int = 0  # noise: its random lattice

    def __post_init__(self):
        _check_choice("pattern", self.pattern, PATTERNS)
        _check_choice("tone", self.tone, TONES)


@dataclass(frozen=True)
class CameraPan:
    direction: str  # where the camera turns; the background slides the other way
    travel: float  # fraction of the frame along the pan over the clip

    def __post_init__(self):
        _check_choice("pan direction", self.direction, PAN_DIRECTIONS)
        if self.travel <= 0:
            raise ValueError(f"CameraPan.travel={self.travel} must be positive.")


@dataclass(frozen=True)
class Scene:
    objects: tuple[ObjectSpec, ...]  # drawn in order, up to two; none makes a background-only clip
    background: Background
    pan: CameraPan | None = None

    def __post_init__(self):
        if len(self.objects) > 2:
            raise ValueError(f"A Tiny World scene holds at most two objects, got {len(self.objects)}.")
        for obj in self.objects:
            if not tone_allows(self.background.tone, obj.colour):
                raise ValueError(
                    f"A {obj.colour} object is too close in hue to a {self.background.tone} background."
                )
        if self.pan is not None and not pan_visible(self.background, self.pan.direction):
            raise ValueError(
                f"A {self.pan.direction} pan over a {self.background.pattern} background (angle "
                f"{self.background.angle}) would not show; pan over stripes across the pan, checker or noise."
            )


def pan_visible(background: Background, direction: str) -> bool:
    if background.pattern not in PANNABLE:
        return False
    if background.pattern != "stripes":
        return True
    dx, dy = MOVES[direction]
    normal = math.radians(background.angle)
    return abs(dx * math.cos(normal) + dy * math.sin(normal)) > 0.3


def trajectory(obj: ObjectSpec, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centre x, y (frame fractions), size factor and angle (radians, counterclockwise) at each time in 0..1."""
    times = np.asarray(times, dtype=np.float64)
    dx, dy = MOVES.get(obj.motion, (0, 0))
    x = obj.x + dx * obj.travel * times
    y = obj.y + dy * obj.travel * times
    scale = obj.scale**times  # geometric, so the area changes at a steady rate
    angle = 2.0 * math.pi * obj.turns * times
    return x, y, scale, angle


def reach(obj: ObjectSpec) -> float:
    """Largest distance from the centre to the object's outline over the clip, in frame fractions."""
    return SIZES[obj.size] * EXTENT[obj.shape] * max(1.0, obj.scale)
