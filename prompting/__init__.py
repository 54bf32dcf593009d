"""Prompting: shot prompts written as descriptive captions, and the prompt guard's blocklist."""

from .guard import (
    BLOCKLIST_FILENAME,
    Entry,
    PromptBlocked,
    check_prompt,
    load_blocklist,
    parse_blocklist,
    user_blocklist,
)
from .shot import CHOICES, DEFAULT_TEMPLATE, Shot, expand_caption, load_language_model, shot_prompt

__all__ = [
    "BLOCKLIST_FILENAME",
    "CHOICES",
    "DEFAULT_TEMPLATE",
    "Entry",
    "PromptBlocked",
    "Shot",
    "check_prompt",
    "expand_caption",
    "load_blocklist",
    "load_language_model",
    "parse_blocklist",
    "shot_prompt",
    "user_blocklist",
]
