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
def fp32_on_the_cpu():
    """`auto` computes in fp32 on the CPU in every test, whether or not this machine has native bf16
    (which makes auto pick bf16), so parity tolerances hold on every CI machine. Session-wide, so that
    module fixtures see it too; tests of the choice itself patch `cpu_has_native_bf16` again."""
    from spacetime import ops

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ops, "cpu_has_native_bf16", lambda: False)
        yield
