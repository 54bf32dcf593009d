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
from spacetime.prompting.guard import EXAMPLE_BLOCKLIST, Rule, find_blocked

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
        ("a b a d idea", "bad", {Rule.SPACING}),
        ("a b.a.d idea", "bad", {Rule.SPACING}),
        ("a b-a-d idea", "bad", {Rule.SPACING}),
        ("a b _ a _ d idea", "bad", {Rule.SPACING}),
        ("a b4d idea", "bad", {Rule.SUBSTITUTES}),
        ("what the he11", "hell", {Rule.SUBSTITUTES}),
        ("a $illy @$$", "ass", {Rule.SUBSTITUTES}),
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
        "an old man with a cane, an al dente pasta",  # letters are joined all apart or not at all
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
        "after removing zero-width characters and reading Cyrillic, Greek and fullwidth look-alikes"
        in message
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
    assert [entry.term for entry in entries] == ["gore", "beheading", "jane q. example"]
    assert find_blocked("a photo of Jane Q Example", entries).entry.term == "jane q. example"
    assert find_blocked("Edward Gorey's drawings", entries) is None


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
