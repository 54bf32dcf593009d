"""Layers whose stored weights may be smaller than their compute dtype (bf16, fp16, fp8, ComfyUI's
scaled fp8): the weight is cast per call, so fp8 stays fp8 in memory and is upcast layer by layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError

SCALED_FP8_MARKER = "scaled_fp8"  # ComfyUI's scaled-fp8 files carry this (empty) tensor
SCALE_SUFFIX = ".scale_weight"  # per-layer dequantisation scale in scaled-fp8 files
INPUT_SCALE_SUFFIX = ".scale_input"  # for fp8 matmuls; not needed when upcasting

WEIGHT_DTYPES = {
    "default": None,  # as stored in the file
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
}
COMPUTE_DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def default_compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that have it, fp16 on older ones, fp32 on the CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def cast_weight(module: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """The module's weight in `dtype`, times its per-layer scale when it has one (scaled fp8)."""
    weight = module.weight.to(dtype)
    scale = getattr(module, "scale_weight", None)
    return weight if scale is None else weight * scale.to(dtype)


def cast_bias(module: nn.Module, dtype: torch.dtype) -> torch.Tensor | None:
    return None if module.bias is None else module.bias.to(dtype)


class CastLinear(nn.Linear):
    """nn.Linear computing in the input's dtype whatever dtype its weight is stored in (a
    scaled-fp8 layer also has a `scale_weight` buffer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, cast_weight(self, x.dtype), cast_bias(self, x.dtype))


class FloatLayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (weights upcast), returning float32, as Wan's WanLayerNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last axis, in float32, scaled by a learned weight."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight.to(x.dtype)


def cast_for_storage(
    key: str, tensor: torch.Tensor, weight_dtype: torch.dtype | None, castable: set[str]
) -> torch.Tensor:
    """The storage dtype for one tensor as it is read: fp8 only for the weights of `castable` layers
    (the big projections); small tensors keep their precision; fp8 tensors wait for their scale."""
    if (
        weight_dtype is None
        or not tensor.is_floating_point()
        or key.endswith((SCALE_SUFFIX, INPUT_SCALE_SUFFIX))
    ):
        return tensor
    module_name, _, parameter = key.rpartition(".")
    if weight_dtype.itemsize == 1:  # fp8 storage: only the big projection weights
        if parameter == "weight" and module_name in castable and tensor.dtype.itemsize > 1:
            return tensor.to(weight_dtype)
        return tensor
    if tensor.dtype.itemsize == 1:
        return tensor  # fp8: dequantised with its scale once the scales are read (attach_scales)
    return tensor.to(weight_dtype)


def attach_scales(model: nn.Module, scales: dict[str, torch.Tensor], weight_dtype, name: str) -> None:
    """Give each scaled-fp8 layer its scale as a buffer (it moves with the model); for a wider
    storage dtype, dequantise fp8 weights now instead."""
    modules = dict(model.named_modules())
    for module_name, scale in scales.items():
        if not hasattr(modules.get(module_name), "weight"):
            raise CheckpointError(
                f"{name}: scale_weight for {module_name!r}, which is not a layer of this model."
            )
        scale = scale.float().reshape(()) if scale.numel() == 1 else scale.float()
        modules[module_name].register_buffer("scale_weight", scale, persistent=False)
    if weight_dtype is None or weight_dtype.itemsize == 1:
        return
    for module in modules.values():
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and weight.dtype.itemsize == 1:
            module.weight = nn.Parameter(
                cast_weight(module, torch.float32).to(weight_dtype), requires_grad=False
            )
            if getattr(module, "scale_weight", None) is not None:
                del module.scale_weight
