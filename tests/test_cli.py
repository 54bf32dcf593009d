"""The command line, run as users run it."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from spacetime import cli, host
from spacetime.cli import main
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
    assert "exit status: 0 done; 1 failed" in " ".join(result.stdout.split())


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


PATTERN = ["test-pattern", "--frames", "3", "--width", "32", "--height", "32"]


@pytest.fixture
def output(tmp_path: Path, monkeypatch) -> Path:
    """The output folder of in-process runs (never made by an -o run)."""
    monkeypatch.setenv("SPACETIME_OUTPUT_DIR", str(tmp_path / "output"))
    return tmp_path / "output"


@pytest.mark.parametrize(
    "name,format,codec",
    [("clip.webm", None, "vp9"), ("CLIP.MP4", None, "h264"), ("clip.mp4", "video/h265-mp4", "hevc")],
)
def test_output_option_writes_exactly_that_file(name, format, codec, tmp_path: Path, output: Path, capsys):
    """-o FILE, anywhere: its extension picks the format (.mp4 is H.264) or must be --format's."""
    path = tmp_path / "elsewhere" / name
    path.parent.mkdir()
    size = ["--width", "64", "--height", "64"] if codec == "hevc" else []
    assert main([*PATTERN, *size, "-o", str(path), *(["--format", format] if format else [])]) == 0
    assert capsys.readouterr().out == f"{path}\n"
    assert decode(path).codec == codec
    assert list(path.parent.iterdir()) == [path] and not output.exists()


def test_output_option_writes_a_png_sequence_folder(tmp_path: Path, output: Path):
    assert main([*PATTERN, "-o", str(tmp_path / "frames"), "--format", "image/png-sequence"]) == 0
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [f"frame_0000{i}.png" for i in range(3)]


@pytest.mark.parametrize(
    "name,extra,message",
    [
        ("taken.mp4", [], "taken.mp4 exists; it is never replaced: choose another name, or remove it first."),
        ("clip.mp4", ["--format", "image/gif"], "clip.mp4 does not match the format image/gif: its name must end in .gif."),
        ("frames.png", ["--format", "image/png-sequence"], "must have no extension (it is a folder)"),
        ("clip", [], "clip: the format cannot be told from the extension (none); use one of .mp4, .webm, .mkv"),
        ("clip.avi", [], "the format cannot be told from the extension .avi"),
        ("missing/clip.mp4", [], "the folder"),
    ],
)  # fmt: skip
def test_output_option_refusals_are_bad_usage(name, extra, message, tmp_path: Path, output: Path, capsys):
    (tmp_path / "taken.mp4").write_bytes(b"keep")
    assert main([*PATTERN, "-o", str(tmp_path / name), *extra]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.mp4"]
    assert (tmp_path / "taken.mp4").read_bytes() == b"keep"


def test_output_option_and_prefix_exclude_each_other(tmp_path: Path, capsys):
    assert main([*PATTERN, "-o", str(tmp_path / "a.mp4"), "--prefix", "x"]) == 2
    assert "not allowed with argument -o/--output" in capsys.readouterr().err


@pytest.mark.parametrize(
    "writable,message",
    [
        (True, "clip.mp4 exists; it is never replaced"),
        (False, "cannot be written to (read-only, or not yours)"),
    ],
)
def test_generate_refuses_an_output_before_loading_a_model(
    writable: bool, message: str, tmp_path: Path, output: Path, monkeypatch, capsys
):
    """W03 for -o: the output is checked before the work, not after."""

    def load(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("spacetime.pipeline.load_tiny_world", load)
    if writable:
        (tmp_path / "clip.mp4").write_bytes(b"keep")
    else:
        access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: access(path, mode) and Path(path) != tmp_path)
    assert main(["generate", "a red circle", "-o", str(tmp_path / "clip.mp4")]) == 2
    assert message in capsys.readouterr().err


def test_generate_writes_the_output_file(tmp_path: Path, output: Path):
    path = tmp_path / "clip.gif"
    args = ["generate", "a red circle", "--frames", "1", "--width", "32", "--height", "32", "--steps", "1"]
    assert main([*args, "-o", str(path)]) == 0
    assert decode(path).frames.shape == (1, 32, 32, 3) and not output.exists()


ELSEWHERE = "write elsewhere (-o FILE, or $SPACETIME_OUTPUT_DIR)"


@pytest.mark.parametrize(
    "format,number,advice",
    [
        ("video/h264-mp4", errno.ENOSPC, f"the disk is full: free some space, or {ELSEWHERE}"),  # F01
        ("image/png-sequence", errno.ENOSPC, f"the disk is full: free some space, or {ELSEWHERE}"),  # F02
        ("image/gif", errno.EROFS, f"the folder is read-only: {ELSEWHERE}"),  # W02
        ("image/webp", errno.EACCES, "write to a folder you may write to (-o FILE, or $SPACETIME_OUTPUT_DIR), "
                                     "or ask for access"),
    ],
)  # fmt: skip
def test_a_full_or_read_only_disk_is_one_line_and_leaves_nothing(
    format, number, advice, output: Path, monkeypatch, capsys
):
    """F01-F04, W01-W02: was a traceback (the cleanup was right)."""
    from spacetime.video import combine

    def fail(path: Path, frames, job):
        target = path / "frame_00000.png" if path.is_dir() else path
        target.write_bytes(b"half a frame")
        raise OSError(number, os.strerror(number), str(target))

    monkeypatch.setitem(combine.WRITERS, combine.get_format(format).writer, fail)
    assert main([*PATTERN, "--format", format, "--prefix", "new/clip"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {os.strerror(number)}: {output.resolve() / 'new'}/.spacetime.")
    assert error.endswith(f"; {advice}.\n") and "Traceback" not in error
    assert list(output.iterdir()) == []


def test_a_read_only_output_folder_is_one_line(output: Path, monkeypatch, capsys):
    """W01: the subfolder cannot be made."""

    make = Path.mkdir

    def read_only(path, *args, **kwargs):  # as Linux answers: an existing folder first
        if path.exists():
            return make(path, *args, **kwargs)
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    output.mkdir()
    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main([*PATTERN, "--prefix", "sub/clip"]) == 1
    assert capsys.readouterr().err == (
        f"error: Read-only file system: {output.resolve() / 'sub'}; the folder is read-only: write elsewhere "
        "(-o FILE, or $SPACETIME_OUTPUT_DIR).\n"
    )


def test_signal_handlers_are_restored(output: Path):
    from spacetime import host

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert main(["formats"]) == 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert host._stop_reason is None


@pytest.mark.parametrize(
    "args", [["formats"], ["test-pattern", "--frames", "2", "--width", "16", "--height", "16"]]
)
def test_a_reader_that_went_away_ends_the_run_quietly(args: list[str], tmp_path: Path):
    """`formats | head -0`: the end of a SIGPIPE (141 in the shell), no traceback; what was written stays."""
    env = os.environ | {"SPACETIME_OUTPUT_DIR": str(tmp_path)}
    run = subprocess.Popen(
        [sys.executable, "-m", "spacetime", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    run.stdout.close()  # before the interpreter has started: its first write finds no reader
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == -signal.SIGPIPE and stderr == b""
    assert [p.name for p in tmp_path.rglob("*.*")] == (["test_pattern_00001_.mp4"] if len(args) > 1 else [])
