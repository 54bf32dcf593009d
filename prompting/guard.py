"""Prompt guard: refuse prompts that name a blocklisted term, however it is disguised.

The blocklist is plain text, one term or name per line (`#` starts a comment; a line starting with `!`
is an exception, a phrase in which the terms are allowed). A prompt is read the way a person would
read it: case, accents and strokes ("ø", "ı"), invisible characters (everything Unicode marks as
default-ignorable or as a format character), look-alike letters (Cyrillic "а", Greek "ο", fullwidth
"ａ", small capitals "ᴀ"), letters split by spaces or punctuation anywhere ("b a d", "b . . a . . d",
"ba d"), digits or symbols standing for letters ("b4d", "$") and English plural and verb endings
("bads", "badded") are all seen through. A term matches whole words only, so "ass" blocks neither
"class" nor "passage" (nor the number "455"). A match raises `PromptBlocked`, naming the entry and the
rules that were needed to see it; any other prompt passes through untouched.
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

import regex

from .. import host

BLOCKLIST_FILENAME = "spacetime_blocklist.txt"
EXAMPLE_BLOCKLIST = Path(__file__).with_name("blocklist.example.txt")
EXCEPTION = "!"  # a blocklist line starting with this is an exception

# Characters that draw nothing: Unicode's default-ignorable code points (zero-width characters, variation
# selectors, tag characters, Hangul fillers, Mongolian free variation selectors) and all format characters
# (bidi controls and isolates, the soft hyphen, invisible operators).
INVISIBLE = regex.compile(r"[\p{Default_Ignorable_Code_Point}\p{Cf}]")
# A letter Unicode names after a Latin one without decomposing it to that letter: "LATIN SMALL LETTER O
# WITH STROKE" (ø), "LATIN SMALL LETTER DOTLESS I" (ı), "LATIN LETTER SMALL CAPITAL G" (ɢ), "LATIN SMALL
# LETTER SCRIPT G" (ɡ), "REGIONAL INDICATOR SYMBOL LETTER G". Turned and reversed letters are other letters.
NAMED_LATIN = re.compile(
    r"(?P<family>LATIN|REGIONAL INDICATOR SYMBOL|(?:NEGATIVE )?(?:SQUARED|CIRCLED) LATIN)"
    r"(?P<case> SMALL CAPITAL| SMALL| CAPITAL)? LETTER "
    r"(?:(?P<look>SMALL CAPITAL|SCRIPT) |(?P<mark>DOTLESS|BARRED) )?(?P<letter>[A-Z])(?P<with> WITH .+)?"
)
# Letters of other scripts that look like Latin ones (after NFKC, which already folds fullwidth and
# mathematical letters); the most used subset of Unicode's confusables.txt.
_LOOKALIKE_PAIRS = (
    "АA ВB ЕE ЅS ІI ЈJ КK МM НH ОO РP СC ТT ХX УY Ӏl аa вb гr еe ѕs іi јj кk мm нh оo пn рp сc тt уy хx ьb шw "
    "һh ӏl ԁd ԛq ԝw "  # Cyrillic
    "ΑA ΒB ΕE ΖZ ΗH ΙI ΚK ΜM ΝN ΟO ΡP ΤT ΥY ΧX Ϲc αa βb γy εe ηn ιi κk νv οo ρp τt υu χx ωw ϲc"  # Greek
)
LOOKALIKES = str.maketrans({pair[0]: pair[1] for pair in _LOOKALIKE_PAIRS.split()})
# Digits and symbols that stand for letters (leetspeak); "()" and "[]" are an "o" in two characters.
SUBSTITUTES = {"a": "4@", "b": "8", "e": "3€", "g": "69", "i": "1!|", "l": "1|", "o": "0", "s": "5$", "t": "7+"}  # fmt: skip
PAIR_SUBSTITUTES = {"o": ("()", "[]")}
WORD_CHAR = r"[^\W_]"  # a letter or digit of any script; "_" counts as a separator
GAP = r"[\W_]*"  # what may split a term's letters: "b a d", "b.a.d", "b - - a - - d", "ba d"
UNSPACED_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR")
VOWELS = frozenset("aeiouy")


class Rule(enum.Enum):
    """What may be undone to find a term; the value completes "after ..." in the error message."""

    ACCENTS = "removing accents and strokes"
    INVISIBLE = "removing invisible characters"
    LOOKALIKES = "reading look-alike letters (Cyrillic, Greek, fullwidth, small capitals) as Latin ones"
    SPACING = "joining letters split by spaces or punctuation"
    SUBSTITUTES = "reading digits and symbols as the letters they resemble"
    ENDINGS = "allowing English plural and verb endings"


ALL_RULES = frozenset(Rule)
CHARACTER_RULES = frozenset({Rule.ACCENTS, Rule.INVISIBLE, Rule.LOOKALIKES})  # how an exception is read


class PromptBlocked(ValueError):
    """The prompt contains a blocklisted term."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One blocklist line: the term as written, where it came from, and whether it is an exception."""

    term: str
    source: str
    exception: bool = False

    def matches(self, text: str, rules: frozenset[Rule] = ALL_RULES) -> Iterable[re.Match]:
        """The term's appearances as whole words in `text` normalised under `rules` (the term is
        normalised the same way). A number is not a disguised word: "455" does not match "ass"."""
        pattern = _compile(self.term, rules & CHARACTER_RULES if self.exception else rules)
        has_letters = any(char.isalpha() for char in self.term)
        return (
            match for match in pattern.finditer(text) if not (has_letters and _only_digits(match.group()))
        )


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


def endings(word: str) -> dict[str, list[str]]:
    """The word's English plural and verb forms, as the endings each stem takes: gore -> gore + s,
    gor + ed, ing; beheading -> behead + s, ed, ing, ings. Words of other scripts, numbers and words
    shorter than 3 letters have only themselves."""
    if not (word.isascii() and word.isalpha() and len(word) >= 3):
        return {word: [""]}
    stems = {word}
    if word.endswith("ing") and len(word) >= 6 and VOWELS & set(word[:-3]):
        stems = {stem := word[:-3]}
        if _short_vowel(stem):  # goring: gore
            stems.add(stem + "e")
        if stem[-1] == stem[-2] and stem[-1] not in "lsfz" and _short_vowel(stem[:-1]):  # stabbing: stab
            stems.add(stem[:-1])
    forms = {(word, "")}
    for stem in stems:
        base = stem[:-1] if stem.endswith("e") else stem
        forms |= {(stem, ""), (stem, "s"), (base, "ed"), (base, "ing"), (base, "ings")}
        if stem.endswith(("s", "x", "z", "ch", "sh")):
            forms.add((stem, "es"))
        if stem.endswith("y") and stem[-2] not in VOWELS:
            forms |= {(stem[:-1], "ies"), (stem[:-1], "ied")}
        if _short_vowel(stem):  # stab: stabbed
            forms |= {(stem, stem[-1] + "ed"), (stem, stem[-1] + "ing")}
    grouped = {}
    for stem, ending in sorted(forms, key=lambda form: (-len(form[0]), -len(form[1]), form)):
        grouped.setdefault(stem, []).append(ending)
    return grouped


def _short_vowel(stem: str) -> bool:
    """Ends consonant, vowel, consonant ("stab", "gor"): English doubles that consonant before -ed."""
    return (
        len(stem) >= 3
        and stem[-1] not in VOWELS | set("wx")
        and stem[-2] in VOWELS
        and stem[-3] not in VOWELS
    )


@functools.lru_cache(maxsize=32768)
def _compile(term: str, rules: frozenset[Rule]) -> re.Pattern:
    words = _words(term, rules)
    if not words:  # only possible under a subset of the rules, e.g. a term of fullwidth symbols
        return re.compile("(?!)")

    def choices(char: str) -> list[tuple[str, int]]:
        """How `char` may be written: (regular expression, its width in characters)."""
        if Rule.SUBSTITUTES not in rules or char not in SUBSTITUTES:
            return [(re.escape(char), 1)]
        pairs = [(re.escape(pair), len(pair)) for pair in PAIR_SUBSTITUTES.get(char, ())]
        return [("[" + re.escape(char + SUBSTITUTES[char]) + "]", 1), *pairs]

    def letter(char: str) -> str:
        alternatives = [pattern for pattern, _ in choices(char)]
        return alternatives[0] if len(alternatives) == 1 else f"(?:{'|'.join(alternatives)})"

    # With SPACING any letters may be split: "b a d", "ba d", "b . . a d".
    within = GAP if Rule.SPACING in rules else ""
    between = GAP if Rule.SPACING in rules else r"[\W_]+"

    def spell(head: str, rest: list[str]) -> str:
        """The letters after the first: the rest of the first word (`head`), then the other words."""
        spelled = "".join(within + letter(char) for char in head)
        return spelled + "".join(between + within.join(map(letter, word)) for word in rest)

    # An ending follows its stem directly: "gore's" is "gore" and a possessive, not "gores".
    forms = endings(words[-1]) if Rule.ENDINGS in rules else {words[-1]: [""]}
    tails = []
    for stem, stem_endings in forms.items():
        head, rest = (words[0][1:], [*words[1:-1], stem]) if len(words) > 1 else (stem[1:], [])
        tails.append(spell(head, rest) + "(?:" + "|".join(map(re.escape, stem_endings)) + ")")
    # The first letter leads, so that the search skips ahead to it; whole words only, except in scripts
    # written without spaces (Chinese, Japanese, Thai).
    unspaced = _unspaced(words[0][0])
    first = [
        pattern + ("" if unspaced else f"(?<!{WORD_CHAR}{'.' * width})")
        for pattern, width in choices(words[0][0])
    ]
    after = "" if _unspaced(words[-1][-1]) else f"(?!{WORD_CHAR})"
    lead = first[0] if len(first) == 1 else f"(?:{'|'.join(first)})"
    return re.compile(lead + "(?:" + "|".join(tails) + ")" + after)


def _only_digits(found: str) -> bool:
    """True when `found` is digits and separators only (no letters, no symbol that stands for one)."""
    if any(pair in found for pairs in PAIR_SUBSTITUTES.values() for pair in pairs):
        return False
    symbols = "".join(SUBSTITUTES.values())
    return all(char.isdigit() or not (char.isalpha() or char in symbols) for char in found)


def _unspaced(char: str) -> bool:
    return unicodedata.name(char, "").startswith(UNSPACED_SCRIPTS)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _is_mark(char: str) -> bool:
    """An accent, overlay or enclosing mark drawn on the letter before it (not an Indic vowel sign)."""
    return unicodedata.combining(char) != 0 or unicodedata.category(char) == "Me"


def _named_latin(char: str, rules: frozenset[Rule]) -> str:
    """The Latin letter `char` is named after, when `rules` allow reading it so; `char` otherwise."""
    named = NAMED_LATIN.fullmatch(unicodedata.name(char, ""))
    if named is None:
        return char
    needs = set()
    if named["look"] or named["case"] == " SMALL CAPITAL" or named["family"] != "LATIN":
        needs.add(Rule.LOOKALIKES)
    if named["mark"] or named["with"]:
        needs.add(Rule.ACCENTS)
    return named["letter"].lower() if needs <= rules else char


@functools.lru_cache(maxsize=65536)
def _normalise_char(char: str, rules: frozenset[Rule]) -> str:
    if Rule.INVISIBLE in rules and INVISIBLE.fullmatch(char):
        return ""
    if Rule.LOOKALIKES in rules:
        char = unicodedata.normalize("NFKC", char)
    if Rule.ACCENTS in rules:
        char = "".join(c for c in unicodedata.normalize("NFD", char) if not _is_mark(c))
    if rules & {Rule.ACCENTS, Rule.LOOKALIKES}:
        char = "".join(c if c.isascii() else _named_latin(c, rules) for c in char)
    if Rule.LOOKALIKES in rules:
        char = char.translate(LOOKALIKES)
    return char.casefold()


def normalise(text: str, rules: frozenset[Rule] = ALL_RULES) -> tuple[str, list[int]]:
    """Case-folded text with the character rules in `rules` applied, and for each of its
    characters the index of the prompt character it came from."""
    out, origin = [], []
    for index, char in enumerate(text):
        folded = _normalise_char(char, rules)
        out.append(folded)
        origin.extend([index] * len(folded))
    return "".join(out), origin


def parse_blocklist(text: str, source: str) -> list[Entry]:
    """Entries from blocklist text: one per line; blank lines and everything after `#` are skipped,
    and a line starting with `!` is an exception."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        term = " ".join(line.split("#", 1)[0].split())
        exception = term.startswith(EXCEPTION)
        term = term.removeprefix(EXCEPTION).strip()
        if not term and not exception:
            continue
        if not _words(term):
            raise ValueError(
                f"Blocklist entry {line.strip()!r} ({source}, line {number}) has no letters or digits, so it can "
                "match nothing. Write the term itself, or comment the line out with #."
            )
        entries.append(Entry(term, f"{source}, line {number}", exception))
    return entries


def load_blocklist(path: Path) -> list[Entry]:
    """Entries from a blocklist file; a file that does not exist is an empty list."""
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(
            f"The blocklist {path} is not UTF-8 text: line {line} has the byte 0x{data[error.start]:02x}. "
            "Save the file as UTF-8 (any text editor can: 'Save with encoding')."
        ) from None
    return parse_blocklist(text, str(path))


def user_blocklist() -> list[Entry]:
    """The user's blocklist: spacetime_blocklist.txt in ComfyUI's user folder (empty until it exists)."""
    return load_blocklist(host.user_directory() / BLOCKLIST_FILENAME)


def find_blocked(prompt: str, entries: Iterable[Entry]) -> Match | None:
    """The blocklisted term that appears first in the prompt (the longest, when several start at the
    same place) outside every exception, with the rules needed to see it."""
    entries = list(entries)
    text, origin = normalise(prompt)
    allowed = [match.span() for entry in entries if entry.exception for match in entry.matches(text)]
    found = []
    for entry in entries:
        outside = (
            m for m in entry.matches(text) if not any(s <= m.start() and m.end() <= e for s, e in allowed)
        )
        if not entry.exception and (match := next(outside, None)):
            found.append((match, entry))
    if not found:
        return None
    found, entry = min(found, key=lambda pair: (pair[0].start(), -pair[0].end()))
    start, end = origin[found.start()], origin[found.end() - 1] + 1
    return Match(entry, prompt[start:end], _fewest_rules(prompt, start, end, entry))


def _fewest_rules(prompt: str, start: int, end: int, entry: Entry) -> frozenset[Rule]:
    """The smallest set of rules under which `entry` still matches prompt[start:end] (earlier rules first
    on ties). Read with one visible character either side, as the word boundaries need."""
    before, after = start, end
    while before > 0 and INVISIBLE.fullmatch(prompt[before - 1]):
        before -= 1
    while after < len(prompt) and INVISIBLE.fullmatch(prompt[after]):
        after += 1
    offset = max(before - 1, 0)
    window = prompt[offset : after + 1]
    for size in range(len(Rule) + 1):
        for rules in map(frozenset, itertools.combinations(Rule, size)):
            text, origin = normalise(window, rules)
            spans = (
                (origin[m.start()] + offset, origin[m.end() - 1] + offset + 1)
                for m in entry.matches(text, rules)
            )
            if (start, end) in spans:
                return rules
    return ALL_RULES


def check_prompt(prompt: str, entries: Iterable[Entry]) -> str:
    """Return `prompt` itself when no entry matches; raise `PromptBlocked` naming the match otherwise."""
    if not isinstance(prompt, str):
        raise ValueError(f"The prompt is {prompt!r} ({type(prompt).__name__}), not text: give it a string.")
    match = find_blocked(prompt, entries)
    if match is None:
        return prompt
    raise PromptBlocked(
        f"Prompt blocked: {match.found!r} {match.describe()}, an entry of the blocklist ({match.entry.source}). "
        "Rewrite the prompt, or remove the entry from the list if it should not be there."
    )
