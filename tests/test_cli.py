"""The command line, run as users run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
