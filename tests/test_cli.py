"""The command line, run as users run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from media import decode


def run(*args: str, output: Path) -> subprocess.CompletedProcess:
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
