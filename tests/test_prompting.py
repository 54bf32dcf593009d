"""Shot prompts (captions from an idea and film-language fields) and the prompt guard (a blocklist
that sees through disguises), as libraries and as nodes called the way ComfyUI calls them."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from spacetime import host
from spacetime.checkpoint import CheckpointError
from spacetime.nodes.prompting import SpacetimePromptGuard, SpacetimeShotPrompt
from spacetime.prompting import (
    BLOCKLIST_FILENAME,
    CHOICES,
    DEFAULT_TEMPLATE,
    PromptBlocked,
    Shot,
    check_prompt,
    expand_caption,
    load_blocklist,
    load_language_model,
    parse_blocklist,
    shot_prompt,
)
from spacetime.prompting.guard import EXAMPLE_BLOCKLIST, Rule, endings, find_blocked

# Shot prompts ---------------------------------------------------------------------------------

FOX = dict(
    idea="a red fox trotting through deep snow",
    shot_size="wide shot",
    camera_move="tracking",
    lens="35mm",
    lighting="golden hour",
    time_of_day="dawn",
    style="cinematic, 35mm film grain",
    mood="calm and quiet",
)


@pytest.mark.parametrize(
    ("fields", "caption"),
    [
        (
            FOX,
            "A wide shot of a red fox trotting through deep snow at dawn. The camera tracks alongside the "
            "subject. Warm golden-hour light, shot on a 35mm lens. Cinematic, 35mm film grain. "
            "The mood is calm and quiet.",
        ),
        ({"idea": "a red fox"}, "A red fox."),
        ({"idea": "A red fox."}, "A red fox."),  # the template places the full stop and the capital
        ({"idea": "a lighthouse", "lighting": "neon"}, "A lighthouse. Colourful neon light."),
        ({"idea": "a lighthouse", "lens": "85mm portrait"}, "A lighthouse. Shot on an 85mm portrait lens."),
        (
            {"idea": "a lighthouse", "camera_move": "orbit", "time_of_day": "night", "mood": "lonely"},
            "A lighthouse at night. The camera orbits around the subject. The mood is lonely.",
        ),
        (
            {
                "idea": "A cosy winter morning",
                "subject": "A red fox",
                "action": "trotting through deep snow",
                "setting": "in a silent pine forest",
                "shot_size": "extreme close-up",
            },
            "A cosy winter morning. An extreme close-up of a red fox trotting through deep snow in a silent "
            "pine forest.",
        ),
        ({"subject": "an iPhone", "setting": "on a marble table"}, "An iPhone on a marble table."),
        ({"idea": "iPhone on a table... waiting"}, "iPhone on a table... waiting."),
    ],
)
def test_shot_prompt_writes_the_expected_caption(fields, caption):
    assert shot_prompt(Shot(**fields)) == caption


def test_empty_fields_leave_no_dangling_words_or_punctuation():
    for field, table in CHOICES.items():
        for choice in table:
            caption = shot_prompt(Shot(idea="a kite", **{field: choice}))
            assert "kite" in caption and caption[0].isupper()
            for debris in (" ,", ",,", ", .", "..", ". .", " of .", "shot on .", "The camera .", "  "):
                assert debris not in caption, (field, choice, caption)
            assert caption.endswith(".") and caption[-2] != " "


def test_every_choice_appears_in_the_caption():
    for field, table in CHOICES.items():
        for choice, phrase in table.items():
            caption = shot_prompt(Shot(idea="a kite", **{field: choice})).lower()
            assert phrase in caption, (field, choice)


def test_template_is_editable():
    shot = Shot(**FOX)
    assert shot_prompt(shot, "{shot_size}, {idea}; [lens: {lens}; ]{mood}") == (
        "A wide shot, a red fox trotting through deep snow; lens: a 35mm lens; calm and quiet"
    )
    # An optional part whose field is empty vanishes with its words, even mid-sentence.
    assert shot_prompt(Shot(idea="a kite"), "{idea}[, with {lens}][, {style}], over the dunes.") == (
        "A kite, over the dunes."
    )
    # A plain (not optional) placeholder left empty takes its commas along, never leaving ", ,".
    assert shot_prompt(Shot(idea="a kite"), "{idea}, {lens}, {style}, {mood}.") == "A kite."
    assert shot_prompt(Shot(idea="a kite", mood="calm"), "{lens}, {idea}, {mood}") == "A kite, calm"


def test_idea_fills_the_subject_only_when_the_template_has_one():
    assert shot_prompt(Shot(idea="a kite"), "[{idea}. ]Subject: {subject}.") == "Subject: a kite."
    assert shot_prompt(Shot(idea="a kite"), "Idea: {idea}.") == "Idea: a kite."
    assert shot_prompt(Shot(idea="windy day", subject="a kite"), "[{idea}. ]Subject: {subject}.") == (
        "Windy day. Subject: a kite."
    )


def test_shot_prompt_is_deterministic():
    captions = {shot_prompt(Shot(**FOX)) for _ in range(3)}
    node = SpacetimeShotPrompt()
    inputs = {name: spec[1].get("default", spec[0][0] if isinstance(spec[0], list) else "")
              for name, spec in SpacetimeShotPrompt.INPUT_TYPES()["required"].items()}  # fmt: skip
    captions |= {node.write(**{**inputs, **FOX})[0] for _ in range(3)}
    assert len(captions) == 1
    assert inputs["template"] == DEFAULT_TEMPLATE


@pytest.mark.parametrize(
    ("fields", "template", "message"),
    [
        ({}, DEFAULT_TEMPLATE, "Nothing to describe"),
        ({"idea": " ", "subject": "."}, DEFAULT_TEMPLATE, "Nothing to describe"),
        ({"idea": "a kite", "lens": "200mm"}, DEFAULT_TEMPLATE, "lens='200mm' is not one of the choices"),
        ({"idea": "a kite"}, "{idea} with {camera}", "{camera}, which is not a field"),
        ({"idea": "a kite"}, "{idea}[ with [{lens}]]", "do not pair up"),
        ({"idea": "a kite"}, "{idea}[ with {lens}", "do not pair up"),
    ],
)
def test_shot_prompt_errors_say_what_to_fix(fields, template, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        shot_prompt(Shot(**fields), template)


def test_language_model_folder_errors(tmp_path: Path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_language_model(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_language_model(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"holds no weights; Spacetime loads only \.safetensors"):
        load_language_model(tmp_path)
    (tmp_path / "model.safetensors").touch()
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    with pytest.raises(ImportError, match="pip install transformers"):
        load_language_model(tmp_path)


def test_node_without_language_model_returns_the_caption():
    node_inputs = {**FOX, "subject": "", "action": "", "setting": "", "template": DEFAULT_TEMPLATE}
    assert SpacetimeShotPrompt().write(**node_inputs, language_model="  ") == (shot_prompt(Shot(**FOX)),)


# Prompt guard ---------------------------------------------------------------------------------

BLOCKLIST = parse_blocklist(
    "# terms\nass\ncunt\nhell\nbad\n\nbad word   # a phrase\nJane Q. Example\nсука\n1984\n", "test list"
)


@pytest.mark.parametrize(
    ("prompt", "entry", "rules"),
    [
        ("a bad idea", "bad", set()),
        ("a BAD idea", "bad", set()),
        ("a bád idea", "bad", {Rule.ACCENTS}),
        ("a ba\u0301d idea", "bad", {Rule.ACCENTS}),  # decomposed: b, a, combining acute, d
        ("a BÄD idea", "bad", {Rule.ACCENTS}),
        ("a bаd idea", "bad", {Rule.LOOKALIKES}),  # Cyrillic а
        ("a Вad idea", "bad", {Rule.LOOKALIKES}),  # Cyrillic В
        ("a Βad idea", "bad", {Rule.LOOKALIKES}),  # Greek Β
        ("ｂａｄ idea", "bad", {Rule.LOOKALIKES}),  # fullwidth
        ("𝐛𝐚𝐝 idea", "bad", {Rule.LOOKALIKES}),  # mathematical bold
        ("hеll", "hell", {Rule.LOOKALIKES}),  # Cyrillic е
        ("a b\u200bad idea", "bad", {Rule.INVISIBLE}),
        ("a ba\u00add idea", "bad", {Rule.INVISIBLE}),  # soft hyphen
        ("a b\u2060a\ufeffd idea", "bad", {Rule.INVISIBLE}),
        ("a b\u2067a\u2069d idea", "bad", {Rule.INVISIBLE}),  # bidi isolates
        ("a b\u202ea\u202cd idea", "bad", {Rule.INVISIBLE}),  # right-to-left override, pop
        ("a ba\ufe00\U000e0100d idea", "bad", {Rule.INVISIBLE}),  # variation selectors 1 and 17
        ("a b\U000e0020a\U000e007fd idea", "bad", {Rule.INVISIBLE}),  # tag space, cancel tag
        ("a b\u180ca\u180fd idea", "bad", {Rule.INVISIBLE}),  # Mongolian free variation selectors
        ("a b\u115fa\uffa0d idea", "bad", {Rule.INVISIBLE}),  # Hangul fillers
        ("a b\u061ca\U0001d173d idea", "bad", {Rule.INVISIBLE}),  # Arabic letter mark, musical format
        ("a b\u0338a\u20ddd idea", "bad", {Rule.ACCENTS}),  # an overlay and an enclosing mark
        ("what the \u0127e\u0142\u0142", "hell", {Rule.ACCENTS}),  # h and l with strokes
        ("a \u0180a\u0111 idea", "bad", {Rule.ACCENTS}),  # b and d with strokes
        ("what the he\u019a\u026b", "hell", {Rule.ACCENTS}),  # l with a bar, l with a middle tilde
        ("\u0237ane q example", "Jane Q. Example", {Rule.ACCENTS}),  # dotless j
        ("a \u0299\u1d00\u1d05 idea", "bad", {Rule.LOOKALIKES}),  # small capitals
        ("\U0001f171\U0001f170\U0001f173", "bad", {Rule.LOOKALIKES}),  # negative squared letters
        ("\U0001f1e7\U0001f1e6\U0001f1e9", "bad", {Rule.LOOKALIKES}),  # regional indicators
        ("a \u0432a\u0501 idea", "bad", {Rule.LOOKALIKES}),  # Cyrillic ve, komi de
        ("\u04bb\u0435\u04cf\u04cf", "hell", {Rule.LOOKALIKES}),  # Cyrillic shha, ie, palochka
        ("a b a d idea", "bad", {Rule.SPACING}),
        ("a b.a.d idea", "bad", {Rule.SPACING}),
        ("a b-a-d idea", "bad", {Rule.SPACING}),
        ("a b _ a _ d idea", "bad", {Rule.SPACING}),
        ("a b\t\t\t\t\ta\n\n\n\nd idea", "bad", {Rule.SPACING}),  # any width
        ("a b ~ ~ ~ ~ a ~ ~ ~ ~ d idea", "bad", {Rule.SPACING}),  # any run of punctuation
        ("a ba d idea", "bad", {Rule.SPACING}),  # split once
        ("a b/ad idea", "bad", {Rule.SPACING}),
        ("he\u3000ll", "hell", {Rule.SPACING}),  # ideographic space
        ("a bads idea", "bad", {Rule.ENDINGS}),
        ("he badded it", "bad", {Rule.ENDINGS}),  # the doubled consonant
        ("asses", "ass", {Rule.ENDINGS}),
        ("JANE Q EXAMPLES", "Jane Q. Example", {Rule.ENDINGS}),
        ("a b4d idea", "bad", {Rule.SUBSTITUTES}),
        ("what the he11", "hell", {Rule.SUBSTITUTES}),
        ("a $illy @$$", "ass", {Rule.SUBSTITUTES}),
        ("a 8ad idea", "bad", {Rule.SUBSTITUTES}),
        ("what the h€ll", "hell", {Rule.SUBSTITUTES}),
        ("a b 4 d idea", "bad", {Rule.SPACING, Rule.SUBSTITUTES}),
        ("a B\u200bА\u200bD idea", "bad", {Rule.INVISIBLE, Rule.LOOKALIKES}),
        ("so bad  \n\t word", "bad word", set()),  # the phrase wins over its first word
        ("so bad, word!", "bad word", set()),
        ("so badword", "bad word", {Rule.SPACING}),
        ("a portrait of jane q example", "Jane Q. Example", set()),
        ("a portrait of JANE   Q.EXAMPLE", "Jane Q. Example", set()),
        ("a portrait of Jаne Q. Ex4mple", "Jane Q. Example", {Rule.LOOKALIKES, Rule.SUBSTITUTES}),
        ("сука", "сука", set()),
        ("cyka", "сука", {Rule.LOOKALIKES}),  # the entry is read through the same look-alike table
        ("in 1984.", "1984", set()),
    ],
)
def test_guard_sees_through_disguises(prompt, entry, rules):
    match = find_blocked(prompt, BLOCKLIST)
    assert match is not None, prompt
    assert (match.entry.term, match.rules) == (entry, frozenset(rules))
    assert match.found in prompt


@pytest.mark.parametrize(
    "prompt",
    [
        "a class of students walks along a narrow passage",
        "an assassin in Scunthorpe, Massachusetts",
        "hello from the shell of a snail, Michelle",
        "a badger, a badminton court, a bade farewell",
        "an analysis of the canal, analogue synths",  # a term inside a word is not the term
        "a bad, good word",  # a phrase's words next to each other only
        "badgering, a bass player, hellish",  # no endings but English plural and verb ones
        "a 455 horsepower engine, 4.5.5 on the dial",  # numbers are not disguised words
        "a word, then bad weather",  # a phrase's words in their order only
    ],
)
def test_guard_has_no_false_positives_inside_words(prompt):
    blocklist = parse_blocklist("ass\ncunt\nhell\nbadge\nanal\nbad word", "test list")
    assert find_blocked(prompt, blocklist) is None
    assert check_prompt(prompt, blocklist) is prompt


def test_clean_prompt_passes_through_unchanged():
    prompt = "A wide shot of a red fox trotting through deep snow at dawn.\n  Cinematic, 35mm film grain. "
    assert check_prompt(prompt, BLOCKLIST) is prompt
    assert SpacetimePromptGuard().check(prompt, True, "fox hunt")[0] is prompt


def test_error_names_entry_rule_and_source():
    with pytest.raises(PromptBlocked) as caught:
        check_prompt("a portrait of b\u200bа\u200bd", BLOCKLIST)
    message = str(caught.value)
    assert "'b\\u200bа\\u200bd' matched 'bad'" in message
    assert (
        "after removing invisible characters and reading look-alike letters (Cyrillic, Greek, fullwidth, small "
        "capitals) as Latin ones" in message
    )
    assert "test list, line 5" in message
    assert isinstance(caught.value, ValueError)
    with pytest.raises(PromptBlocked, match=r"'BAD' matched 'bad' \(as written, ignoring case\)"):
        check_prompt("BAD", BLOCKLIST)


def test_blocklist_file_comments_blank_lines_and_missing_file(tmp_path: Path):
    path = tmp_path / BLOCKLIST_FILENAME
    assert load_blocklist(path) == []  # no file: an empty list, not an error
    path.write_text(
        "# a comment\n\n   \nfirst term\n  second   term  # why it is here\n#third\n", encoding="utf-8"
    )
    entries = load_blocklist(path)
    assert [entry.term for entry in entries] == ["first term", "second term"]
    assert [entry.source for entry in entries] == [f"{path}, line 4", f"{path}, line 5"]
    with pytest.raises(ValueError, match=r"'\?\?\?' \(x, line 2\) has no letters or digits"):
        parse_blocklist("fine\n???\n", "x")


def test_example_blocklist_parses_and_blocks_its_examples():
    entries = load_blocklist(EXAMPLE_BLOCKLIST)
    assert [(entry.term, entry.exception) for entry in entries] == [
        ("gore", False), ("al gore", True), ("beheading", False), ("jane q. example", False),
    ]  # fmt: skip
    assert find_blocked("a photo of Jane Q Example", entries).entry.term == "jane q. example"
    assert find_blocked("Edward Gorey's drawings", entries) is None


# The hostile-input report's rows (reliability-2026-12.md), with its example blocklist: each disguise that
# once passed, the entry it must match and the rules the error names.
EXAMPLE = load_blocklist(EXAMPLE_BLOCKLIST)


@pytest.mark.parametrize(
    ("row", "prompt", "term", "rules"),
    [
        ("G15", "g    o    r    e", "gore", {Rule.SPACING}),
        ("G15d", "g . . o . . r . . e", "gore", {Rule.SPACING}),
        ("G15e", "g - - o - - r - - e", "gore", {Rule.SPACING}),
        ("G16", "go re", "gore", {Rule.SPACING}),
        ("G17", "gor e", "gore", {Rule.SPACING}),
        ("G18", "g\xf8re", "gore", {Rule.ACCENTS}),
        ("G65", "G\xd8RE", "gore", {Rule.ACCENTS}),
        ("G19", "\u0261ore", "gore", {Rule.LOOKALIKES}),
        ("G20", "\u0262\u1d0f\u0280\u1d07", "gore", {Rule.LOOKALIKES}),
        ("G21", "go\u0433e", "gore", {Rule.LOOKALIKES}),
        ("G22", "go\u2066re", "gore", {Rule.INVISIBLE}),
        ("G23", "go\ufe0fre", "gore", {Rule.INVISIBLE}),
        ("G24", "go\U000e0072re", "gore", {Rule.INVISIBLE}),
        ("G25", "go\u3164re", "gore", {Rule.INVISIBLE}),
        ("G26", "go\u180bre", "gore", {Rule.INVISIBLE}),
        ("G27", "go\xa0re", "gore", {Rule.SPACING}),
        ("G28", "\U0001f1ec\U0001f1f4\U0001f1f7\U0001f1ea", "gore", {Rule.LOOKALIKES}),
        ("G30", "g0r\u20ac", "gore", {Rule.SUBSTITUTES}),
        ("G31", "6ore", "gore", {Rule.SUBSTITUTES}),
        ("G32", "g()re", "gore", {Rule.SUBSTITUTES}),
        ("G33", "gores", "gore", {Rule.ENDINGS}),
        ("G37", "beheadings", "beheading", {Rule.ENDINGS}),
        ("G38", "beheaded", "beheading", {Rule.ENDINGS}),
        ("G39", "behead ing", "beheading", {Rule.SPACING}),
        ("G40", "be heading", "beheading", {Rule.SPACING}),
        ("G41", "behead\u0131ng", "beheading", {Rule.ACCENTS}),
        ("G44", "be-head-ing", "beheading", {Rule.SPACING}),
        ("G67", "g o r e s", "gore", {Rule.SPACING}),  # "gores" and "g o r e s" alike, now
        ("G68", "jane q. examples", "jane q. example", {Rule.ENDINGS}),
        # New variants of each class
        ("spacing", "g\t\t\to\n\n\nr\r\n\r\ne", "gore", {Rule.SPACING}),
        ("spacing", "b_e_h_e_a_d_i_n_g", "beheading", {Rule.SPACING}),
        ("split", "behe ad ing", "beheading", {Rule.SPACING}),
        ("split", "b.e.head-ing", "beheading", {Rule.SPACING}),
        ("split", "g ore", "gore", {Rule.SPACING}),
        ("invisible", "be\u2068head\u2069ing", "beheading", {Rule.INVISIBLE}),
        ("invisible", "go\U000e0101re", "gore", {Rule.INVISIBLE}),
        ("stroke", "\u01e5ore", "gore", {Rule.ACCENTS}),  # g with stroke
        ("stroke", "go\u024d\u0247", "gore", {Rule.ACCENTS}),  # r and e with strokes
        ("stroke", "behea\u0111\u0268ng", "beheading", {Rule.ACCENTS}),  # d and i with strokes
        (
            "look-alike",
            "\u0299\u1d07\u029c\u1d07\u1d00\u1d05\u026a\u0274\u0262",
            "beheading",
            {Rule.LOOKALIKES},
        ),
        ("look-alike", "\U0001f156\U0001f15e\U0001f161\U0001f154", "gore", {Rule.LOOKALIKES}),
        ("ending", "gored", "gore", {Rule.ENDINGS}),
        ("ending", "goring", "gore", {Rule.ENDINGS}),
        ("ending", "beheads", "beheading", {Rule.ENDINGS}),
        ("ending", "G0RES", "gore", {Rule.SUBSTITUTES, Rule.ENDINGS}),
        ("substitute", "9ore", "gore", {Rule.SUBSTITUTES}),
        ("substitute", "g[]r3", "gore", {Rule.SUBSTITUTES}),
    ],
)
def test_report_disguises_are_blocked(row, prompt, term, rules):
    match = find_blocked(f"a {prompt} scene", EXAMPLE)
    assert match is not None, row
    found = {"G67": "g o r e"}.get(row, prompt)  # the letters apart are the term; the "s" is not needed
    assert (match.entry.term, match.rules, match.found) == (term, frozenset(rules), found)


@pytest.mark.parametrize(
    ("row", "prompt"),
    [
        ("G57", "Al Gore speaking"),  # the example list's exception line: !al gore
        ("exception", "AL  GORE'S speech"),
        ("exception", "Al\u200bGore, al-gore"),
        ("G34", "a gory scene"),  # a different word
        ("G56", "a gorge at dawn"),
        ("G55", "a class passage"),
        ("not caught", "Edward Gorey's drawings, a gorefest"),  # a term inside a longer word
        ("not caught", "goore, gorre"),  # stretched letters
        ("not caught", "jane example, example jane q., j. q. example"),  # a name in other forms
    ],
)
def test_example_blocklist_lets_through(row, prompt):
    assert find_blocked(prompt, EXAMPLE) is None, row


def test_exceptions_cover_only_their_own_words():
    with pytest.raises(PromptBlocked, match=r"'gore' matched 'gore' .*line 17"):
        check_prompt("Al Gore walks into a gore scene", EXAMPLE)
    with pytest.raises(PromptBlocked, match=r"'G0re' matched 'gore' \(after reading digits"):
        check_prompt("Al G0re speaking", EXAMPLE)  # an exception is read as written, not through leetspeak
    with pytest.raises(PromptBlocked, match=r"'Gores' matched 'gore'"):
        check_prompt("Al Gores", EXAMPLE)
    # Spaces inside a term are ignored, so words that spell one together are blocked; an exception lets
    # those words through, and only them.
    entries = parse_blocklist("beheading\n!be heading   # 'we will be heading home'", "list")
    assert find_blocked("we will be heading home", entries[:1]).found == "be heading"
    assert find_blocked("we will be heading home", entries) is None
    assert find_blocked("we will be he ading home", entries).found == "be he ading"
    with pytest.raises(ValueError, match=r"'!  # why' \(x, line 2\) has no letters or digits"):
        parse_blocklist("fine\n!  # why\n", "x")


def test_endings_are_english_plurals_and_verb_forms():
    assert {stem + ending for stem, endings_ in endings("gore").items() for ending in endings_} == {
        "gore", "gores", "gored", "goring", "gorings"
    }  # fmt: skip
    assert {stem + ending for stem, endings_ in endings("beheading").items() for ending in endings_} == {
        "beheading", "behead", "beheads", "beheaded", "beheadings"
    }  # fmt: skip
    forms = {stem + ending for stem, endings_ in endings("stabbing").items() for ending in endings_}
    assert {"stab", "stabs", "stabbed", "stabbing", "stabbings"} <= forms
    assert (
        endings("сука") == {"сука": [""]}
        and endings("1984") == {"1984": [""]}
        and endings("ok") == {"ok": [""]}
    )


@pytest.mark.parametrize(
    ("content", "line", "byte"),
    [
        (b"gore\n\xff\n", 2, "0xff"),  # GB1
        (b"\xef\xbb\xbfgore\nbeheading\nbeh\xe9ading\n", 3, "0xe9"),  # Latin-1 after a UTF-8 BOM
        (b"ok\r\nfine\r\n\xc3(\r\n", 3, "0xc3"),  # a broken two-byte sequence
    ],
)
def test_blocklist_that_is_not_utf8_names_the_file_and_line(tmp_path: Path, content, line, byte):
    path = tmp_path / BLOCKLIST_FILENAME
    path.write_bytes(content)
    expected = (
        f"The blocklist {path} is not UTF-8 text: line {line} has the byte {byte}. Save the file as UTF-8"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_blocklist(path)


# Guard node -------------------------------------------------------------------------------------


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch) -> Path:
    host._comfy_module.cache_clear()
    monkeypatch.setenv(host.USER_DIR_ENV, str(tmp_path / "user"))
    (tmp_path / "user").mkdir()
    yield tmp_path / "user"
    host._comfy_module.cache_clear()


def test_user_directory_is_comfyuis_inside_comfyui(tmp_path: Path, monkeypatch):
    folder_paths = type(sys)("folder_paths")
    folder_paths.get_user_directory = lambda: str(tmp_path / "comfy-user")
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    host._comfy_module.cache_clear()
    try:
        assert host.user_directory() == tmp_path / "comfy-user"
    finally:
        host._comfy_module.cache_clear()


def test_guard_node_reads_the_users_blocklist_and_extra_terms(user_dir: Path):
    node = SpacetimePromptGuard()
    assert host.user_directory() == user_dir
    assert node.check("a g0re scene", True)[0] == "a g0re scene"  # no file yet: nothing is blocked
    unchanged = SpacetimePromptGuard.IS_CHANGED("a g0re scene", True)
    (user_dir / BLOCKLIST_FILENAME).write_text("# mine\ngore\n", encoding="utf-8")
    assert SpacetimePromptGuard.IS_CHANGED("a g0re scene", True) != unchanged  # ComfyUI re-runs the node
    with pytest.raises(PromptBlocked, match=f"matched 'gore'.*{re.escape(BLOCKLIST_FILENAME)}, line 2"):
        node.check("a g0re scene", True)
    with pytest.raises(PromptBlocked, match=r"matched 'fox hunt' .*\(extra_terms, line 2\)"):
        node.check("a F O X hunt", True, "# this workflow\nfox hunt")
    assert node.check("a g0re scene", False, "scene")[0] == "a g0re scene"  # switched off


def test_guard_node_names_a_blocklist_that_is_not_utf8(user_dir: Path):
    (user_dir / BLOCKLIST_FILENAME).write_bytes(b"gore\n\xff\n")
    with pytest.raises(
        ValueError, match=re.escape(f"{user_dir / BLOCKLIST_FILENAME} is not UTF-8 text: line 2")
    ):
        SpacetimePromptGuard().check("hi", True)


@pytest.mark.parametrize("prompt", [None, 42])
def test_guard_node_refuses_a_prompt_that_is_not_text(prompt):
    with pytest.raises(
        ValueError, match=re.escape(f"The prompt is {prompt!r} ({type(prompt).__name__}), not text")
    ):
        SpacetimePromptGuard().check(prompt, True)


def test_guard_is_fast_on_a_long_list():
    blocklist = parse_blocklist("\n".join(f"term{n} word{n}" for n in range(500)), "long list")
    prompt = "A wide shot of a red fox trotting through deep snow at dawn, cinematic. " * 10
    start = time.perf_counter()
    assert check_prompt(prompt, blocklist) is prompt
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("chat_template", [None, "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"])
def test_language_model_rewrites_with_greedy_decoding(tmp_path: Path, chat_template, monkeypatch):
    """A one-layer GPT-2 whose every next token is "fox": the rewrite is exactly what it generated
    after the prompt, the same every time, and the node returns it."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    words = ["[UNK]", "[EOS]", "a", "red", "fox", "wide", "shot", "of"]
    tokenizer = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, "[UNK]")
    )
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.decoder = tokenizers.decoders.WordPiece()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", eos_token="[EOS]"
    )
    tokenizer.chat_template = chat_template
    config = transformers.GPT2Config(vocab_size=len(words), n_positions=256, n_embd=16, n_layer=1, n_head=2)
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():  # one-hot embeddings (tied to the head); the last norm's output is a constant "fox"
        model.transformer.wte.weight.copy_(torch.eye(len(words), config.n_embd))
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(20 * model.transformer.wte.weight[words.index("fox")])
    folder = tmp_path / "LLM" / "fox-gpt2"
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)

    language_model = load_language_model(folder)
    assert load_language_model(folder) is language_model  # loaded once
    assert expand_caption("A wide shot of a red fox.", language_model, 4) == "fox fox fox fox"
    node_inputs = {**FOX, "subject": "", "action": "", "setting": "", "template": DEFAULT_TEMPLATE}
    monkeypatch.setenv("SPACETIME_MODELS_DIR", str(tmp_path))  # the node names a folder in models/LLM
    (caption,) = SpacetimeShotPrompt().write(**node_inputs, language_model=" fox-gpt2 ", max_new_tokens=16)
    assert caption == " ".join(["fox"] * 16)
    load_language_model.cache_clear()
