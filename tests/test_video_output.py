"""Output paths: ComfyUI's counter convention, no escape from the output folder, atomic writes."""

from __future__ import annotations

import os
import re
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
    with pytest.raises(Cancelled):
        combine_video(moving_pattern(6, 32, 32), 16.0, output_dir, "sub/clip", name)
    assert [p.name for p in output_dir.rglob("*") if not p.is_dir() or p.name != "sub"] == []


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
