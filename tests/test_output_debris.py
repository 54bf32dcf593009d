"""No debris: a stopped run removes its partial file, one that died is cleaned by the next run in the
folder, and concurrent runs with one prefix never take each other's name (issue 35, item 4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from spacetime import host
from spacetime.video import combine_video
from spacetime.video import output as output_module
from spacetime.video.output import STALE_AFTER_S, atomic_output, remove_stale_partials, resolve_target
from spacetime.video.patterns import moving_pattern

# The command line with an encoder slowed to 50 ms a frame, so that a partial file stays a while.
SLOW_CLI = (
    "import sys, time; from spacetime import host; from spacetime.cli import exit_with, main; "
    "check = host.throw_if_interrupted; host.throw_if_interrupted = lambda: (time.sleep(0.05), check()); "
    "exit_with(main(sys.argv[1:]))"
)


def start_slow_run(output: Path, *args: str) -> subprocess.Popen:
    env = os.environ | {"SPACETIME_OUTPUT_DIR": str(output)}
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, "test-pattern", "--frames", "200", "--width", "32", "--height", "32", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_as_in_a_terminal,
    )  # fmt: skip


def _ctrl_c_as_in_a_terminal() -> None:
    """A suite started in the background (`&`, nohup) hands its children Ctrl-C ignored, which the command line
    rightly leaves ignored; the run under test gets it as a terminal gives it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_partial(output: Path, run: subprocess.Popen) -> Path:
    deadline = time.monotonic() + 90  # a loaded 2-core machine takes seconds to import torch
    while time.monotonic() < deadline and run.poll() is None:
        partials = list(output.rglob("*.partial*"))
        if partials:
            return partials[0]
        time.sleep(0.05)
    run.kill()
    raise AssertionError(f"no partial file appeared: {run.communicate()}")


@pytest.mark.parametrize(
    "stop,format",
    [
        (signal.SIGTERM, "video/h264-mp4"),  # K02 (docker stop, systemd)
        (signal.SIGTERM, "image/png-sequence"),  # K07
        (signal.SIGINT, "image/gif"),  # K01: no traceback now
    ],
)
def test_a_stopped_run_removes_its_partial_file_and_its_new_folders(stop, format, tmp_path: Path):
    output = tmp_path / "output"
    run = start_slow_run(output, "--format", format, "--prefix", "new/term")
    wait_for_partial(output, run)
    run.send_signal(stop)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == -stop  # ended by the signal, as the shell expects (130, 143)
    assert stderr.strip() == f"stopped ({'SIGTERM' if stop == signal.SIGTERM else 'Ctrl-C'})"
    assert list(output.iterdir()) == []  # the partial and the folder 'new' made for it


def test_a_stop_swallowed_once_is_raised_again_at_the_next_frame(output_dir: Path, monkeypatch):
    """SIGTERM's exception, raised while numpy imported a Cython module, was swallowed by that module's bare
    `except:`, and the run went on to publish its file; the request stands until the run has unwound."""
    monkeypatch.setattr(host, "_stop_reason", None)
    host.request_stop("SIGTERM")
    with pytest.raises(host.Stopped, match="SIGTERM"):
        combine_video(moving_pattern(3, 16, 16), 16.0, output_dir, "new/clip", "image/png-sequence")
    assert list(output_dir.iterdir()) == []


def test_the_partial_of_a_killed_run_is_removed_by_the_next_run(tmp_path: Path):
    """K03: SIGKILL (or a power loss) cannot be caught; the next write to the folder removes what it left."""
    output = tmp_path / "output"
    run = start_slow_run(output, "--prefix", "kill")
    partial = wait_for_partial(output, run)
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=60)
    assert partial.exists()
    saved = combine_video(moving_pattern(2, 16, 16), 16.0, output, "other", "image/gif")
    assert sorted(p.name for p in output.iterdir()) == [saved.path.name]


def partial_name(host: str, pid: int, extension: str = ".mp4") -> str:
    return f".spacetime.{host}.{pid}.0123abcd.partial{extension}"


def ended_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_partials_are_told_from_live_ones(output_dir: Path):
    here, elsewhere, dead = (
        output_module._HOST,
        "ffffffff" if output_module._HOST != "ffffffff" else "0",
        ended_pid(),
    )
    day_ago = time.time() - STALE_AFTER_S - 60
    files = {
        partial_name(here, dead): True,  # this machine, its process gone
        partial_name(here, os.getpid()): False,  # this process: still writing
        partial_name(elsewhere, dead): False,  # another machine: its process cannot be asked
        partial_name(elsewhere, 7, ".webm"): True,  # ... until it is a day untouched
        ".clip.89abcdef.partial.mp4": True,  # older versions' name, a day untouched
        ".clip.fedcba98.partial.gif": False,  # ... and one that may be in use
        ".notes.txt": False,
        "clip_00001_.mp4": False,
    }
    for name in files:
        (output_dir / name).write_bytes(b"x")
    for name in (partial_name(elsewhere, 7, ".webm"), ".clip.89abcdef.partial.mp4"):
        os.utime(output_dir / name, (day_ago, day_ago))
    frames = output_dir / partial_name(here, dead, "")  # a PNG sequence's partial folder
    frames.mkdir()
    (frames / "frame_00000.png").write_bytes(b"x")
    expected = sorted([frames.name, *(name for name, stale in files.items() if stale)])
    assert sorted(remove_stale_partials(output_dir)) == expected
    assert sorted(p.name for p in output_dir.iterdir()) == sorted(
        name for name, stale in files.items() if not stale
    )


def test_concurrent_png_sequences_never_take_one_name(output_dir: Path, monkeypatch):
    """RC2: publishing checked that the name was free, then renamed; a writer between the two made the
    rename fail (Errno 39) and its frames were lost. A slow rename widens that gap."""
    rename = os.rename
    monkeypatch.setattr(os, "rename", lambda *args: (time.sleep(0.02), rename(*args))[1])
    target = resolve_target("race/seq", output_dir)
    start, errors = threading.Barrier(8), []

    def write(index: int) -> None:
        try:
            with atomic_output(target, "", is_folder=True) as pending:
                (pending.temporary / "frame_00000.png").write_text(str(index))
                start.wait()
        except Exception as error:
            errors.append(error)

    writers = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert errors == []
    folders = sorted((output_dir / "race").iterdir())
    assert [f.name for f in folders] == [f"seq_{n:05}_" for n in range(1, 9)]
    assert sorted(int((f / "frame_00000.png").read_text()) for f in folders) == list(range(8))


def test_a_folder_published_meanwhile_under_the_name_is_never_replaced(output_dir: Path, monkeypatch):
    """A writer that took the name between this one's counter and its publish (even with an empty folder)
    keeps it; this one moves on."""
    target = resolve_target("seq", output_dir)
    with atomic_output(target, "", is_folder=True) as pending:
        (pending.temporary / "frame_00000.png").write_text("mine")
        (output_dir / "seq_00001_").mkdir()
    assert pending.final.name == "seq_00002_"
    assert list((output_dir / "seq_00001_").iterdir()) == []
