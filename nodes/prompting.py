"""Prompting: SpacetimeShotPrompt (a caption from an idea and film-language fields) and
SpacetimePromptGuard (a user-editable blocklist)."""

from __future__ import annotations

from .. import host
from ..editing.storyboard import rewrite_storyboard
from ..prompting import (
    BLOCKLIST_FILENAME,
    CHOICES,
    DEFAULT_TEMPLATE,
    Shot,
    check_prompt,
    expand_caption,
    load_language_model,
    parse_blocklist,
    shot_prompt,
    user_blocklist,
)

LANGUAGE_MODELS = "LLM"  # models/LLM: the folder Shot Prompt's language models are named in


def _line(tooltip: str) -> tuple:
    return ("STRING", {"default": "", "tooltip": tooltip})


def _choice(field: str, tooltip: str) -> tuple:
    return (list(CHOICES[field]), {"default": "none", "tooltip": tooltip})


class SpacetimeShotPrompt:
    CATEGORY = "Spacetime/prompting"
    FUNCTION = "write"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("prompt",)
    OUTPUT_TOOLTIPS = (
        "The caption: wire it into a text encoder's prompt (turn that widget into an input). With a "
        "storyboard: the storyboard with each shot's caption, for Storyboard (Spacetime).",
    )
    DESCRIPTION = (
        "Writes a short idea and a few film-language choices (shot size, camera move, lens, lighting, time of "
        "day) as one descriptive caption, the kind of text video models are trained on. The same inputs always "
        "give the same caption; the template is editable. Optionally a local language model rewrites it at "
        "greater length. Given a storyboard, it writes every shot's line that way (each line's prompt is its "
        "idea, the other fields shared)."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "idea": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": "",
                        "tooltip": "What the shot shows, in a few words: 'a red fox trotting through deep snow'. "
                        "With a subject below, it becomes an opening sentence instead.",
                    },
                ),
                "subject": _line(
                    "Who or what is filmed: 'a red fox with a bushy tail'. Leave empty to use the idea."
                ),
                "action": _line("What it does, as an -ing phrase: 'trotting through deep snow'."),
                "setting": _line("Where, with its preposition: 'in a silent pine forest'."),
                "time_of_day": _choice("time_of_day", "When the shot happens ('at dusk')."),
                "shot_size": _choice(
                    "shot_size",
                    "How much of the scene the frame holds, from extreme wide to extreme close-up.",
                ),
                "camera_move": _choice("camera_move", "How the camera moves during the shot."),
                "lens": _choice(
                    "lens", "The lens it is 'shot on': wide lenses exaggerate depth, long ones flatten it."
                ),
                "lighting": _choice("lighting", "The light on the scene."),
                "style": _line("The look: 'cinematic, 35mm film grain', 'watercolour animation'."),
                "mood": _line("The mood, as adjectives: 'calm and contemplative'."),
                "template": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": DEFAULT_TEMPLATE,
                        "tooltip": "How the caption is written. {field} is replaced by a field (idea, subject, "
                        "action, setting, time_of_day, shot_size, camera_move, lens, lighting, style, mood); "
                        "[an optional part] is written only when every field in it has a value. With no "
                        "subject, the idea fills {subject}.",
                    },
                ),
            },
            "optional": {
                "language_model": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Optional: the name of a folder in models/LLM holding a local transformers "
                        "causal LM with safetensors weights (e.g. an instruction-tuned Qwen or Llama saved with "
                        "save_pretrained) that rewrites the caption at greater length, deterministically. Nothing "
                        "is downloaded; needs transformers installed. Empty: the caption is used as written.",
                    },
                ),
                "max_new_tokens": (
                    "INT",
                    {
                        "default": 200,
                        "min": 16,
                        "max": 1024,
                        "tooltip": "The language model's longest rewrite, in tokens.",
                    },
                ),
                "storyboard": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": "",
                        "tooltip": "Optional: a storyboard (`START[-END] | prompt`, one shot per line). Each "
                        "line's prompt becomes the idea of its own caption (with the fields above, and the "
                        "language model if set); the times stay as written. Empty: the idea above is written.",
                    },
                ),
            },
        }

    def write(self, idea, subject, action, setting, time_of_day, shot_size, camera_move, lens, lighting, style, mood,
              template, language_model="", max_new_tokens=200, storyboard=""):  # fmt: skip
        fields = dict(subject=subject, action=action, setting=setting, time_of_day=time_of_day,
                      shot_size=shot_size, camera_move=camera_move, lens=lens, lighting=lighting, style=style,
                      mood=mood)  # fmt: skip
        model = None
        if language_model.strip():
            model = load_language_model(host.model_folder(LANGUAGE_MODELS, language_model.strip()))

        def caption(idea: str) -> str:
            written = shot_prompt(Shot(idea=idea, **fields), template)
            if model is None:
                return written
            with host.on_compute_device(model.model):
                return expand_caption(written, model, max_new_tokens)

        if storyboard.strip():
            return (rewrite_storyboard(storyboard, caption),)
        return (caption(idea),)


class SpacetimePromptGuard:
    CATEGORY = "Spacetime/prompting"
    FUNCTION = "check"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("prompt",)
    OUTPUT_TOOLTIPS = ("The prompt, unchanged, when it names nothing on the blocklist.",)
    DESCRIPTION = (
        f"Stops the workflow when the prompt names a term from the blocklist ({BLOCKLIST_FILENAME} in "
        "ComfyUI's user folder, one term or name per line, # for comments, ! for an exception; empty until you "
        "create it) or from extra_terms. Sees through case, accents and strokes, look-alike letters, invisible "
        "characters, letters split by spaces or punctuation, digits for letters and English plural and verb "
        "endings; matches whole words only. The error names the entry and the rule that caught it."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "The prompt to check."}),
                "enabled": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Off: the prompt passes through without being checked."},
                ),
            },
            "optional": {
                "extra_terms": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": "",
                        "tooltip": f"More terms for this workflow only, one per line (# for comments, ! for an "
                        f"exception), added to those in {BLOCKLIST_FILENAME}.",
                    },
                ),
            },
        }

    @classmethod
    def IS_CHANGED(cls, prompt, enabled, extra_terms=""):
        """Run again when the blocklist file is edited, not only when the inputs change."""
        path = host.user_directory() / BLOCKLIST_FILENAME
        return f"{path.stat().st_mtime_ns}:{path.stat().st_size}" if path.is_file() else ""

    def check(self, prompt, enabled, extra_terms=""):
        if not enabled:
            return (prompt,)
        return (check_prompt(prompt, user_blocklist() + parse_blocklist(extra_terms, "extra_terms")),)
