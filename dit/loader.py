"""Load a Wan DiT from the files people have: single or sharded safetensors, with or without
ComfyUI's `model.diffusion_model.` prefix, in fp32, fp16, bf16, fp8_e4m3fn or ComfyUI's scaled fp8.

The model is built on the meta device and the file's tensors are assigned into it, cast one at a
time, so loading never holds two copies of the weights. fp8 weights stay fp8 in memory.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import host
from ..checkpoint import CheckpointError, metadata_int, read_keys, read_metadata
from ..ops import assign_checkpoint, default_compute_dtype
from .attention import BACKENDS
from .config import config_from_shapes
from .wan import WanDiT

PREFIXES = ("model.diffusion_model.", "diffusion_model.")
# What Wan's tensors cannot say, for models that differ (Tiny World): the attention head width (Wan's is
# 128), the text length (Wan's is 512) and whether the model was trained with clean pinned frames at
# timestep 0.
HEAD_DIM_KEY, TEXT_LEN_KEY, CLEAN_PINS_KEY = (
    "spacetime.head_dim",
    "spacetime.text_len",
    "spacetime.clean_pins",
)


def _strip(key: str, prefix: str) -> str | None:
    if not prefix:
        return key
    return key[len(prefix) :] if key.startswith(prefix) else None


def load_dit(
    path: str | Path,
    weight_dtype: torch.dtype | None = None,
    compute_dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    attention: str = "auto",
    compile: bool = False,
) -> WanDiT:
    """A Wan DiT with its config (`model.config`), weights on `device`, ready for inference.

    weight_dtype: how weights are stored in memory (None keeps the file's dtypes; fp8 keeps only
    the large projection weights in fp8). compute_dtype: the dtype of the matmuls (None: bf16 on
    GPUs, bf16 or fp32 on the CPU). attention: the attention backend (dit/attention.py's BACKENDS).
    compile: compile the blocks with torch.compile (WanDiT.compile_blocks).
    """
    if attention not in BACKENDS:
        raise ValueError(f"attention backend {attention!r}: choose one of {', '.join(BACKENDS)}.")
    path, device = Path(path), host.usable_device(device)
    stored = read_keys(path)
    prefix = next((p for p in PREFIXES if any(k.startswith(p) for k in stored)), "")
    names = {key: _strip(key, prefix) for key in stored}
    shapes = {name: stored[key][0] for key, name in names.items() if name is not None}
    overrides = _overrides(read_metadata(path), path.name)
    config = config_from_shapes(shapes, source=path.name, overrides=overrides)
    with torch.device("meta"):
        model = WanDiT(config)
    assign_checkpoint(model, path, names, shapes, weight_dtype, device)
    model.compute_dtype = compute_dtype or default_compute_dtype(device)
    model.attention = attention
    model.eval().requires_grad_(False)
    if compile:
        model.compile_blocks()
    return model


def _overrides(metadata: dict[str, str], source: str) -> dict:
    """What the shapes do not tell, for a non-Wan model (Tiny World) that says it in its metadata; the
    numbers are checked against the family's limits with the rest of the config."""
    overrides = {}
    for key, field in ((HEAD_DIM_KEY, "head_dim"), (TEXT_LEN_KEY, "text_len")):
        value = metadata_int(metadata, key, source)
        if value is not None:
            overrides[field] = value
    if CLEAN_PINS_KEY in metadata:
        if metadata[CLEAN_PINS_KEY] not in ("true", "false"):
            raise CheckpointError(
                f"{source} has unusable metadata {CLEAN_PINS_KEY}={metadata[CLEAN_PINS_KEY][:40]!r}: expected "
                "true or false."
            )
        overrides["clean_pins"] = metadata[CLEAN_PINS_KEY] == "true"
    return overrides
