"""Shot prompts: a short idea plus a few film-language fields, written as one descriptive caption.

Video models are trained on long, descriptive re-captions (the DALL-E 3 / Sora recipe: "A wide
shot of ... The camera tracks ..."), so a prompt written that way is followed more closely than a
few keywords. The caption comes from a template the user can edit:

- `{name}` is replaced by a field (the names are `PLACEHOLDERS`);
- `[ ... ]` is an optional part, written only when every field inside it has a value, so an
  empty field takes its words ("shot on", "The camera") and punctuation with it;
- when the subject field is empty the idea takes the `{subject}` slot (and `{idea}` is then
  empty), so the idea alone makes a whole caption and is never written twice.

An optional local language model (a transformers causal LM folder; never downloaded) can then
rewrite the caption into a longer one.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path

# Each dropdown's choices, as the node shows them, and the words they put into the caption.
SHOT_SIZES = {
    "none": "",
    "extreme wide shot": "an extreme wide shot",
    "wide shot": "a wide shot",
    "full shot": "a full shot",
    "medium wide shot": "a medium wide shot",
    "medium shot": "a medium shot",
    "medium close-up": "a medium close-up",
    "close-up": "a close-up",
    "extreme close-up": "an extreme close-up",
}
CAMERA_MOVES = {
    "none": "",
    "static": "the camera holds still",
    "pan left": "the camera pans left",
    "pan right": "the camera pans right",
    "tilt up": "the camera tilts up",
    "tilt down": "the camera tilts down",
    "dolly in": "the camera dollies in",
    "dolly out": "the camera dollies out",
    "zoom in": "the camera zooms in",
    "zoom out": "the camera zooms out",
    "tracking": "the camera tracks alongside the subject",
    "orbit": "the camera orbits around the subject",
    "handheld": "handheld camera, with a slight natural shake",
    "crane up": "the camera cranes up",
    "crane down": "the camera cranes down",
    "aerial": "an aerial camera glides over the scene",
}
LENSES = {
    "none": "",
    "14mm ultra wide": "a 14mm ultra-wide lens",
    "24mm wide": "a 24mm wide-angle lens",
    "35mm": "a 35mm lens",
    "50mm standard": "a 50mm lens",
    "85mm portrait": "an 85mm portrait lens",
    "135mm telephoto": "a 135mm telephoto lens",
    "macro": "a macro lens",
    "fisheye": "a fisheye lens",
    "anamorphic": "an anamorphic lens",
}
LIGHTING = {
    "none": "",
    "natural light": "soft natural light",
    "soft light": "soft, diffused light",
    "hard light": "hard light with crisp shadows",
    "golden hour": "warm golden-hour light",
    "blue hour": "cool blue-hour light",
    "backlit": "strong backlight",
    "rim light": "rim light outlining the subject",
    "low key": "low-key lighting with deep shadows",
    "high key": "bright high-key lighting",
    "overcast": "flat overcast light",
    "neon": "colourful neon light",
    "candlelight": "warm flickering candlelight",
    "moonlight": "cold moonlight",
    "studio": "even studio lighting",
    "volumetric": "volumetric light rays",
}
TIMES_OF_DAY = {
    "none": "",
    "dawn": "at dawn",
    "sunrise": "at sunrise",
    "morning": "in the morning",
    "midday": "at midday",
    "afternoon": "in the afternoon",
    "sunset": "at sunset",
    "dusk": "at dusk",
    "night": "at night",
    "midnight": "at midnight",
}
CHOICES = {
    "shot_size": SHOT_SIZES,
    "camera_move": CAMERA_MOVES,
    "lens": LENSES,
    "lighting": LIGHTING,
    "time_of_day": TIMES_OF_DAY,
}
PLACEHOLDERS = (
    "idea", "subject", "action", "setting", "time_of_day", "shot_size", "camera_move", "lens", "lighting",
    "style", "mood",
)  # fmt: skip

DEFAULT_TEMPLATE = (
    "[{idea}. ][{shot_size} of ]{subject}[ {action}][ {setting}][ {time_of_day}]. "
    "[{camera_move}. ][{lighting}][, shot on {lens}]. [{style}. ][The mood is {mood}.]"
)

_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")
_PLACEHOLDER = re.compile(r"\{(\w*)\}")
_LEADING_ARTICLE = re.compile(r"^(A|An|The)\b")
# Punctuation left behind by dropped parts, repaired in this order until nothing changes.
_TIDY = (
    (re.compile(r"\s+"), " "),
    (re.compile(r"(^|[.!?])(?: ?[,;:])+ ?"), r"\1 "),  # a separator that opens a sentence
    (re.compile(r" ([,.;:!?])"), r"\1"),  # "fox ." -> "fox."
    (re.compile(r"([,;:])[,;:]+"), r"\1"),  # ",," -> ","
    (re.compile(r"[,;:]([.!?])"), r"\1"),  # ",." -> "."
    (re.compile(r"(?<!\.)\.\.(?!\.)"), "."),  # ".." -> "." (an ellipsis stays)
)
_SENTENCE_START = re.compile(r"(^|(?<!\.\.)[.!?] )(\w+)")  # not after an ellipsis


@dataclasses.dataclass(frozen=True)
class Shot:
    """What to film: free-text fields and the dropdowns' choices (keys of `CHOICES`' tables)."""

    idea: str = ""
    subject: str = ""
    action: str = ""
    setting: str = ""
    time_of_day: str = "none"
    shot_size: str = "none"
    camera_move: str = "none"
    lens: str = "none"
    lighting: str = "none"
    style: str = ""
    mood: str = ""

    def __post_init__(self):
        for field, table in CHOICES.items():
            choice = getattr(self, field)
            if choice not in table:
                raise ValueError(
                    f"{field}={choice!r} is not one of the choices: {', '.join(map(repr, table))}."
                )
        if not (_clean(self.idea) or _clean(self.subject)):
            raise ValueError("Nothing to describe: write an idea (or a subject) for the shot.")

    def phrases(self) -> dict[str, str]:
        """Each placeholder's words: free text tidied, dropdown choices turned into phrases."""
        values = {name: _clean(getattr(self, name)) for name in PLACEHOLDERS}
        for field, table in CHOICES.items():
            values[field] = table[getattr(self, field)]
        return values


def _clean(text: str) -> str:
    """One line, no closing punctuation (the template places it), and a leading article in lower
    case so that it reads mid-sentence ("A red fox" -> "a red fox"; a name keeps its capital)."""
    text = " ".join(text.split()).rstrip(" .,;:")
    return _LEADING_ARTICLE.sub(lambda m: m.group(1).lower(), text)


def _placeholders(text: str) -> list[str]:
    names = _PLACEHOLDER.findall(text)
    unknown = [name for name in names if name not in PLACEHOLDERS]
    if unknown:
        raise ValueError(
            f"The template uses {{{unknown[0]}}}, which is not a field. "
            f"Fields: {', '.join('{' + name + '}' for name in PLACEHOLDERS)}."
        )
    return names


def render_template(template: str, values: dict[str, str]) -> str:
    """Fill `{name}`s, keep each `[optional part]` only when all its fields have values, then tidy
    the punctuation that dropped parts leave behind and capitalise each sentence."""
    _placeholders(template)
    outside_optional_parts = _OPTIONAL.sub("", template)
    if "[" in outside_optional_parts or "]" in outside_optional_parts:
        raise ValueError(
            "The template's [ and ] do not pair up (optional parts cannot be nested): "
            f"{template!r}. Each [optional part] opens and closes once."
        )

    def optional(match: re.Match) -> str:
        part = match.group(1)
        return part if all(values.get(name) for name in _placeholders(part)) else ""

    text = _OPTIONAL.sub(optional, template)
    text = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), text)
    tidied = None
    while tidied != text:
        tidied = text
        for pattern, replacement in _TIDY:
            text = pattern.sub(replacement, text)
    return _SENTENCE_START.sub(_capitalise, text.strip().rstrip(",;:").strip())


def _capitalise(match: re.Match) -> str:
    """A sentence's first word with a capital, unless it is mixed-case as written ("iPhone", "eBay")."""
    before, word = match.groups()
    return before + (word if word[1:] != word[1:].lower() else word[:1].upper() + word[1:])


def shot_prompt(shot: Shot, template: str = DEFAULT_TEMPLATE) -> str:
    """The caption for a shot, written with `template` (see the module's docstring for its syntax)."""
    values = shot.phrases()
    if not values["subject"] and "{subject}" in template:
        values["subject"], values["idea"] = values["idea"], ""
    return render_template(template, values)


# Expansion with a local language model --------------------------------------------------------

EXPAND_INSTRUCTION = (
    "Rewrite the video description below as one detailed paragraph, the way videos are captioned for "
    "training: describe the subject and its appearance, the action, the setting, the lighting, the camera "
    "and the style. Keep every detail it gives and contradict none; write plain present-tense prose, "
    "no lists, no preamble, at most 120 words."
)


@dataclasses.dataclass(frozen=True)
class LanguageModel:
    """A transformers causal LM and its tokenizer, loaded from a local folder."""

    folder: Path
    tokenizer: object
    model: object


@functools.lru_cache(maxsize=1)
def load_language_model(folder: str | Path) -> LanguageModel:
    """Load a causal LM saved with `save_pretrained` from a local folder; nothing is downloaded."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Language model folder {str(folder)!r} does not exist. Point it at a local folder holding a "
            "transformers causal LM (config.json, tokenizer files, weights), or leave it empty."
        )
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{str(folder)!r} holds no config.json, so it is not a transformers model folder. Point it at the "
            "folder that `save_pretrained` wrote (e.g. a Qwen2.5-0.5B-Instruct download), or leave it empty."
        )
    from ..checkpoint import PICKLE_SUFFIXES, CheckpointError

    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        held = f"its weights only as pickle files ({', '.join(pickles[:3])})" if pickles else "no weights"
        raise CheckpointError(
            f"{str(folder)!r} holds {held}; Spacetime loads only .safetensors weights (unpickling a file can run "
            "code). Use a model published with model.safetensors, or save it once with "
            "`save_pretrained(folder, safe_serialization=True)` where you trust the file."
        )
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            "Expanding prompts with a language model needs the transformers package: "
            "`pip install transformers` in ComfyUI's Python, or leave the language model empty."
        ) from error
    # safetensors weights only, and no code from the folder (its config may name some)
    options = dict(local_files_only=True, trust_remote_code=False)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **options)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, **options)
    return LanguageModel(folder, tokenizer, model.eval())


def expand_caption(caption: str, language_model: LanguageModel, max_new_tokens: int = 200) -> str:
    """Rewrite `caption` into a longer one with greedy decoding (the same caption every time)."""
    import torch

    tokenizer, model = language_model.tokenizer, language_model.model
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": EXPAND_INSTRUCTION}, {"role": "user", "content": caption}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = f"{EXPAND_INSTRUCTION}\n\nDescription: {caption}\nDetailed description:"
    device = next(model.parameters()).device
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
    reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    paragraph = " ".join(reply.strip().split("\n\n")[0].split())
    if not paragraph:
        raise ValueError(
            f"The language model in {str(language_model.folder)!r} wrote nothing for {caption!r}. "
            "An instruction-tuned model works best; or leave the language model empty to use the caption as is."
        )
    return paragraph
