"""Output paths: ComfyUI's counter convention, no escape from the output folder, atomic writes."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import torch

from spacetime.video import combine_video
from spacetime.video.output import atomic_output, next_counter, resolve_target
from spacetime.video.patterns import moving_pattern


@pytest.mark.parametrize(
    "prefix,subfolder,stem",
    [
        ("clip", "", "clip"),
        ("spacetime/clip", "spacetime", "clip"),
        ("a/b/c/clip", "a/b/c", "clip"),
        ("a\\b\\clip", "a/b", "clip"),
        ("./a//clip", "a", "clip"),
    ],
)
def test_prefix_becomes_subfolder_and_stem(prefix: str, subfolder: str, stem: str, output_dir: Path):
    target = resolve_target(prefix, output_dir)
    assert (target.subfolder, target.stem) == (subfolder, stem)
    assert target.folder == (output_dir / subfolder).resolve()
    assert target.folder.is_dir()


def test_size_and_date_variables_expand(output_dir: Path):
    target = resolve_target("%year%/clip_%width%x%height%", output_dir, width=832, height=480)
    assert target.stem == "clip_832x480"
    assert target.subfolder.isdigit() and len(target.subfolder) == 4


@pytest.mark.parametrize(
    "prefix,message",
    [
        ("../escape", "'..' parts"),
        ("a/../../escape", "'..' parts"),
        ("..\\escape", "'..' parts"),
        ("/etc/escape", "absolute"),
        ("\\\\server\\share\\escape", "absolute"),
        ("C:/Windows/escape", "absolute"),
        ("", "empty"),
        ("./", "names no file"),
        ("a\x00b", "U\\+0000"),
    ],
)
def test_traversal_is_refused(prefix: str, message: str, output_dir: Path):
    with pytest.raises(ValueError, match=message):
        resolve_target(prefix, output_dir)
    assert list(output_dir.parent.glob("escape*")) == []


def test_a_symlinked_subfolder_leading_outside_is_refused(tmp_path: Path, output_dir: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (output_dir / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="link that leads outside"):
        combine_video(moving_pattern(2, 16, 16), 16.0, output_dir, "link/clip", "image/gif")
    assert list(outside.iterdir()) == []


def test_a_symlinked_subfolder_inside_is_allowed(output_dir: Path):
    (output_dir / "real").mkdir()
    (output_dir / "alias").symlink_to(output_dir / "real")
    saved = combine_video(moving_pattern(2, 16, 16), 16.0, output_dir, "alias/clip", "image/gif")
    assert saved.path.parent == (output_dir / "real").resolve()


def test_a_symlink_at_the_final_name_is_never_written_through(tmp_path: Path, output_dir: Path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (output_dir / "clip_00001_.gif").symlink_to(victim)
    saved = combine_video(moving_pattern(2, 16, 16), 16.0, output_dir, "clip", "image/gif")
    assert saved.path.name == "clip_00002_.gif"
    assert victim.read_text() == "keep me"


def test_counter_follows_comfyui(output_dir: Path):
    for name in ("clip_00001_.png", "clip_00007_.mp4", "clipper_00099_.mp4", "other_00050_.mp4"):
        (output_dir / name).touch()
    target = resolve_target("clip", output_dir)
    assert next_counter(target) == 8
    first = combine_video(moving_pattern(2, 16, 16), 16.0, output_dir, "clip", "image/gif")
    second = combine_video(moving_pattern(2, 16, 16), 16.0, output_dir, "clip", "image/png-sequence")
    assert (first.path.name, second.path.name) == ("clip_00008_.gif", "clip_00009_")
    assert second.path.is_dir()


def test_an_existing_file_is_never_replaced(output_dir: Path):
    target = resolve_target("race", output_dir)
    with atomic_output(target, "bin") as pending:
        pending.temporary.write_bytes(b"new")
        (output_dir / "race_00001_.bin").write_bytes(b"old")  # another writer took this counter meanwhile
    assert (output_dir / "race_00001_.bin").read_bytes() == b"old"
    assert pending.final == output_dir.resolve() / "race_00002_.bin"
    assert pending.final.read_bytes() == b"new"


class Cancelled(Exception):
    pass


@pytest.mark.parametrize("name", ["video/h264-mp4", "image/gif", "image/png-sequence"])
def test_an_interrupted_write_leaves_nothing(name: str, output_dir: Path, monkeypatch):
    """A cancel (or a crash) mid-encode removes the partial file; no truncated file gets a final name."""
    calls = {"n": 0}

    def cancel_on_third_frame():
        calls["n"] += 1
        if calls["n"] == 3:
            raise Cancelled

    monkeypatch.setattr("spacetime.host.throw_if_interrupted", cancel_on_third_frame)
    (output_dir / "kept").mkdir()
    with pytest.raises(Cancelled):
        combine_video(moving_pattern(6, 32, 32), 16.0, output_dir, "kept/new/clip", name)
    assert [p.name for p in output_dir.rglob("*")] == ["kept"]  # the folder made for it is gone too


def test_files_are_written_under_a_hidden_temporary_name_first(output_dir: Path, monkeypatch):
    seen = []
    original = os.link

    def spy(source, destination, *args, **kwargs):
        seen.append((Path(source).name, Path(destination).name))
        return original(source, destination, *args, **kwargs)

    monkeypatch.setattr(os, "link", spy)
    combine_video(torch.zeros(2, 16, 16, 3), 16.0, output_dir, "clip", "video/h264-mp4")
    ((temporary, final),) = seen
    assert re.fullmatch(rf"\.spacetime\.[0-9a-f]{{8}}\.{os.getpid()}\.[0-9a-f]{{8}}\.partial\.mp4", temporary)
    assert final == "clip_00001_.mp4"
    assert [p.name for p in output_dir.iterdir()] == ["clip_00001_.mp4"]


def test_a_long_name_that_fits_is_written(output_dir: Path):
    """O06: the final name 'x…x_00001_.mp4' is 251 bytes; the hidden partial name no longer holds the stem."""
    saved = combine_video(moving_pattern(2, 16, 16), 16.0, output_dir, "x" * 240, "video/h264-mp4")
    assert saved.path.name == "x" * 240 + "_00001_.mp4"


@pytest.mark.parametrize(
    "prefix,extension,message",
    [
        ("x" * 300, "mp4", "the file name would be 311 bytes"),  # O05
        ("sub1/sub2/" + "y" * 300, "mp4", "at most 244 bytes"),  # Q04: no empty sub1/sub2 left
        ("é" * 125, "webm", "the file name would be 262 bytes"),  # bytes, not characters
        ("x" * 249, "", "the file name would be 256 bytes"),  # a PNG-sequence folder: no extension
        ("d" * 256 + "/clip", "mp4", "the folder name 'dddd"),
    ],
)
def test_a_name_longer_than_the_file_system_allows_is_refused_first(
    prefix: str, extension: str, message: str, output_dir: Path
):
    with pytest.raises(ValueError, match=message) as refused:
        resolve_target(prefix, output_dir, extension=extension)
    assert "limited to 255 bytes here" in str(refused.value)
    assert list(output_dir.iterdir()) == []


def test_a_path_deeper_than_the_file_system_allows_is_refused_before_any_folder(output_dir: Path):
    """O07: 2100 nested folders took 84 s to make, then failed, and stayed."""
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"makes a path of \d+ bytes .* limited to 4095 bytes here"):
        combine_video(moving_pattern(2, 16, 16), 16.0, output_dir, "d/" * 2100 + "f", "image/gif")
    assert time.monotonic() - started < 1 and list(output_dir.iterdir()) == []


@pytest.mark.parametrize(
    "prefix,character",
    [
        ("\u202egnp.exe", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),  # O23: shows as '…exe.png'
        ("clip\u2066/x", "U+2066 (LEFT-TO-RIGHT ISOLATE)"),
        ("zero\u200bwidth", "U+200B (ZERO WIDTH SPACE)"),
        ("line\nbreak", "U+000A"),
        ("para\u2029graph", "U+2029 (PARAGRAPH SEPARATOR)"),
        ("lone\ud800", "U+D800"),
    ],
)
def test_control_and_invisible_characters_are_refused(prefix: str, character: str, output_dir: Path):
    with pytest.raises(
        ValueError, match=re.escape(f"contains {character}, a control or invisible formatting")
    ):
        resolve_target(prefix, output_dir)
    assert list(output_dir.iterdir()) == []


def test_an_output_folder_that_is_a_file_says_so(tmp_path: Path):
    """Q13: was a bare '[Errno 17] File exists'."""
    (tmp_path / "file").write_text("x")
    for root in (tmp_path / "file", tmp_path / "file" / "below"):
        with pytest.raises(
            ValueError, match=r"the output folder .* cannot be made: it, or a folder above it, is a file"
        ):
            resolve_target("clip", root)
