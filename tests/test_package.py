"""The pack as ComfyUI loads it: imported under its clone's folder name, beside ComfyUI's own
top-level `nodes` module; every node declared the way ComfyUI validates it."""

from __future__ import annotations

import ast
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import tomllib

from media import PACK_ROOT

CLONE_NAME = "ComfyUI-Spacetime-main"  # folder names need not be valid Python identifiers
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}


@pytest.fixture(scope="module")
def pack() -> types.ModuleType:
    """Load the root __init__.py the way ComfyUI's load_custom_node does."""
    saved = {
        name: module for name, module in sys.modules.items() if name == "nodes" or name.startswith(CLONE_NAME)
    }
    sys.modules["nodes"] = types.ModuleType("nodes")  # ComfyUI's own top-level module of that name
    try:
        spec = importlib.util.spec_from_file_location(CLONE_NAME, PACK_ROOT / "__init__.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[CLONE_NAME] = module
        spec.loader.exec_module(module)
        yield module
    finally:
        for name in [n for n in sys.modules if n == "nodes" or n.startswith(CLONE_NAME)]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_loads_under_any_folder_name_from_its_own_files(pack):
    assert pack.NODE_CLASS_MAPPINGS
    submodules = [name for name in sys.modules if name.startswith(CLONE_NAME + ".")]
    assert f"{CLONE_NAME}.nodes" in submodules
    for name in submodules:
        assert Path(sys.modules[name].__file__).resolve().is_relative_to(PACK_ROOT)


def test_root_init_only_registers():
    tree = ast.parse((PACK_ROOT / "__init__.py").read_text())
    statements = [node for node in tree.body if not isinstance(node, ast.Expr)]  # the docstring
    assert [type(node) for node in statements] == [ast.ImportFrom, ast.Assign]
    assert statements[0].module == "nodes" and statements[0].level == 1
    assert {alias.name for alias in statements[0].names} == {
        "NODE_CLASS_MAPPINGS",
        "NODE_DISPLAY_NAME_MAPPINGS",
    }


def _package_sources() -> list[Path]:
    # scripts in these folders import the installed `spacetime`
    skip = {"tests", "benchmarks", "tools", "build", "output"}
    return [p for p in PACK_ROOT.rglob("*.py") if not skip & set(p.relative_to(PACK_ROOT).parts)]


def test_imports_inside_the_pack_are_relative():
    folders = {p.name for p in PACK_ROOT.iterdir() if (p / "__init__.py").exists()} | {
        "host",
        "cli",
        "spacetime",
    }
    offenders = []
    for path in _package_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[0] in folders]
    assert offenders == []


def _relative_imports(path: Path) -> list[str]:
    """The pack's own modules `path` imports, as dotted names from the pack's root."""
    package = path.relative_to(PACK_ROOT).parent.parts
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            found.append(".".join([*base, *(node.module or "").split(".")]).strip("."))
    return found


def test_the_dit_imports_nothing_from_the_vae():
    """The model declares its latent format (from the checkpoint, in its config); it never asks the VAE."""
    offenders = [
        f"{path.name}: {name}"
        for path in (PACK_ROOT / "dit").glob("*.py")
        for name in _relative_imports(path)
        if name.split(".")[0] == "vae"
    ]
    assert offenders == []


def test_library_files_and_signatures_stay_small():
    """No file over 600 lines; no library function with more than 8 parameters (a node's entry point,
    whose parameters are its inputs, aside)."""
    long_files, wide = [], []
    for path in _package_sources():
        source = path.read_text()
        if source.count("\n") > 600:
            long_files.append(path.name)
        tree = ast.parse(source)
        entry_points = {
            statement.value.value
            for cls in ast.walk(tree)
            if isinstance(cls, ast.ClassDef)
            for statement in cls.body
            if isinstance(statement, ast.Assign) and getattr(statement.targets[0], "id", None) == "FUNCTION"
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name not in entry_points:
                arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                count = len([a for a in arguments if a.arg not in ("self", "cls")])
                if count > 8:
                    wide.append(f"{path.relative_to(PACK_ROOT)}: {node.name} ({count})")
    assert long_files == [] and wide == []


def test_every_subpackage_is_installed():
    config = tomllib.loads((PACK_ROOT / "pyproject.toml").read_text())
    declared = set(config["tool"]["setuptools"]["packages"])
    found = {"spacetime"} | {
        "spacetime." + ".".join(p.parent.relative_to(PACK_ROOT).parts)
        for p in PACK_ROOT.rglob("__init__.py")
        if p.parent != PACK_ROOT and not {"tests", "build"} & set(p.relative_to(PACK_ROOT).parts)
    }
    assert declared == found


def test_requirements_leave_torch_to_the_user():
    lines = [line.strip() for line in (PACK_ROOT / "requirements.txt").read_text().splitlines()]
    packages = [line for line in lines if line and not line.startswith("#")]
    assert packages and not [p for p in packages if p.lower().startswith("torch")]


def test_registry_metadata():
    config = tomllib.loads((PACK_ROOT / "pyproject.toml").read_text())
    assert config["project"]["name"] and config["project"]["version"]
    assert config["tool"]["comfy"]["PublisherId"] and config["tool"]["comfy"]["DisplayName"]


def _check_input(node_id: str, name: str, spec) -> None:
    assert isinstance(spec, tuple) and 1 <= len(spec) <= 2, f"{node_id}.{name}: {spec!r}"
    kind, options = spec[0], (spec[1] if len(spec) == 2 else {})
    assert isinstance(options, dict)
    if isinstance(kind, list):  # a combo; model pickers are empty until files are installed
        assert all(isinstance(choice, str) for choice in kind), f"{node_id}.{name}: {kind!r}"
        if kind:
            assert options.get("default", kind[0]) in kind
        return
    assert (isinstance(kind, str) and kind.isupper()) or kind == "*", f"{node_id}.{name}: type {kind!r}"
    if kind in ("INT", "FLOAT") and "default" in options:
        assert options.get("min", -float("inf")) <= options["default"] <= options.get("max", float("inf"))
    if kind in WIDGET_TYPES and kind != "STRING" and node_id:
        assert "default" in options, f"{node_id}.{name} has no default"


def test_every_node_is_declared_as_comfyui_expects(pack):
    mappings, names = pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS
    assert set(names) == set(mappings)
    for node_id, cls in mappings.items():
        assert node_id.startswith("Spacetime"), node_id
        assert isinstance(names[node_id], str) and names[node_id]
        inputs = cls.INPUT_TYPES()
        assert isinstance(inputs, dict) and set(inputs) <= {"required", "optional", "hidden"}
        for section in ("required", "optional"):
            for name, spec in inputs.get(section, {}).items():
                _check_input(node_id, name, spec)
        assert isinstance(cls.RETURN_TYPES, tuple) and all(isinstance(t, str) for t in cls.RETURN_TYPES)
        for attribute in ("RETURN_NAMES", "OUTPUT_TOOLTIPS"):
            if hasattr(cls, attribute):
                assert len(getattr(cls, attribute)) == len(cls.RETURN_TYPES)
        assert isinstance(cls.CATEGORY, str) and cls.CATEGORY.startswith("Spacetime")
        method = getattr(cls, cls.FUNCTION)
        parameters = method.__code__.co_varnames[1 : method.__code__.co_argcount]
        declared = [n for section in ("required", "optional") for n in inputs.get(section, {})]
        assert set(declared) <= set(parameters), f"{node_id}: {cls.FUNCTION} does not take {declared}"
