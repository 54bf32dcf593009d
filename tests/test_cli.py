"""The command line, run as users run it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spacetime import cli, host
from spacetime.nodes.prompting import SpacetimePromptGuard
from spacetime.prompting import BLOCKLIST_FILENAME, PromptBlocked
from spacetime.prompting.guard import EXAMPLE_BLOCKLIST

from media import decode


def run(*args: str | bytes, output: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"SPACETIME_OUTPUT_DIR": str(output)}
    return subprocess.run(
        [sys.executable, "-m", "spacetime", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_help(tmp_path: Path):
    result = run("--help", output=tmp_path)
    assert result.returncode == 0
    assert "test-pattern" in result.stdout and "formats" in result.stdout


def test_test_pattern_writes_a_video(tmp_path: Path):
    result = run("test-pattern", "--frames", "5", "--width", "64", "--height", "48", output=tmp_path)
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path.is_relative_to(tmp_path.resolve()) and path.suffix == ".mp4"
    assert decode(path).frames.shape == (5, 48, 64, 3)


def test_bad_input_is_one_clear_line(tmp_path: Path):
    result = run("test-pattern", "--fps", "0", output=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: frame_rate=0.0 must be a positive number")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("zipped", [True, False])
def test_convert_turns_a_pickle_into_safetensors(zipped: bool, tmp_path: Path):
    import torch
    from safetensors.torch import load_file

    tensors = {"a.weight": torch.randn(3, 4), "b.bias": torch.arange(5.0)}
    torch.save({"state_dict": tensors}, tmp_path / "model.pth", _use_new_zipfile_serialization=zipped)
    result = run("convert", str(tmp_path / "model.pth"), str(tmp_path / "model.safetensors"), output=tmp_path)
    assert result.returncode == 0, result.stderr
    converted = load_file(tmp_path / "model.safetensors")
    assert converted.keys() == tensors.keys()
    assert all(torch.equal(converted[k], tensors[k]) for k in tensors)


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_convert_refuses_a_pickle_that_would_run_code(tmp_path: Path):
    import pickle

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"weight": _Payload()}))
    result = run("convert", str(tmp_path / "evil.pth"), str(tmp_path / "evil.safetensors"), output=tmp_path)
    assert result.returncode == 2
    assert "was refused" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "evil.safetensors").exists()
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


@pytest.fixture
def example_blocklist(tmp_path: Path, monkeypatch) -> Path:
    """The example blocklist as the user's, for the command line and the node alike."""
    user = tmp_path / "user"
    user.mkdir()
    shutil.copy(EXAMPLE_BLOCKLIST, user / BLOCKLIST_FILENAME)
    monkeypatch.setenv(host.USER_DIR_ENV, str(user))
    host._comfy_module.cache_clear()
    yield user
    host._comfy_module.cache_clear()


MISSING_MODELS = (
    "--dit",
    "missing_dit.safetensors",
    "--text-encoder",
    "te.safetensors",
    "--vae",
    "v.safetensors",
)


def generate_in_process(*args: str, monkeypatch, capsys) -> tuple[int, str]:
    """`generate` through the command line's main(), as argv would give it (no console log handler)."""
    monkeypatch.setattr(cli, "_console_log", lambda: None)
    code = cli.main(["generate", *args])
    return code, capsys.readouterr().err


def test_generate_applies_the_users_blocklist_before_loading_models(example_blocklist, tmp_path):
    """P07: the blocklist the Prompt Guard node reads, with its message, before any model file is opened."""
    with pytest.raises(PromptBlocked) as caught:
        SpacetimePromptGuard().check("a gore scene", True)
    result = run("generate", "a gore scene", *MISSING_MODELS, output=tmp_path / "out")
    assert (result.returncode, result.stderr) == (2, f"error: {caught.value}\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("prompt", "found"),
    [
        ("a g o r e s scene", "'g o r e' matched 'gore'"),
        ("Al Gore beheading a statue", "'beheading' matched"),
    ],
)
def test_generate_blocks_as_the_node_does(example_blocklist, monkeypatch, capsys, prompt, found):
    with pytest.raises(PromptBlocked) as caught:
        SpacetimePromptGuard().check(prompt, True)
    assert found in str(caught.value)
    assert generate_in_process(prompt, *MISSING_MODELS, monkeypatch=monkeypatch, capsys=capsys) == (
        2,
        f"error: {caught.value}\n",
    )


def test_generate_lets_an_allowed_prompt_through_to_the_models(example_blocklist, monkeypatch, capsys):
    code, err = generate_in_process(
        "Al Gore speaking", *MISSING_MODELS, monkeypatch=monkeypatch, capsys=capsys
    )
    assert code == 2 and "missing_dit.safetensors" in err and "blocked" not in err


def test_generate_refuses_bytes_that_are_not_utf8(tmp_path: Path):
    """P05: a byte that is not UTF-8 in argv, once a pybind RuntimeError from sentencepiece."""
    result = run("generate", b"red \xff circle", output=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(
        "error: the prompt has the byte 0xff, which is not UTF-8 text, at character 4 ('red \\udcff circle'). "
        "Give the text as UTF-8: set the terminal (or the file it came from) to UTF-8"
    ), result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("caf\udce9 scene",),
            "error: the prompt has the byte 0xe9, which is not UTF-8 text, at character 3",
        ),
        (("a fox", "--negative-prompt", "\udce9t\udce9"), "error: --negative-prompt has the byte 0xe9"),
        (("a fox \ud83e",), "error: the prompt has a lone surrogate U+D83E at character 6"),
    ],
)
def test_generate_refuses_text_the_tokenizer_cannot_read(monkeypatch, capsys, args, message):
    """What Python makes of such bytes in argv (U+DC80..U+DCFF), and lone surrogates, before any model loads."""
    code, err = generate_in_process(*args, *MISSING_MODELS, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and err.startswith(message), err
