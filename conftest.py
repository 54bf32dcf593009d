"""pytest only: collect the repository root as a plain folder, never import it as a package.

The root is the custom-node package that ComfyUI imports under its clone's folder name; pytest
would import its __init__.py on its own and fail for folder names such as 'ComfyUI-Spacetime'.
Tests import the installed `spacetime` instead (and tests/test_package.py loads the root the way
ComfyUI does)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if path.resolve() == ROOT:
        return pytest.Dir.from_parent(parent, path=path)
    return None
