"""Layers whose stored weights may be smaller than their compute dtype (bf16, fp16, fp8, ComfyUI's
scaled fp8): the weight is cast per call, so fp8 stays fp8 in memory and is upcast layer by layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
