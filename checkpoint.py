"""Reading model files safely: safetensors only (single files or shards with an index), tensors
cast one at a time as they load, and errors that say what the file looks like and what to do.

Pickle files (.ckpt, .pt, .pth, .bin) are never opened at run time: unpickling can run code.
`python -m spacetime convert` turns one into safetensors once, without executing it.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
_SHARD = re.compile(r"^(?P<stem>.+)-\d{5}-of-\d{5}\.safetensors$")

# Recognisable key patterns, to tell users what a wrong file actually is.
_KNOWN_MODELS = (
    ("head.modulation", "a Wan diffusion transformer"),
    ("condition_embedder.time_embedder", "a Wan transformer in diffusers format"),
    ("decoder.middle.0.residual.0.gamma", "a Wan VAE"),
    ("decoder.up_blocks.", "a VAE in diffusers format"),
    ("encoder.block.0.layer.0.SelfAttention", "a T5/UMT5 text encoder"),
    ("blocks.0.attn.q.weight", "a Wan T5 text encoder (original format)"),
    ("spiece_model", "a UMT5 text encoder"),
    ("input_blocks.0.0.weight", "a Stable Diffusion UNet"),
    ("down_blocks.0.resnets", "a UNet in diffusers format"),
    ("double_blocks.0.img_attn", "a Flux transformer"),
    ("joint_blocks.0", "an SD3 transformer"),
    ("first_stage_model.", "a full Stable Diffusion checkpoint"),
    ("vision_model.encoder", "a CLIP vision encoder"),
)


class CheckpointError(ValueError):
    """A model file that cannot be used, with what was found and how to fix it."""


def describe(keys) -> str:
    """What a set of tensor names looks like, in words."""
    keys = list(keys)
    for marker, description in _KNOWN_MODELS:
        if any(marker in key for key in keys):
            return description
    shown = ", ".join(sorted(keys)[:4])
    return f"an unrecognised model (first tensors: {shown})" if keys else "an empty file"


def refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path.name} is a pickle checkpoint ({path.suffix}). Spacetime loads only .safetensors files: "
            "unpickling a file can run arbitrary code. Convert it once, safely (tensors only, no code is run), with:\n"
            f"  python -m spacetime convert {path} {path.with_suffix('.safetensors')}"
        )


def shard_files(path: Path) -> list[Path]:
    """The files that make up a checkpoint: itself, or every shard named by its index json."""
    index = None
    if path.name.endswith(".index.json"):
        index = path
    elif match := _SHARD.match(path.name):
        candidate = path.with_name(f"{match['stem']}.safetensors.index.json")
        index = candidate if candidate.is_file() else None
    if index is None:
        return [path]
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"{index.name} is not a safetensors index (no readable weight_map): {error}"
        ) from None
    files = [index.parent / name for name in dict.fromkeys(weight_map.values())]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"{index.name} names shards that are not beside it: {', '.join(missing[:3])}")
    return files


def read_keys(path: Path | str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Tensor names with their shapes and dtypes, without reading any data."""
    path = Path(path)
    refuse_pickle(path)
    found = {}
    for file in shard_files(path):
        with _open(file) as handle:
            for key in handle.keys():
                sliced = handle.get_slice(key)
                found[key] = (tuple(sliced.get_shape()), sliced.get_dtype())
    return found


def read_metadata(path: Path | str) -> dict[str, str]:
    """The safetensors header's string metadata (of the first shard), {} when there is none."""
    path = Path(path)
    refuse_pickle(path)
    with _open(shard_files(path)[0]) as handle:
        return dict(handle.metadata() or {})


def read_tensors(
    path: Path | str,
    keys: list[str] | None = None,
    convert: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Load tensors (all, or `keys`), passing each through `convert` as it arrives so that a cast
    never holds two full copies of the weights."""
    path = Path(path)
    refuse_pickle(path)
    wanted = None if keys is None else set(keys)
    tensors = {}
    for file in shard_files(path):
        with _open(file, device) as handle:
            for key in handle.keys():
                if wanted is not None and key not in wanted:
                    continue
                try:
                    tensor = handle.get_tensor(key)
                except (SafetensorError, RuntimeError, OSError) as error:
                    raise _corrupt(file, error) from None
                tensors[key] = convert(key, tensor) if convert else tensor
    return tensors


class _open:
    """safe_open with our errors."""

    def __init__(self, file: Path, device: torch.device | str = "cpu"):
        self.file, self.device = file, str(device)

    def __enter__(self):
        if not self.file.is_file():
            raise FileNotFoundError(f"Model file not found: {self.file}")
        if self.file.suffix.lower() != ".safetensors":
            raise CheckpointError(
                f"{self.file.name} is not a .safetensors file; Spacetime loads only safetensors."
            )
        try:
            self.context = safe_open(str(self.file), framework="pt", device=self.device)
            return self.context.__enter__()
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise _corrupt(self.file, error) from None

    def __exit__(self, *exc):
        return self.context.__exit__(*exc)


def _corrupt(file: Path, error: Exception) -> CheckpointError:
    size = file.stat().st_size if file.exists() else 0
    return CheckpointError(
        f"{file.name} ({size:,} bytes) is not a readable safetensors file: {error}. "
        "It is probably truncated or corrupt (an interrupted download?): download it again."
    )


def convert_pickle_to_safetensors(source: Path, destination: Path) -> int:
    """Convert a pickle checkpoint once, loading tensors only (`weights_only=True` runs no code)."""
    from safetensors.torch import save_file

    if destination.exists():
        raise FileExistsError(f"{destination} exists; choose another output name or remove it first.")
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist.")
    try:
        try:
            loaded = torch.load(source, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            loaded = torch.load(source, map_location="cpu", weights_only=True)  # a pre-zip (legacy) file
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as error:
        raise CheckpointError(
            f"{source.name} was refused: it holds objects other than tensors (or is damaged), and loading those "
            f"could run code. Nothing was written. Details: {str(error).splitlines()[0]}"
        ) from None
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{source.name} holds a {type(loaded).__name__}, not a dictionary of tensors.")
    for key in ("state_dict", "model", "module"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict) and len(loaded) <= 3:
            loaded = loaded[key]
    tensors, seen = {}, set()
    for key, value in loaded.items():
        if isinstance(value, torch.Tensor):
            value = value.contiguous()
            shared = value.untyped_storage().data_ptr() in seen  # tied weights: safetensors wants copies
            seen.add(value.untyped_storage().data_ptr())
            tensors[key] = value.clone() if shared else value
    if not tensors:
        raise CheckpointError(f"{source.name} holds no tensors to convert.")
    partial = destination.with_name(f".{destination.name}.partial")
    save_file(tensors, str(partial), metadata={"converted_from": source.name})
    partial.rename(destination)
    return len(tensors)
