"""Load a Wan DiT from the files people have: single or sharded safetensors, with or without
ComfyUI's `model.diffusion_model.` prefix, in fp32, fp16, bf16, fp8_e4m3fn or ComfyUI's scaled fp8.

The model is built on the meta device and the file's tensors are assigned into it, cast one at a
time, so loading never holds two copies of the weights. fp8 weights stay fp8 in memory.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import CheckpointError, read_keys, read_metadata
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
    path, device = Path(path), torch.device(device)
    stored = read_keys(path)
    prefix = next((p for p in PREFIXES if any(k.startswith(p) for k in stored)), "")
    names = {key: _strip(key, prefix) for key in stored}
    shapes = {name: stored[key][0] for key, name in names.items() if name is not None}
    metadata = read_metadata(path)
    overrides = {}  # the shapes do not tell these; a non-Wan model (Tiny World) says them in its metadata
    try:
        if HEAD_DIM_KEY in metadata:
            overrides["head_dim"] = int(metadata[HEAD_DIM_KEY])
        if TEXT_LEN_KEY in metadata:
            overrides["text_len"] = int(metadata[TEXT_LEN_KEY])
        if CLEAN_PINS_KEY in metadata:
            overrides["clean_pins"] = metadata[CLEAN_PINS_KEY] == "true"
        config = config_from_shapes(shapes, source=path.name, overrides=overrides)
    except CheckpointError:
        raise
    except ValueError as error:
        if not metadata.keys() & {HEAD_DIM_KEY, TEXT_LEN_KEY, CLEAN_PINS_KEY}:
            raise
        raise CheckpointError(f"{path.name} has unusable spacetime metadata {metadata}: {error}") from None
    with torch.device("meta"):
        model = WanDiT(config)
    assign_checkpoint(model, path, names, shapes, weight_dtype, device)
    model.compute_dtype = compute_dtype or default_compute_dtype(device)
    model.attention = attention
    model.eval().requires_grad_(False)
    if compile:
        model.compile_blocks()
    return model
