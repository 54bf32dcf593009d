"""Captions for Tiny World scenes from varied templates and synonyms, and the parser that reads them back.

Every template names each object as `[size] colour shape` followed, later in the sentence and
before the next object, by its motion phrase; `parse_caption` relies on that order.
"""

from __future__ import annotations

import re

import numpy as np

from .scene import ObjectSpec, Scene

COLOUR_WORDS = {
    "red": ("red",),
    "orange": ("orange",),
    "yellow": ("yellow",),
    "green": ("green",),
    "cyan": ("cyan", "turquoise"),
    "blue": ("blue",),
    "purple": ("purple", "violet"),
    "pink": ("pink",),
}
SHAPE_WORDS = {
    "circle": ("circle", "disc", "ball"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "star": ("star",),
    "cross": ("cross", "plus sign"),
}
SIZE_WORDS = {"small": ("small", "little"), "medium": ("", "", "", "medium-sized"), "large": ("large", "big")}

# (participle, present tense) pairs: "a red circle moving left", "a red circle moves left".
MOTION_PHRASES = {
    "left": (
        ("moving left", "moves left"),
        ("drifting to the left", "drifts to the left"),
        ("sliding left", "slides left"),
        ("gliding leftward", "glides leftward"),
        ("travelling to the left", "travels to the left"),
        ("heading left", "heads left"),
    ),
    "right": (
        ("moving right", "moves right"),
        ("drifting to the right", "drifts to the right"),
        ("sliding right", "slides right"),
        ("gliding rightward", "glides rightward"),
        ("travelling to the right", "travels to the right"),
        ("heading right", "heads right"),
    ),
    "up": (
        ("moving up", "moves up"),
        ("drifting upward", "drifts upward"),
        ("rising", "rises"),
        ("floating up", "floats up"),
        ("sliding upward", "slides upward"),
        ("climbing", "climbs"),
    ),
    "down": (
        ("moving down", "moves down"),
        ("drifting downward", "drifts downward"),
        ("sinking", "sinks"),
        ("falling", "falls"),
        ("sliding down", "slides down"),
        ("dropping", "drops"),
    ),
    "grow": (
        ("growing", "grows"),
        ("getting bigger", "gets bigger"),
        ("expanding", "expands"),
        ("growing larger", "grows larger"),
        ("swelling", "swells"),
        ("scaling up", "scales up"),
    ),
    "shrink": (
        ("shrinking", "shrinks"),
        ("getting smaller", "gets smaller"),
        ("contracting", "contracts"),
        ("shrinking away", "shrinks away"),
        ("dwindling", "dwindles"),
        ("scaling down", "scales down"),
    ),
    "rotate": (
        ("rotating", "rotates"),
        ("spinning", "spins"),
        ("turning", "turns"),
        ("spinning around", "spins around"),
        ("rotating in place", "rotates in place"),
    ),
    "still": (
        ("staying still", "stays still"),
        ("sitting still", "sits still"),
        ("resting in place", "rests in place"),
        ("standing still", "stands still"),
        ("not moving", "does not move"),
        ("holding still", "holds still"),
        ("staying put", "stays put"),
    ),
}
SPIN_WORDS = {1: ("counterclockwise", "anticlockwise"), -1: ("clockwise",)}

TONE_WORDS = {
    "white": ("white",),
    "grey": ("grey", "gray"),
    "black": ("black",),
    "sand": ("sand-coloured", "beige", "sandy"),
    "blue": ("blue", "navy"),
    "green": ("green", "dark green"),
    "brown": ("brown",),
}
BACKGROUND_NOUNS = {
    "plain": ("{tone} background", "plain {tone} background", "{tone} backdrop", "solid {tone} background"),
    "stripes": ("striped {tone} background", "{tone} striped floor", "background of {tone} stripes"),
    "checker": ("{tone} checkerboard", "checkered {tone} floor", "{tone} chequered backdrop"),
    "gradient": ("{tone} gradient", "{tone} gradient background", "softly shaded {tone} background"),
    "noise": ("mottled {tone} background", "cloudy {tone} backdrop", "blotchy {tone} floor"),
}
PREPOSITIONS = ("on", "over", "against", "in front of")
CAMERA_VERBS = {"left": "pans", "right": "pans", "up": "tilts", "down": "tilts"}
CAMERA_CLAUSES = (
    ", as the camera {verb} {direction}",
    ", while the camera {verb} {direction}",
    "; the camera {verb} {direction}",
    ". The camera {verb} {direction}",
)

ONE_OBJECT = (
    "{obj} {ing} {bg}",
    "{obj} {fin} {bg}",
    "{obj} is {ing} {bg}",
    "{bg}, {obj} {fin}",
    "{bg_noun} with {obj} {ing}",
    "video of {obj} {ing} {bg}",
    "there is {obj} {ing} {bg}",
    "{obj}, {ing}, {bg}",
)
TWO_OBJECTS = (
    "{obj} {ing} and {obj2} {ing2} {bg}",
    "{obj} {fin} while {obj2} {fin2} {bg}",
    "{bg}, {obj} {fin} and {obj2} {fin2}",
    "two shapes {bg}: {obj} {ing} and {obj2} {ing2}",
)


# Prompts in the forms people type: the object first, with or without a background, a size word or an
# article ("a green square moving up", "green square, moving up", "a green square that moves up on a
# black floor"). `caption(..., plain=p)` trains on them; `plain_caption` makes the evaluator's set.
PLAIN_ONE_OBJECT = ("{obj} {ing}", "{bare}, {ing}", "{obj} that {fin}", "{obj} {fin}")
PLAIN_WITH_BACKGROUND = (
    "{obj} that {fin} {bg}",
    "{bare}, {ing}, {bg}",
    "{obj} {ing} {bg}",
    "{bg_noun}, {obj} {fin}",
)
PLAIN_TWO_OBJECTS = ("{obj} {ing} and {obj2} {ing2}", "{bare}, {ing}; {bare2}, {ing2}")


def _pick(rng: np.random.Generator, options):
    return options[rng.integers(len(options))]


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _noun_phrase(obj: ObjectSpec, rng: np.random.Generator) -> str:
    words = [
        _pick(rng, SIZE_WORDS[obj.size]),
        _pick(rng, COLOUR_WORDS[obj.colour]),
        _pick(rng, SHAPE_WORDS[obj.shape]),
    ]
    return _with_article(" ".join(word for word in words if word))


def _motion(obj: ObjectSpec, rng: np.random.Generator) -> tuple[str, str]:
    ing, fin = _pick(rng, MOTION_PHRASES[obj.motion])
    if obj.motion == "rotate" and rng.random() < 0.5:
        spin = _pick(rng, SPIN_WORDS[1 if obj.turns > 0 else -1])
        ing, fin = f"{ing} {spin}", f"{fin} {spin}"
    return ing, fin


def _slots(scene: Scene, rng: np.random.Generator) -> dict[str, str]:
    """The phrases a template fills: the background (with and without a preposition) and, for each object,
    its noun phrase (with and without the article) and motion (participle and present tense)."""
    noun = _pick(rng, BACKGROUND_NOUNS[scene.background.pattern])
    bg_noun = _with_article(noun.format(tone=_pick(rng, TONE_WORDS[scene.background.tone])))
    slots = {"bg_noun": bg_noun, "bg": f"{_pick(rng, PREPOSITIONS)} {bg_noun}"}
    for index, obj in enumerate(scene.objects):
        suffix = str(index + 1) if index else ""
        slots["obj" + suffix] = _noun_phrase(obj, rng)
        slots["bare" + suffix] = slots["obj" + suffix].split(" ", 1)[1]
        slots["ing" + suffix], slots["fin" + suffix] = _motion(obj, rng)
    return slots


def plain_caption(scene: Scene, rng: np.random.Generator, background: bool, form: int | None = None) -> str:
    """A caption in a form people type (PLAIN_*): naming the background or not; `form` picks the template
    (None: at random)."""
    slots = _slots(scene, rng)
    if len(scene.objects) > 1:
        forms = PLAIN_TWO_OBJECTS
    else:
        forms = PLAIN_WITH_BACKGROUND if background else PLAIN_ONE_OBJECT
    template = forms[form % len(forms)] if form is not None else _pick(rng, forms)
    if len(scene.objects) > 1 and background:
        template += " {bg}"
    return template.format(**slots)


def caption(scene: Scene, rng: np.random.Generator, plain: float = 0.0) -> str:
    """A caption naming every object's size (unless medium), colour, shape and motion, the background and any
    pan; with chance `plain`, in a form people type instead (plain_caption: half of them without the
    background or the pan). `plain` 0 draws exactly what it always drew."""
    if not scene.objects:
        raise ValueError("caption needs a scene with at least one object.")
    if plain and rng.random() < plain:
        if rng.random() < 0.5:
            return plain_caption(scene, rng, background=False)
        text = plain_caption(scene, rng, background=True)
        if scene.pan is not None:
            text += _pick(rng, CAMERA_CLAUSES).format(
                verb=CAMERA_VERBS[scene.pan.direction], direction=scene.pan.direction
            )
        return text
    slots = _slots(scene, rng)
    text = _pick(rng, ONE_OBJECT if len(scene.objects) == 1 else TWO_OBJECTS).format(**slots)
    if scene.pan is not None:
        clause = _pick(rng, CAMERA_CLAUSES)
        text += clause.format(verb=CAMERA_VERBS[scene.pan.direction], direction=scene.pan.direction)
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:] + "."
    return text


def _alternation(words) -> str:
    return "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))


def _lookup(table: dict) -> dict[str, str]:
    return {word: name for name, words in table.items() for word in words if word}


_COLOURS, _SHAPES, _SIZES = _lookup(COLOUR_WORDS), _lookup(SHAPE_WORDS), _lookup(SIZE_WORDS)
_MOTIONS = {phrase: name for name, pairs in MOTION_PHRASES.items() for pair in pairs for phrase in pair}
_OBJECT = re.compile(
    rf"\b(?:({_alternation(_SIZES)})\s+)?({_alternation(_COLOURS)})\s+({_alternation(_SHAPES)})\b",
    re.IGNORECASE,
)
_MOTION = re.compile(rf"\b({_alternation(_MOTIONS)})\b", re.IGNORECASE)
_PAN = re.compile(r"\bcamera\s+(?:pans|panning|tilts|tilting)\s+(left|right|up|down)\b", re.IGNORECASE)


def parse_caption(text: str) -> list[dict[str, str]]:
    """The objects a Tiny World caption describes, in order: dicts of colour, shape, size and motion."""
    matches = list(_OBJECT.finditer(text))
    if not matches:
        raise ValueError(
            f"No object in {text!r}: a Tiny World prompt names one as '[size] colour shape', e.g. "
            f"'a small red circle moving left'. Colours: {', '.join(COLOUR_WORDS)}; shapes: {', '.join(SHAPE_WORDS)}."
        )
    objects = []
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        motion = _MOTION.search(text, match.end(), end)
        size, colour, shape = match.groups()
        objects.append(
            {
                "colour": _COLOURS[colour.lower()],
                "shape": _SHAPES[shape.lower()],
                "size": _SIZES[size.lower()] if size else "medium",
                "motion": _MOTIONS[motion.group(1).lower()] if motion else "still",
            }
        )
    return objects


def parse_pan(text: str) -> str | None:
    """The camera pan direction a caption names, or None."""
    match = _PAN.search(text)
    return match.group(1).lower() if match else None
