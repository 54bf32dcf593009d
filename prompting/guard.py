"""Prompt guard: refuse prompts that name a blocklisted term, however it is disguised.

The blocklist is plain text, one term or name per line (`#` starts a comment). A prompt is read
the way a person would read it: case, accents, zero-width characters, look-alike letters from
other scripts (Cyrillic "а", Greek "ο", fullwidth "ａ"), letters spaced or dotted apart
("b a d", "b.a.d") and digits or symbols standing for letters ("b4d", "$") are all seen through.
A term matches whole words only, so "ass" blocks neither "class" nor "passage" (nor the number
"455"). A match raises `PromptBlocked`, naming the entry and the rules that were needed to see
it; any other prompt passes through untouched.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import itertools
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

BLOCKLIST_FILENAME = "spacetime_blocklist.txt"
EXAMPLE_BLOCKLIST = Path(__file__).with_name("blocklist.example.txt")

INVISIBLE = frozenset("\u00ad\u034f\u180e\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff")
# Letters of other scripts that look like Latin ones (after NFKC, which already folds fullwidth and
# mathematical letters); the most used subset of Unicode's confusables.txt.
_LOOKALIKE_PAIRS = (
    "АA ВB ЕE ЅS ІI ЈJ КK МM НH ОO РP СC ТT ХX УY аa еe ѕs іi јj оo рp сc хx уy кk һh ԁd ԛq ԝw "  # Cyrillic
    "ΑA ΒB ΕE ΖZ ΗH ΙI ΚK ΜM ΝN ΟO ΡP ΤT ΥY ΧX αa εe ιi κk νv οo ρp τt υu χx"  # Greek
)
LOOKALIKES = str.maketrans({pair[0]: pair[1] for pair in _LOOKALIKE_PAIRS.split()})
# Digits and symbols that stand for letters (leetspeak).
SUBSTITUTES = {"a": "4@", "e": "3", "i": "1!|", "l": "1|", "o": "0", "s": "5$", "t": "7+"}
WORD_CHAR = r"[^\W_]"  # a letter or digit of any script; "_" counts as a separator
LETTER_GAP = r"[\W_]{1,3}"  # "b a d", "b.a.d", "b - a - d"
UNSPACED_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR")


class Rule(enum.Enum):
    """What may be undone to find a term; the value completes "after ..." in the error message."""

    ACCENTS = "removing accents"
    INVISIBLE = "removing zero-width characters"
    LOOKALIKES = "reading Cyrillic, Greek and fullwidth look-alikes as Latin letters"
    SPACING = "joining letters split by spaces or punctuation"
    SUBSTITUTES = "reading digits and symbols as the letters they resemble"


ALL_RULES = frozenset(Rule)


class PromptBlocked(ValueError):
    """The prompt contains a blocklisted term."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One blocklist line: the term as written and where it came from."""

    term: str
    source: str

    def search(self, text: str, rules: frozenset[Rule] = ALL_RULES) -> re.Match | None:
        """The term's first appearance as whole words in `text` normalised under `rules` (the term is
        normalised the same way). A number is not a disguised word: "455" does not match "ass"."""
        for match in _compile(self.term, rules).finditer(text):
            if not _only_digits(match.group()) or not any(char.isalpha() for char in self.term):
                return match
        return None


@dataclasses.dataclass(frozen=True)
class Match:
    entry: Entry
    found: str  # the words as they appear in the prompt
    rules: frozenset[Rule]  # the fewest rules needed to see the entry there

    def describe(self) -> str:
        needed = [rule.value for rule in Rule if rule in self.rules]
        how = "as written, ignoring case" if not needed else "after " + _join(needed)
        return f"matched {self.entry.term!r} ({how})"


def _words(term: str, rules: frozenset[Rule] = ALL_RULES) -> list[str]:
    return re.findall(f"{WORD_CHAR}+", normalise(term, rules)[0])


@functools.lru_cache(maxsize=4096)
def _compile(term: str, rules: frozenset[Rule]) -> re.Pattern:
    words = _words(term, rules)
    if not words:  # only possible under a subset of the rules, e.g. a term of fullwidth symbols
        return re.compile("(?!)")

    def letter(char: str) -> str:
        if Rule.SUBSTITUTES in rules and char in SUBSTITUTES:
            return "[" + re.escape(char + SUBSTITUTES[char]) + "]"
        return re.escape(char)

    parts = []
    for word in words:
        letters = [letter(char) for char in word]
        part = "".join(letters)
        if Rule.SPACING in rules and len(letters) > 1:  # every letter apart, or none: "an al" is not "anal"
            part = f"(?:{part}|{LETTER_GAP.join(letters)})"
        parts.append(part)
    between_words = r"[\W_]*" if Rule.SPACING in rules else r"[\W_]+"
    # Scripts written without spaces (Chinese, Japanese, Thai) have no word boundaries to respect.
    before = "" if _unspaced(words[0][0]) else f"(?<!{WORD_CHAR})"
    after = "" if _unspaced(words[-1][-1]) else f"(?!{WORD_CHAR})"
    return re.compile(before + between_words.join(parts) + after)


def _only_digits(found: str) -> bool:
    """True when `found` is digits and separators only (no letters, no symbol that stands for one)."""
    symbols = "".join(SUBSTITUTES.values())
    return all(char.isdigit() or not (char.isalpha() or char in symbols) for char in found)


def _unspaced(char: str) -> bool:
    return unicodedata.name(char, "").startswith(UNSPACED_SCRIPTS)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def normalise(text: str, rules: frozenset[Rule] = ALL_RULES) -> tuple[str, list[int]]:
    """Case-folded text with the character rules in `rules` applied, and for each of its
    characters the index of the prompt character it came from."""
    out, origin = [], []
    for index, char in enumerate(text):
        if Rule.INVISIBLE in rules and char in INVISIBLE:
            continue
        if Rule.LOOKALIKES in rules:
            char = unicodedata.normalize("NFKC", char)
        if Rule.ACCENTS in rules:
            char = "".join(c for c in unicodedata.normalize("NFD", char) if not unicodedata.combining(c))
        if Rule.LOOKALIKES in rules:
            char = char.translate(LOOKALIKES)
        for folded in char.casefold():
            out.append(folded)
            origin.append(index)
    return "".join(out), origin


def parse_blocklist(text: str, source: str) -> list[Entry]:
    """Entries from blocklist text: one per line; blank lines and everything after `#` are skipped."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        term = " ".join(line.split("#", 1)[0].split())
        if not term:
            continue
        if not _words(term):
            raise ValueError(
                f"Blocklist entry {term!r} ({source}, line {number}) has no letters or digits, so it can match "
                "nothing. Write the term itself, or comment the line out with #."
            )
        entries.append(Entry(term, f"{source}, line {number}"))
    return entries


def load_blocklist(path: Path) -> list[Entry]:
    """Entries from a blocklist file; a file that does not exist is an empty list."""
    path = Path(path)
    if not path.is_file():
        return []
    return parse_blocklist(path.read_text(encoding="utf-8-sig"), str(path))


def find_blocked(prompt: str, entries: Iterable[Entry]) -> Match | None:
    """The blocklisted term that appears first in the prompt (the longest, when several start at the
    same place), with the rules needed to see it."""
    text, origin = normalise(prompt)
    found = [(match, entry) for entry in entries if (match := entry.search(text))]
    if not found:
        return None
    found, entry = min(found, key=lambda pair: (pair[0].start(), -pair[0].end()))
    start, end = origin[found.start()], origin[found.end() - 1] + 1
    return Match(entry, prompt[start:end], _fewest_rules(prompt, entry))


def _fewest_rules(prompt: str, entry: Entry) -> frozenset[Rule]:
    """The smallest set of rules under which `entry` still matches (earlier rules first on ties)."""
    for size in range(len(Rule) + 1):
        for rules in map(frozenset, itertools.combinations(Rule, size)):
            if entry.search(normalise(prompt, rules)[0], rules):
                return rules
    return ALL_RULES


def check_prompt(prompt: str, entries: Iterable[Entry]) -> str:
    """Return `prompt` itself when no entry matches; raise `PromptBlocked` naming the match otherwise."""
    match = find_blocked(prompt, entries)
    if match is None:
        return prompt
    raise PromptBlocked(
        f"Prompt blocked: {match.found!r} {match.describe()}, an entry of the blocklist ({match.entry.source}). "
        "Rewrite the prompt, or remove the entry from the list if it should not be there."
    )
