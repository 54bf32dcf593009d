"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "output"
    folder.mkdir()
    return folder


@pytest.fixture(autouse=True, scope="session")
def user_folder(tmp_path_factory):
    """A user folder of the test session's own ($SPACETIME_USER_DIR, inherited by the command lines the
    tests start): Video Combine marks with the installation's watermark key, made there on first use, and
    no test may write into a real user folder. Tests that need a fresh one set their own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPACETIME_USER_DIR", str(tmp_path_factory.mktemp("user")))
        yield


@pytest.fixture(autouse=True, scope="session")
def fp32_on_the_cpu():
    """`auto` computes in fp32 on the CPU in every test, whether or not this machine has native bf16
    (which makes auto pick bf16), so parity tolerances hold on every CI machine. Session-wide, so that
    module fixtures see it too; tests of the choice itself patch `cpu_has_native_bf16` again."""
    from spacetime import ops

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ops, "cpu_has_native_bf16", lambda: False)
        yield
