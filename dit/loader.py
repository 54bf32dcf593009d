"""Load a Wan DiT from the files people have: single or sharded safetensors, with or without
ComfyUI's `model.diffusion_model.` prefix, in fp32, fp16, bf16, fp8_e4m3fn or ComfyUI's scaled fp8.

The model is built on the meta device and the file's tensors are assigned into it, cast one at a
time, so loading never holds two copies of the weights. fp8 weights stay fp8 in memory.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import CheckpointError, read_keys, read_tensors
from ..ops import (
    INPUT_SCALE_SUFFIX,
    SCALE_SUFFIX,
    SCALED_FP8_MARKER,
    CastLinear,
    attach_scales,
    cast_for_storage,
    default_compute_dtype,
)
from .config import config_from_shapes
from .wan import PatchEmbedding, WanDiT

PREFIXES = ("model.diffusion_model.", "diffusion_model.")


def _strip(key: str, prefix: str) -> str | None:
    if not prefix:
        return key
    return key[len(prefix) :] if key.startswith(prefix) else None


def load_dit(
    path: str | Path,
    weight_dtype: torch.dtype | None = None,
    compute_dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> WanDiT:
    """A Wan DiT with its config (`model.config`), weights on `device`, ready for inference.

    weight_dtype: how weights are stored in memory (None keeps the file's dtypes; fp8 keeps only
    the large projection weights in fp8). compute_dtype: the dtype of the matmuls (None: bf16 on
    GPUs, fp32 on the CPU).
    """
    path, device = Path(path), torch.device(device)
    stored = read_keys(path)
    prefix = next((p for p in PREFIXES if any(k.startswith(p) for k in stored)), "")
    shapes = {key: shape for k, (shape, _) in stored.items() if (key := _strip(k, prefix)) is not None}
    config = config_from_shapes(shapes, source=path.name)
    scaled = {k[: -len(SCALE_SUFFIX)] for k in shapes if k.endswith(SCALE_SUFFIX)}
    if SCALED_FP8_MARKER in shapes and not scaled:
        raise CheckpointError(
            f"{path.name} is marked scaled_fp8 but holds no per-layer scale_weight tensors."
        )

    with torch.device("meta"):
        model = WanDiT(config)
    castable = {
        name for name, module in model.named_modules() if isinstance(module, (CastLinear, PatchEmbedding))
    }  # layers that compute with a cast weight: these may stay in fp8
    _check_keys(model, shapes, path.name)

    def convert(key: str, tensor: torch.Tensor) -> torch.Tensor:
        return cast_for_storage(key[len(prefix) :], tensor, weight_dtype, castable)

    wanted = [k for k in stored if _strip(k, prefix) is not None]
    tensors = read_tensors(path, keys=wanted, convert=convert, device=device)
    tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    scales = {name: tensors.pop(name + SCALE_SUFFIX) for name in scaled}
    for key in [k for k in tensors if k.endswith(INPUT_SCALE_SUFFIX) or k == SCALED_FP8_MARKER]:
        del tensors[key]
    model.load_state_dict(tensors, strict=True, assign=True)
    attach_scales(model, scales, weight_dtype, path.name)

    model.compute_dtype = compute_dtype or default_compute_dtype(device)
    return model.eval().requires_grad_(False)


def _check_keys(model: WanDiT, shapes: dict[str, tuple[int, ...]], name: str) -> None:
    """Missing or unexpected tensors, named, before any data is read."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    present = {
        k: v for k, v in shapes.items()
        if not (k.endswith((SCALE_SUFFIX, INPUT_SCALE_SUFFIX)) or k == SCALED_FP8_MARKER)
    }  # fmt: skip
    missing = sorted(set(expected) - set(present))
    unexpected = sorted(set(present) - set(expected))
    wrong = sorted(k for k in set(expected) & set(present) if expected[k] != present[k])
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (first: {', '.join(missing[:4])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:4])})")
    if wrong:
        first = wrong[0]
        problems.append(
            f"{len(wrong)} with other shapes (first: {first} is {present[first]}, expected {expected[first]})"
        )
    if problems:
        raise CheckpointError(
            f"{name} does not match the {model.config.name} layout its shapes imply: tensors "
            + "; ".join(problems)
            + ". The file may be damaged or a different model variant."
        )
